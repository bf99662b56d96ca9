"""The ledger: a durable, append-only record of what happened, in any SQLAlchemy database.

Listeners in many task processes append small events here (safe for many writers); one writer
later turns a run's events into a PROV graph. Appending the same event twice is a no-op, so a
replayed event cannot duplicate anything. Every event is first written to a spool folder (JSON
lines), then to the database, then removed from the spool: an event whose writer was killed, or
whose database was down, waits there and is ingested on the next publication. Provenance is never
dropped.
"""

from __future__ import annotations

__all__ = ["Ledger", "RunRecord", "TaskEvent", "record_event"]

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from twinprov.provenance.errors import LedgerError
from twinprov.provenance.files import lock_fd
from twinprov.provenance.record import RunRecord, TaskEvent

log = logging.getLogger(__name__)

_metadata = MetaData()

task_events = Table(
    "twinprov_task_events",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(250), nullable=False),
    Column("run_id", String(250), nullable=False),
    Column("task_id", String(250), nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("try_number", Integer, nullable=False),
    Column("state", String(32), nullable=False),
    Column("recorded_at", String(40), nullable=False),
    Column("payload", Text, nullable=False),
    UniqueConstraint("dag_id", "run_id", "task_id", "map_index", "try_number", "state"),
)

runs = Table(
    "twinprov_runs",
    _metadata,
    Column("dag_id", String(250), primary_key=True),
    Column("run_id", String(250), primary_key=True),
    Column("first_seen", String(40), nullable=False),
    Column("info", Text, nullable=False),
    Column("state", String(32)),
    Column("ended", String(40)),
    Column("published_at", String(40)),
    Column("published_digest", String(64)),
    Column("stored_digest", String(64)),
    Column("publication", Text),
)


_T = TypeVar("_T")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _row_to_run(row: Any) -> RunRecord:
    return RunRecord(
        dag_id=row.dag_id,
        run_id=row.run_id,
        first_seen=row.first_seen,
        info=json.loads(row.info),
        state=row.state,
        ended=row.ended,
        published_at=row.published_at,
        published_digest=row.published_digest,
        stored_digest=row.stored_digest,
        publication=json.loads(row.publication) if row.publication else {},
    )


_engines: dict[str, tuple[int, Engine]] = {}
_engines_lock = threading.Lock()


def _engine(url: str) -> Engine:
    """One engine per URL, shared with the processes forked from this one. Tables are created
    on first need (see :meth:`Ledger._schema_retry`), not checked on every open: a task process
    writes two events.

    A forked process (every task process is a fork of an executor worker, itself a fork of the
    scheduler) keeps the engine it inherited but drops the inherited connections (SQLAlchemy's
    ``dispose(close=False)``, for ``os.fork``): its dialect already knows the server (version,
    schema, isolation level: queries a new engine sends on its first connection) and its SQL
    constructs are warm, so only the connection itself is new (see :func:`warm_up`)."""
    with _engines_lock:
        pid = os.getpid()
        found = _engines.get(url)
        if found is not None:
            owner, eng = found
            if owner != pid:
                eng.dispose(close=False)  # the parent's connections are the parent's
                _engines[url] = (pid, eng)
            return eng
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            # one pooled connection, kept: closing a WAL database's last connection
            # checkpoints and syncs it (~25 ms), which every event would otherwise pay
            eng = create_engine(url, pool_size=1, max_overflow=4, future=True)

            @event.listens_for(eng, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout=30000")
                _sqlite_wal(cur)
                # WAL + NORMAL: a commit survives a killed process (not a power cut)
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

        else:
            # a server: keep one connection for the process's next event, and test it
            # before use (the database may have restarted in between)
            kwargs: dict[str, Any] = {}
            if url.startswith(("postgresql+psycopg2:", "postgresql:", "postgres:")):
                # no hstore columns here: spares every new connection a pg_type lookup
                kwargs["use_native_hstore"] = False
            eng = create_engine(
                url, pool_size=1, max_overflow=4, pool_pre_ping=True, future=True, **kwargs
            )
        _engines[url] = (pid, eng)
        return eng


def _sqlite_wal(cur: Any, patience: float = 30.0) -> None:
    """Put a SQLite ledger in WAL mode (once per file: the mode is stored in it).

    Reading or switching the journal mode as a connection opens can meet SQLITE_BUSY *without*
    SQLite calling its busy handler: another process may be recovering or checkpointing the WAL
    at that instant (seen once in 25 runs of two parallel writers). So wait here, as
    ``busy_timeout`` does for every other statement, instead of failing the event."""
    import sqlite3

    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            (mode,) = cur.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            text = str(e).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def warm_up(url: str, timeout: float = 2.0) -> None:
    """Prepare, in a process about to fork many writers (the scheduler, before its executor
    forks), what each of them would otherwise redo: the engine, the SQL of the inserts and,
    if the server answers within ``timeout`` seconds, the dialect's first-connection queries
    (the connection is then closed: forks never share it). Never raises."""
    import socket

    from sqlalchemy.engine import make_url

    try:
        eng = _engine(url)
        for table, values in _SAMPLE_ROWS.items():
            _insert_stmt(eng.dialect.name, table, values).compile(dialect=eng.dialect)
        if eng.dialect.name == "sqlite":
            return
        parsed = make_url(url)
        if parsed.host:  # unreachable hosts must not hold up the scheduler's start
            with socket.create_connection((parsed.host, parsed.port or 5432), timeout=timeout):
                pass
        with eng.connect():
            pass
        eng.dispose()
    except Exception as e:  # only a warm-up: every writer connects by itself anyway
        log.debug("twinprov: ledger warm-up skipped: %s", e)


def _insert_stmt(dialect: str, table: Table, values: dict[str, Any]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` of one row (SQLite and PostgreSQL)."""
    insert: Any
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(table).values(**values).on_conflict_do_nothing()


_SAMPLE_ROWS: dict[Table, dict[str, Any]] = {}
"""A row of each table, filled below the tables' writers (for :func:`warm_up`)."""


def _create_tables(eng: Engine) -> None:
    """Create the ledger's tables if missing; two processes doing it at once is fine."""
    for attempt in range(3):
        try:
            _metadata.create_all(eng, checkfirst=True)
            return
        except (IntegrityError, ProgrammingError, OperationalError):
            # PostgreSQL: a concurrent CREATE TABLE won the race (duplicate pg_type row)
            if attempt == 2:
                raise
            time.sleep(0.1 * (attempt + 1))


class Ledger:
    """The event store behind every run's provenance."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = _engine(url)
        except SQLAlchemyError as e:
            raise LedgerError(f"cannot open the ledger at {_safe_url(url)}: {e}") from e

    def _insert_ignore(self, conn: Any, table: Table, values: dict[str, Any]) -> bool:
        name = self.engine.dialect.name
        if name not in ("sqlite", "postgresql"):
            try:
                with conn.begin_nested():
                    conn.execute(table.insert().values(**values))
                return True
            except IntegrityError:
                return False
        res = conn.execute(_insert_stmt(name, table, values))
        return bool(res.rowcount)

    def _schema_retry(self, work: Callable[[], _T], verb: str) -> _T:
        """Run ``work``; if it fails because the tables are missing (a new database), create
        them and run it once more. Database errors become one-line :class:`LedgerError`."""
        try:
            try:
                return work()
            except (OperationalError, ProgrammingError) as first:
                if not _missing_table(first):
                    raise
                _create_tables(self.engine)
                return work()
        except SQLAlchemyError as e:
            raise LedgerError(
                f"cannot {verb} the ledger at {_safe_url(self.url)}: {_first_line(e)}"
            ) from e

    def _write(self, rows: list[tuple[Table, dict[str, Any]]]) -> list[bool]:
        def work() -> list[bool]:
            with self.engine.begin() as conn:
                return [self._insert_ignore(conn, table, values) for table, values in rows]

        return self._schema_retry(work, "write")

    def append(self, ev: TaskEvent, run_info: Mapping[str, Any] | None = None) -> bool:
        """Store one event (and, in the same transaction, the run it belongs to).

        Returns ``False`` if the event was already there (replays are no-ops).
        """
        rows = []
        if run_info is not None:
            rows.append((runs, self._run_row(ev.dag_id, ev.run_id, run_info)))
        rows.append((task_events, self._event_row(ev)))
        return self._write(rows)[-1]

    @staticmethod
    def _event_row(ev: TaskEvent) -> dict[str, Any]:
        return {
            "dag_id": ev.dag_id,
            "run_id": ev.run_id,
            "task_id": ev.task_id,
            "map_index": ev.map_index,
            "try_number": ev.try_number,
            "state": ev.state,
            "recorded_at": ev.recorded_at,
            "payload": json.dumps(ev.payload, sort_keys=True, default=str),
        }

    @staticmethod
    def _run_row(dag_id: str, run_id: str, info: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "dag_id": dag_id,
            "run_id": run_id,
            "first_seen": _now(),
            "info": json.dumps(info, sort_keys=True, default=str),
        }

    def ensure_run(self, dag_id: str, run_id: str, info: Mapping[str, Any]) -> None:
        """Record a run the first time it is seen (later calls keep the first info)."""
        self._write([(runs, self._run_row(dag_id, run_id, info))])

    def events(self, dag_id: str, run_id: str) -> list[TaskEvent]:
        """A run's events in the order they were recorded."""
        q = (
            select(task_events)
            .where(task_events.c.dag_id == dag_id, task_events.c.run_id == run_id)
            .order_by(task_events.c.id)
        )
        return [
            TaskEvent(
                dag_id=r.dag_id,
                run_id=r.run_id,
                task_id=r.task_id,
                map_index=r.map_index,
                try_number=r.try_number,
                state=r.state,
                payload=json.loads(r.payload),
                recorded_at=r.recorded_at,
            )
            for r in self.select_rows(q)
        ]

    def run(self, dag_id: str, run_id: str) -> RunRecord | None:
        """One run, or ``None``."""
        q = select(runs).where(runs.c.dag_id == dag_id, runs.c.run_id == run_id)
        rows = self.select_rows(q)
        return _row_to_run(rows[0]) if rows else None

    def runs(self) -> list[RunRecord]:
        """Every recorded run, oldest first."""
        rows = self.select_rows(select(runs).order_by(runs.c.first_seen, runs.c.run_id))
        return [_row_to_run(r) for r in rows]

    def update_run(self, dag_id: str, run_id: str, **values: Any) -> None:
        """Set run columns (``state``, ``ended``, ``published_*``, ``stored_digest``…)."""
        if "publication" in values and not isinstance(values["publication"], str):
            values["publication"] = json.dumps(values["publication"], sort_keys=True)
        stmt = update(runs).where(runs.c.dag_id == dag_id, runs.c.run_id == run_id).values(**values)

        def work() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt)

        self._schema_retry(work, "write")

    def select_rows(self, stmt: Any) -> list[Any]:
        """All rows of one query on the ledger's tables (created first in a new database)."""

        def work() -> list[Any]:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt))

        return self._schema_retry(work, "read")

    # -- the spool: events the database could not take at the time -------------------------

    def ingest_spool(self, spool_dir: Path) -> int:
        """Move spooled events into the ledger; returns how many were new.

        A run that gains events this way is marked unpublished (``published_digest`` cleared):
        if it had been published already, its PROV lacks them, and ``twinprov publish
        --pending`` publishes it again."""
        return self.drain_spool(spool_dir)[0]

    def drain_spool(self, spool_dir: Path) -> tuple[int, set[tuple[str, str]]]:
        """:meth:`ingest_spool`, also returning the ``(dag_id, run_id)`` of every run it added
        events to (those with step events are marked unpublished)."""
        added = 0
        stale: set[tuple[str, str]] = set()
        touched: set[tuple[str, str]] = set()
        if not spool_dir.is_dir():
            return 0, touched
        for f in sorted(spool_dir.glob("*.jsonl")):
            try:
                fd = os.open(f, os.O_RDONLY)
            except FileNotFoundError:  # its writer reached the ledger and removed it meanwhile
                continue
            try:
                if not lock_fd(fd, blocking=False):
                    continue  # its writer is still at work: the event is on its way
                for rec in _read_jsonl(f):
                    ev = TaskEvent(**rec["event"])
                    if self.append(ev, rec.get("run_info")):
                        added += 1
                        touched.add((ev.dag_id, ev.run_id))
                        if ev.payload.get("role") != "publish":  # not part of the PROV
                            stale.add((ev.dag_id, ev.run_id))
                f.unlink(missing_ok=True)
            finally:
                os.close(fd)
        for dag_id, run_id in sorted(stale):
            self.update_run(dag_id, run_id, published_digest=None)
        return added, touched

    def store_pending(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """``(dag_id, run_id, published_digest, publication)`` of every run published but not
        (or not in that version) in the graph store, oldest first; only those rows are read."""
        t = runs
        stmt = (
            select(t.c.dag_id, t.c.run_id, t.c.published_digest, t.c.publication)
            .where(
                t.c.published_digest.is_not(None),
                t.c.published_digest != "",
                or_(t.c.stored_digest.is_(None), t.c.stored_digest != t.c.published_digest),
            )
            .order_by(t.c.first_seen, t.c.run_id)
        )
        out = []
        for row in self.select_rows(stmt):
            try:
                publication = json.loads(row.publication) if row.publication else {}
            except ValueError:
                continue
            if isinstance(publication, dict):
                out.append((row.dag_id, row.run_id, row.published_digest, publication))
        return out

    def mark_stored(self, stored: list[tuple[str, str, str]]) -> None:
        """Set ``stored_digest`` of many runs, ``(dag_id, run_id, digest)``, in one
        transaction (what a catch-up loaded into the graph store)."""
        from sqlalchemy import bindparam

        params = [{"b_dag": d, "b_run": r, "b_digest": g} for d, r, g in stored]
        if not params:
            return
        stmt = (
            update(runs)
            .where(runs.c.dag_id == bindparam("b_dag"), runs.c.run_id == bindparam("b_run"))
            .values(stored_digest=bindparam("b_digest"))
        )

        def work() -> None:
            with self.engine.begin() as conn:
                conn.execute(stmt, params)

        self._schema_retry(work, "write")


_SAMPLE_ROWS.update(
    {
        runs: Ledger._run_row("dag", "run", {}),
        task_events: Ledger._event_row(TaskEvent("dag", "run", "task", -1, 1, "running")),
    }
)


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:  # a line cut by a kill: keep the rest
                    log.warning("twinprov: skipped a truncated spool line in %s", path)


def _missing_table(e: SQLAlchemyError) -> bool:
    """Whether a database error says one of our tables does not exist (a new database)."""
    text = str(getattr(e, "orig", e)).lower()
    return "no such table" in text or ("does not exist" in text and "relation" in text)


def _first_line(e: SQLAlchemyError) -> str:
    """The driver's own message, first line (no SQL statement, no bound values)."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _safe_url(url: str) -> str:
    """The URL with any password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<ledger url>"


LEDGER_ATTEMPTS = 4
"""Tries of one ledger write before an event stays in the spool (a restarting database)."""
_BACKOFF_S = (0.25, 0.75, 1.5)


class _SpoolLine:
    """One event written ahead to the spool folder, locked (``flock``) by its writer until the
    ledger has it: an ingestion skips a locked file, so an event still on its way is never
    taken for a lost one. A killed writer's lock goes with it."""

    def __init__(self, spool_dir: Path, line: str) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp = spool_dir / f".{name}.tmp"
        self.fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            lock_fd(self.fd, blocking=True)
            os.write(self.fd, (line + "\n").encode("utf-8"))
            self.path = spool_dir / f"{name}.jsonl"
            os.replace(tmp, self.path)  # whole, or not there: a reader never sees half a line
        except BaseException:
            os.close(self.fd)
            raise

    def done(self) -> None:
        """The ledger has the event: remove the line."""
        self.path.unlink(missing_ok=True)
        os.close(self.fd)

    def keep(self) -> None:
        """The ledger could not take it: flush the line to disk and release it for ingestion."""
        with contextlib.suppress(OSError):
            os.fsync(self.fd)
        os.close(self.fd)


def record_event(
    ledger_url: str,
    spool_dir: Path,
    ev: TaskEvent,
    run_info: Mapping[str, Any] | None,
    attempts: int = LEDGER_ATTEMPTS,
) -> str:
    """Persist an event durably. Returns where it rests: ``"ledger"`` or ``"spool"``.

    Write-ahead: the event is first written to the spool folder, then appended to the ledger
    (retried while the database restarts), and only then removed from the spool. A process
    killed at any point after the spool write leaves the event there, and the next publication
    ingests it (appends are idempotent, so an event that reached both is stored once). When the
    ledger stays unreachable the spool file is flushed to disk and kept.

    Raises only if both the ledger and the spool folder are unwritable.
    """
    event = {f.name: getattr(ev, f.name) for f in fields(ev)}  # asdict would deep-copy
    info = dict(run_info) if run_info is not None else None
    line = json.dumps({"event": event, "run_info": info}, default=str)
    spooled: _SpoolLine | None
    try:
        spooled = _SpoolLine(spool_dir, line)
    except OSError as e:
        log.warning("twinprov: spool folder %s unwritable (%s)", spool_dir, e)
        spooled = None
    error: Exception | None = None
    for attempt in range(max(1, attempts)):
        try:
            Ledger(ledger_url).append(ev, run_info)
        except Exception as e:  # any failure of the database must not lose the event
            error = e
            if attempt + 1 < attempts:
                time.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
            continue
        if spooled is not None:
            spooled.done()
        return "ledger"
    if spooled is None:
        raise LedgerError(f"event lost: ledger and spool folder both unwritable ({error})")
    log.warning("twinprov: ledger unavailable (%s); the event waits in %s", error, spooled.path)
    spooled.keep()
    return "spool"
