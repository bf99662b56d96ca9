"""The ledger: idempotent appends, separate runs, and the spool when the database is down."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import Ledger, TaskEvent, record_event
from twinprov.provenance.prov_model import RunFacts, build_document


def _events(run_id: str, n: int = 3) -> list[TaskEvent]:
    evs = []
    for i in range(n):
        evs.append(
            TaskEvent(
                "dag",
                run_id,
                f"t{i}",
                -1,
                1,
                "running",
                {"start_date": f"2026-01-01T00:{i:02d}:00+00:00"},
                "2026-01-01T00:00:00",
            )
        )
        evs.append(
            TaskEvent(
                "dag",
                run_id,
                f"t{i}",
                -1,
                1,
                "success",
                {
                    "end_date": f"2026-01-01T00:{i:02d}:30+00:00",
                    "manifest": {
                        "exit_code": 0,
                        "inputs": [],
                        "outputs": [
                            {
                                "name": "o",
                                "path": "o",
                                "sha256": f"{run_id}{i}".ljust(64, "0"),
                                "size": 1,
                                "media_type": "text/plain",
                            }
                        ],
                    },
                },
                "2026-01-01T00:00:01",
            )
        )
    return evs


def test_replaying_events_changes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    evs = _events("r1")
    assert all(ledger.append(e, {"params": {}}) for e in evs)
    first = build_document(Ids(), RunFacts("dag", "r1", {}, "success"), ledger.events("dag", "r1"))
    assert not any(ledger.append(e, {"params": {}}) for e in evs)  # replay: all no-ops
    again = ledger.events("dag", "r1")
    assert len(again) == len(evs)
    second = build_document(Ids(), RunFacts("dag", "r1", {}, "success"), again)
    assert first == second
    activities = [r for r in second.get_records() if r.get_type().localpart == "Activity"]
    assert len(activities) == 1 + 3  # the run + one per task try


def _writer(url: str, run_id: str) -> None:
    ledger = Ledger(url)
    for e in _events(run_id, 20):
        ledger.append(e, {"params": {"run": run_id}})


def test_two_runs_written_in_parallel_do_not_mix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    Ledger(url)  # create tables once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, r)) for r in ("run-alpha", "run-bravo")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = Ledger(url)
    for run in ("run-alpha", "run-bravo"):
        evs = ledger.events("dag", run)
        assert len(evs) == 40 and {e.run_id for e in evs} == {run}
        assert ledger.run("dag", run).info == {"params": {"run": run}}
        doc = build_document(Ids(), RunFacts("dag", run, {}, "success"), evs)
        other = "run-bravo" if run == "run-alpha" else "run-alpha"
        assert other not in doc.serialize(format="json")


def test_unreachable_ledger_spools_and_nothing_is_lost(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the ledger's folder should be")
    bad_url = f"sqlite:///{blocker / 'ledger.sqlite'}"  # cannot be created or opened
    spool = tmp_path / "spool"
    evs = _events("r9")
    got = {record_event(bad_url, spool, e, {"params": {"p": 1}}, attempts=1) for e in evs}
    assert got == {"spool"}
    assert len(list(spool.glob("*.jsonl"))) == len(evs)
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    assert ledger.ingest_spool(spool) == len(evs)
    assert len(ledger.events("dag", "r9")) == len(evs)
    assert ledger.run("dag", "r9").info == {"params": {"p": 1}}
    assert not list(spool.glob("*.jsonl"))


def test_a_ledger_that_comes_back_is_retried(tmp_path: Path) -> None:
    """The database is unavailable for a moment (here: its folder cannot be created yet, then
    can): the write is retried and lands in the ledger; nothing is left in the spool."""
    import threading

    folder = tmp_path / "db"
    folder.write_text("in the way for a moment")
    timer = threading.Timer(0.1, folder.unlink)
    timer.start()
    spool = tmp_path / "spool"
    ev = _events("r5", 1)[0]
    assert record_event(f"sqlite:///{folder / 'l.sqlite'}", spool, ev, {}) == "ledger"
    timer.join()
    assert len(Ledger(f"sqlite:///{folder / 'l.sqlite'}").events("dag", "r5")) == 1
    assert not list(spool.glob("*"))


def test_event_of_a_process_killed_while_writing_is_recovered(tmp_path: Path) -> None:
    """``kill -9`` of the writer while its ledger insert waits on a lock: the write-ahead spool
    line survives and the next ingestion stores the event exactly once."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    spool = tmp_path / "spool"
    ledger = Ledger(url)
    ledger.append(_events("r0", 1)[0], {})  # tables exist
    lock = sqlite3.connect(tmp_path / "l.sqlite", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the writer's insert waits (busy_timeout)
    code = (
        "import json, sys\n"
        "from twinprov.provenance.ledger import TaskEvent, record_event\n"
        "ev = TaskEvent(**json.loads(sys.argv[1]))\n"
        f"record_event({url!r}, __import__('pathlib').Path({str(spool)!r}), ev, {{'p': 1}})\n"
    )
    import json
    from dataclasses import asdict

    ev = _events("r1", 1)[1]  # a success event with its manifest
    writer = subprocess.Popen([sys.executable, "-c", code, json.dumps(asdict(ev))])
    try:
        deadline = time.monotonic() + 30
        while not list(spool.glob("*.jsonl")):
            assert time.monotonic() < deadline and writer.poll() is None, "nothing spooled"
            time.sleep(0.02)
        time.sleep(0.3)  # now inside the ledger write, waiting on the lock
        assert writer.poll() is None
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert ledger.events("dag", "r1") == []  # the insert never happened
    assert ledger.ingest_spool(spool) == 1
    assert ledger.ingest_spool(spool) == 0
    (got,) = ledger.events("dag", "r1")
    assert (
        got.payload["manifest"]["outputs"][0]["sha256"]
        == ev.payload["manifest"]["outputs"][0]["sha256"]
    )
    assert ledger.run("dag", "r1").info == {"p": 1}


def test_a_try_that_never_reported_an_end_is_interrupted() -> None:
    """A try with only its ``running`` event, followed by a later try of the same task (its
    process was killed): recorded as ``interrupted`` with the reason, never left running."""
    from twinprov.provenance.record import INTERRUPTED, collapse_tries

    first, second = _events("r7", 1)
    retry = [
        TaskEvent("dag", "r7", "t0", -1, 2, "running", {"start_date": "2026-01-01T00:05:00+00:00"}),
        TaskEvent("dag", "r7", "t0", -1, 2, "success", dict(second.payload)),
    ]
    tries = {t.try_number: t for t in collapse_tries([first, *retry])}
    assert tries[1].state == INTERRUPTED and "Airflow went on to try 2" in (tries[1].error or "")
    assert tries[2].state == "success"
    # the last try still running is just running
    (only,) = collapse_tries([first])
    assert only.state == "running" and only.error is None


def test_events_ingested_after_publication_mark_the_run_unpublished(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    spool = tmp_path / "spool"
    running, success = _events("r8", 1)
    ledger.append(running, {})
    ledger.update_run("dag", "r8", published_digest="d1", stored_digest="d1")
    # the success event was spooled (its writer could not reach the database) …
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database's folder should be")
    bad_url = f"sqlite:///{blocker / 'x.sqlite'}"
    assert record_event(bad_url, spool, success, {}, attempts=1) == "spool"
    ledger.append(running, {})  # … a replay of a stored event changes nothing
    assert ledger.run("dag", "r8").published_digest == "d1"
    assert ledger.ingest_spool(spool) == 1
    assert ledger.run("dag", "r8").published_digest is None  # publish --pending redoes it


def test_an_event_on_its_way_is_left_to_its_writer(tmp_path: Path) -> None:
    """A spool line whose writer still holds it (its ledger write in progress) is not
    ingested, so a finished run is not marked unpublished by an event that is merely late."""
    import fcntl
    import os

    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    spool = tmp_path / "spool"
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    running, success = _events("r6", 1)
    record_event(f"sqlite:///{blocker / 'x.sqlite'}", spool, success, {}, attempts=1)
    (line,) = spool.glob("*.jsonl")
    fd = os.open(line, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as its writer does while it talks to the ledger
    try:
        assert ledger.ingest_spool(spool) == 0 and line.exists()
    finally:
        os.close(fd)
    assert ledger.ingest_spool(spool) == 1 and not line.exists()
