"""The production stack, natively on 127.0.0.1: the real programs, installed when missing.

* **PostgreSQL** (Debian package ``postgresql``): a throw-away cluster made with ``initdb`` and run
  with ``pg_ctl`` as the ``postgres`` user (as root; as yourself otherwise), password
  authentication over TCP, three databases: ``airflow`` (metadata), ``twinprov`` (the ledger) and
  ``mlflow`` (tracking);
* **Oxigraph server** (PyPI ``oxigraph``): ``oxigraph serve --union-default-graph``, the graph
  store, reached through ``[twinprov] sparql_url`` (query) and ``sparql_gsp_url`` (Graph Store
  Protocol);
* **MLflow tracking server** (``mlflow server``) on the ``mlflow`` database, artifacts in a folder;
* **Airflow** 3: ``airflow db migrate``, then ``scheduler`` (LocalExecutor, 8 parallel tasks),
  ``dag-processor`` and ``api-server``, with twinprov's DAG folder and a folder of workflow specs.

Used by the ``stack`` tests (session fixture in ``tests/stack/conftest.py``), by
``bench/stack_throughput.py``, and by hand: ``scripts/services.sh start|stop|status`` (which calls
``python -m tests.stack.services``). Nothing is faked; whatever cannot be installed or started is
an error that names the cause (:class:`ServiceError`), never a silent skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
MLFLOW = str(BIN / "mlflow")
TWINPROV = str(BIN / "twinprov")
PARALLELISM = 8
PIP_PACKAGES = {
    "oxigraph": "oxigraph>=0.5.13,<0.6",  # the `oxigraph` server program
    "psycopg2": "psycopg2-binary>=2.9.9,<3",  # PostgreSQL driver of Airflow, the ledger, MLflow
    "asyncpg": "asyncpg>=0.29,<1",  # Airflow's async engine on PostgreSQL
}


class ServiceError(RuntimeError):
    """A service could not be installed, started or reached; the message says why."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServiceError(f"`{' '.join(cmd[:4])}` could not run: {e}") from e
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-3000:]
        raise ServiceError(f"`{' '.join(cmd[:4])}` failed (exit {proc.returncode}): {out}")
    return proc.stdout


# -- installation ------------------------------------------------------------------------------


def pg_bindir() -> Path | None:
    """Folder of the newest installed PostgreSQL server programs (``initdb``, ``pg_ctl``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    which = shutil.which("pg_ctl")
    return Path(which).parent if which and shutil.which("initdb") else None


def oxigraph_binary() -> str | None:
    """The ``oxigraph`` server program of this Python environment (or on PATH)."""
    local = BIN / "oxigraph"
    return str(local) if local.is_file() else shutil.which("oxigraph")


def ensure_installed() -> None:
    """Install what is missing: PostgreSQL (apt-get, as root); ``oxigraph``, ``psycopg2`` and
    ``asyncpg`` (pip, into this Python environment). Raises :class:`ServiceError` naming what
    failed."""
    if pg_bindir() is None:
        if os.geteuid() != 0:
            raise ServiceError(
                "PostgreSQL server programs are missing and only root can install them: "
                "run `apt-get install -y postgresql` (Debian) and retry"
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update", "-qq"], env=env, timeout=600)
        _run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, timeout=900)
        if pg_bindir() is None:
            raise ServiceError("apt-get installed postgresql but no pg_ctl/initdb was found")
    import importlib.util

    wanted = []
    if oxigraph_binary() is None:
        wanted.append(PIP_PACKAGES["oxigraph"])
    for module in ("psycopg2", "asyncpg"):
        if importlib.util.find_spec(module) is None:
            wanted.append(PIP_PACKAGES[module])
    if wanted:
        _run([sys.executable, "-m", "pip", "install", "--quiet", *wanted], timeout=900)
        if oxigraph_binary() is None:
            raise ServiceError(f"pip installed {wanted} but there is no `oxigraph` program")


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Daemon:
    """A long-running program in its own process group, logging to a file."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            raise ServiceError(f"cannot start {self.name} ({self.cmd[0]}): {e}") from e
        finally:
            handle.close()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the whole process group (the program and its workers), SIGKILL to what is
        left of the group once the program has ended or after ``timeout``."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _stop_group(pgid: int, timeout: float) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def wait_until(check: Any, what: str, timeout: float, daemon: Daemon | None = None) -> Any:
    """Poll ``check()`` until it returns a truthy value; ServiceError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if daemon is not None and daemon.proc is not None and daemon.proc.poll() is not None:
            raise ServiceError(f"{daemon.name} exited ({daemon.proc.returncode}): {daemon.tail()}")
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.3)
    tail = daemon.tail() if daemon is not None else ""
    raise ServiceError(f"{what} not ready after {timeout:g} s (last error: {last}) {tail}")


# -- PostgreSQL --------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1."""

    root: Path
    port: int
    password: str
    bindir: Path
    os_user: str | None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.os_user, "--", *cmd] if self.os_user else cmd

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.os_user:
            import pwd

            owner = pwd.getpwnam(self.os_user)
            for p in (self.root, pwfile):
                os.chown(p, owner.pw_uid, owner.pw_gid)
        os.chmod(self.root, 0o700)
        _run(
            self._as_owner(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--pwfile",
                    str(pwfile),
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            timeout=120,
        )
        pwfile.unlink()

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            "-c fsync=on"
        )
        _run(
            self._as_owner(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            timeout=90,
        )

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        _run(
            self._as_owner(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]
            ),
            timeout=90,
        )

    def restart(self) -> None:
        """Stop (fast: open sessions are cut) and start again on the same port."""
        self.stop("fast")
        self.start()

    def url(self, user: str, password: str, db: str, driver: str = "psycopg2") -> str:
        return f"postgresql+{driver}://{user}:{password}@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str, db: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", password=self.password, dbname=db
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()


def _pg_owner() -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError as e:
        raise ServiceError("running as root but there is no `postgres` OS user") from e
    return "postgres"


# -- the stack ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """Every service, their URLs and the environment Airflow and twinprov run with."""

    root: Path
    workflows: Path
    pg: Postgres
    passwords: dict[str, str]
    ports: dict[str, int]
    daemons: dict[str, Daemon] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    """More environment for every Airflow process (connections, variables, settings)."""
    setup_sql: list[str] = field(default_factory=list)
    """Statements run as the PostgreSQL superuser once the cluster is up (e.g. more roles)."""
    started_in: float = 0.0
    supervising: bool = False
    """A supervisor thread revives dead Airflow daemons (:meth:`supervised`)."""
    _token: str | None = None

    # URLs and settings

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def oxigraph_base(self) -> str:
        return f"http://127.0.0.1:{self.ports['oxigraph']}"

    @property
    def sparql_url(self) -> str:
        return f"{self.oxigraph_base}/query"

    @property
    def sparql_gsp_url(self) -> str:
        return f"{self.oxigraph_base}/store"

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def ledger_url(self) -> str:
        return self.pg.url("twinprov", self.passwords["twinprov"], "twinprov")

    @property
    def airflow_db_url(self) -> str:
        return self.pg.url("airflow", self.passwords["airflow"], "airflow")

    @property
    def mlflow_db_url(self) -> str:
        return self.pg.url("mlflow", self.passwords["mlflow"], "mlflow")

    @property
    def twinprov_home(self) -> Path:
        return self.root / "home"

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def env(self) -> dict[str, str]:
        """Environment of the Airflow processes and of twinprov commands run against the stack."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "TWINPROV_"))
            and not k.startswith("PYTEST_")
            and k != "AIRFLOW_HOME"
        }
        env.update(
            AIRFLOW_HOME=str(self.airflow_home),
            TWINPROV_HOME=str(self.twinprov_home),
            TWINPROV_WORKFLOWS_DIR=str(self.workflows),
            AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM=str(PARALLELISM),
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=str(PARALLELISM * 2),
            AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG="32",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.api}/execution/",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.root / "passwords.json"),
            AIRFLOW__CORE__FERNET_KEY=self.passwords["fernet"],
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=self.airflow_db_url,
            AIRFLOW__API_AUTH__JWT_SECRET=self.passwords["jwt"],
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__API__BASE_URL=self.api,
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="30",
            AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
            AIRFLOW__TWINPROV__LEDGER_URL=self.ledger_url,
            AIRFLOW__TWINPROV__SPARQL_URL=self.sparql_url,
            AIRFLOW__TWINPROV__SPARQL_GSP_URL=self.sparql_gsp_url,
            AIRFLOW__TWINPROV__SPARQL_TIMEOUT_SECONDS="30",
            AIRFLOW__TWINPROV__MLFLOW_TRACKING_URI=self.mlflow_uri,
            MLFLOW_TRACKING_URI=self.mlflow_uri,
        )
        env.update(self.extra_env)
        # the stack runs the demo: its publication settings, as `twinprov demo` and a deployment
        # that names its publisher (the crate's RECOMMENDED publisher/url checks)
        from twinprov.provenance.config import demo_environment

        return demo_environment(env)

    def settings(self) -> Any:
        """twinprov's :class:`~twinprov.provenance.config.Settings` of this stack."""
        from twinprov.provenance.config import Settings

        return Settings(
            home=self.twinprov_home,
            ledger_url=self.ledger_url,
            store_path=self.twinprov_home / "graph-store",
            base_iri="urn:twinprov:",
            mlflow_tracking_uri=self.mlflow_uri,
            sparql_url=self.sparql_url,
            sparql_gsp_url=self.sparql_gsp_url,
            sparql_timeout_s=30.0,
        )

    # lifecycle

    @classmethod
    def create(cls, root: Path | None = None, workflows: Path | None = None) -> Stack:
        """A stack description with fresh ports and passwords (nothing started yet)."""
        from cryptography.fernet import Fernet

        root = Path(root or tempfile.mkdtemp(prefix="twinprov-stack-"))
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        bindir = pg_bindir()
        if bindir is None:
            raise ServiceError("PostgreSQL is not installed (call ensure_installed() first)")
        names = ("postgres", "airflow", "twinprov", "mlflow")
        passwords = {k: secrets.token_hex(12) for k in names}
        passwords["jwt"] = secrets.token_hex(32)
        passwords["fernet"] = Fernet.generate_key().decode()
        passwords["admin"] = secrets.token_hex(8)
        ports = {k: free_port() for k in ("postgres", "oxigraph", "mlflow", "api")}
        # initdb refuses to run as root: the cluster lives in a folder of its own owner
        pg_root = Path(tempfile.mkdtemp(prefix="twinprov-stack-pg-"))
        pg = Postgres(pg_root, ports["postgres"], passwords["postgres"], bindir, _pg_owner())
        wf = Path(workflows or root / "workflows")
        wf.mkdir(parents=True, exist_ok=True)
        return cls(root=root, workflows=wf, pg=pg, passwords=passwords, ports=ports)

    def start(self, *, airflow: bool = True) -> Stack:
        """Start every service and wait until each answers."""
        t0 = time.monotonic()
        self.twinprov_home.mkdir(parents=True, exist_ok=True)
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        (self.root / "passwords.json").write_text(json.dumps({"admin": self.passwords["admin"]}))
        self.pg.init()
        self.pg.start()
        for name in ("airflow", "twinprov", "mlflow"):
            pw = self.passwords[name]
            self.pg.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{pw}'")
            self.pg.execute(f"CREATE DATABASE {name} OWNER {name}")
        for sql in self.setup_sql:
            self.pg.execute(sql)
        self.start_oxigraph()
        self.daemons["mlflow"] = Daemon(
            "mlflow server",
            [
                MLFLOW,
                "server",
                "--backend-store-uri",
                self.mlflow_db_url,
                "--artifacts-destination",
                str(self.root / "mlartifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.ports["mlflow"]),
                "--workers",
                "1",
            ],
            self.env,
            self.root / "logs" / "mlflow.log",
        ).start()
        if airflow:
            _run([AIRFLOW, "db", "migrate"], env=self.env, timeout=600)
            # the ledger's tables, made once by the deployment (as airflow-init does in
            # docker-compose.yaml) rather than raced for by the first tasks
            _run(
                [
                    sys.executable,
                    "-c",
                    "from twinprov.provenance.config import Settings;"
                    " from twinprov.provenance.ledger import Ledger;"
                    " Ledger(Settings.load().ledger_url)",
                ],
                env=self.env,
                timeout=120,
            )
            self.start_airflow()
        self.wait_mlflow()
        self.write_state()
        self.started_in = time.monotonic() - t0
        return self

    def pg_dump(self, db: str) -> bytes:
        """A plain SQL dump of one database (every byte it holds, for greps)."""
        proc = subprocess.run(
            [
                str(self.pg.bindir / "pg_dump"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg.port),
                "-U",
                "postgres",
                db,
            ],
            env={**os.environ, "PGPASSWORD": self.pg.password},
            capture_output=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(f"pg_dump {db} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def start_oxigraph(self) -> None:
        binary = oxigraph_binary()
        if binary is None:
            raise ServiceError("no `oxigraph` program (pip install oxigraph)")
        self.daemons["oxigraph"] = Daemon(
            "oxigraph serve",
            [
                binary,
                "serve",
                "--location",
                str(self.root / "oxigraph"),
                "--bind",
                f"127.0.0.1:{self.ports['oxigraph']}",
                "--union-default-graph",
            ],
            self.env,
            self.root / "logs" / "oxigraph.log",
        ).start()
        self.wait_oxigraph()

    def stop_oxigraph(self) -> None:
        if "oxigraph" in self.daemons:
            self.daemons["oxigraph"].stop()

    def wait_oxigraph(self, timeout: float = 60) -> None:
        import httpx

        wait_until(
            lambda: (
                httpx.get(self.sparql_url, params={"query": "ASK {}"}, timeout=2).status_code == 200
            ),
            "oxigraph serve",
            timeout,
            self.daemons.get("oxigraph"),
        )

    def wait_mlflow(self, timeout: float = 240) -> None:
        import httpx

        wait_until(
            lambda: httpx.get(f"{self.mlflow_uri}/health", timeout=2).status_code == 200,
            "mlflow server",
            timeout,
            self.daemons.get("mlflow"),
        )

    def start_airflow(self, extra_env: Mapping[str, str] | None = None) -> None:
        """Start api-server, dag-processor and scheduler (``extra_env`` for the scheduler and
        so for every task it runs, e.g. ``TWINPROV_CAPTURE=off``)."""
        logs = self.root / "logs"
        self.daemons["api-server"] = Daemon(
            "airflow api-server",
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.ports["api"])],
            self.env,
            logs / "api-server.log",
        ).start()
        self.daemons["dag-processor"] = Daemon(
            "airflow dag-processor",
            [AIRFLOW, "dag-processor"],
            self.env,
            logs / "dag-processor.log",
        ).start()
        self.start_scheduler(extra_env)
        self.wait_api()

    def start_scheduler(self, extra_env: Mapping[str, str] | None = None) -> None:
        env = {**self.env, **(extra_env or {})}
        self.daemons["scheduler"] = Daemon(
            "airflow scheduler", [AIRFLOW, "scheduler"], env, self.root / "logs" / "scheduler.log"
        ).start()

    def restart_scheduler(self, extra_env: Mapping[str, str] | None = None) -> None:
        self.daemons["scheduler"].stop()
        self.start_scheduler(extra_env)
        self.wait_healthy(("scheduler",))

    def revive(self) -> list[str]:
        """Start again every Airflow daemon that has died (what a process supervisor such as
        Docker's ``restart: always`` does); the names of those restarted."""
        revived = []
        for name in ("api-server", "dag-processor", "scheduler"):
            d = self.daemons.get(name)
            if d is not None and not d.alive():
                d.proc = None
                d.start()
                revived.append(name)
        if revived:
            self.write_state()
        return revived

    @contextlib.contextmanager
    def supervised(self, every: float = 1.0) -> Iterator[list[str]]:
        """Within the block, a background thread revives dead Airflow daemons; yields the list
        of restarts it made (for the test to print)."""
        restarts: list[str] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every):
                try:
                    restarts.extend(self.revive())
                except ServiceError as e:
                    print(f"stack supervisor: {e}", file=sys.stderr)

        thread = threading.Thread(target=loop, name="stack-supervisor", daemon=True)
        self.supervising = True
        thread.start()
        try:
            yield restarts
        finally:
            stop.set()
            thread.join(timeout=10)
            self.supervising = False
            restarts.extend(self.revive())
            self.wait_healthy(("scheduler", "dag_processor"))

    @classmethod
    def attach(cls, root: Path) -> Stack:
        """The stack a ``start`` left running under ``root`` (from its ``stack.json``)."""
        state = _from_state(Path(root) / "stack.json")
        pg = Postgres(
            Path(state["pg_root"]),
            int(state["ports"]["postgres"]),
            state["passwords"]["postgres"],
            Path(state["pg_bindir"]),
            state["pg_os_user"],
        )
        stack = cls(
            root=Path(state["root"]),
            workflows=Path(state["env"]["TWINPROV_WORKFLOWS_DIR"]),
            pg=pg,
            passwords=state["passwords"],
            ports=state["ports"],
        )
        return stack

    def wait_api(self, timeout: float = 180) -> None:
        import httpx

        wait_until(
            lambda: httpx.get(f"{self.api}/api/v2/monitor/health", timeout=3).status_code == 200,
            "airflow api-server",
            timeout,
            self.daemons.get("api-server"),
        )
        self.wait_healthy(("scheduler", "dag_processor"), timeout)

    def wait_healthy(self, parts: Iterable[str], timeout: float = 180) -> None:
        import httpx

        def ok() -> bool:
            health = httpx.get(f"{self.api}/api/v2/monitor/health", timeout=3).json()
            return all(health.get(p, {}).get("status") == "healthy" for p in parts)

        wait_until(ok, f"airflow {', '.join(parts)}", timeout, self.daemons.get("scheduler"))

    def stop(self, *, remove_database: bool = True) -> None:
        """Stop every service (best effort, each by its own process group); remove the
        throw-away PostgreSQL cluster unless asked to keep it."""
        running = [d for d in self.daemons.values() if d.alive()]
        for d in running:  # all at once: each one's graceful shutdown overlaps the others'
            with contextlib.suppress(ProcessLookupError):
                os.killpg(d.pid or 0, signal.SIGTERM)
        for d in running:
            try:
                d.stop(timeout=20)
            except Exception as e:  # noqa: BLE001 - keep stopping the others
                print(f"stack: stopping {d.name}: {e}", file=sys.stderr)
        try:
            self.pg.stop()
        except ServiceError as e:
            print(f"stack: stopping postgres: {e}", file=sys.stderr)
        else:
            if remove_database:
                shutil.rmtree(self.pg.root, ignore_errors=True)

    def write_state(self) -> None:
        state = {
            "root": str(self.root),
            "pg_root": str(self.pg.root),
            "pg_bindir": str(self.pg.bindir),
            "pg_os_user": self.pg.os_user,
            "ports": self.ports,
            "passwords": self.passwords,
            "pids": {k: d.pid for k, d in self.daemons.items()},
            "env": self.env,
        }
        path = self.root / "stack.json"
        path.write_text(json.dumps(state, indent=2))
        os.chmod(path, 0o600)

    # Airflow's REST API

    def token(self) -> str:
        import httpx

        if self._token is None:
            resp = httpx.post(
                f"{self.api}/auth/token",
                json={"username": "admin", "password": self.passwords["admin"]},
                timeout=30,
            )
            if resp.status_code not in (200, 201):
                raise ServiceError(f"no API token: {resp.status_code} {resp.text[:300]}")
            self._token = str(resp.json()["access_token"])
        return self._token

    def rest(self, method: str, path: str, attempts: int = 10, **kwargs: Any) -> Any:
        """One call of Airflow's REST API (v2); retried while the server is unreachable or
        answers 5xx (e.g. its database is restarting)."""
        import httpx

        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = httpx.request(
                    method,
                    f"{self.api}/api/v2{path}",
                    headers={"Authorization": f"Bearer {self.token()}"},
                    timeout=60,
                    **kwargs,
                )
            except httpx.TransportError:
                if last:
                    raise
                time.sleep(min(1 + attempt, 5))
                continue
            if resp.status_code >= 500 and not last:
                time.sleep(min(1 + attempt, 5))
                continue
            if resp.status_code >= 400:
                raise ServiceError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
            return resp.json() if resp.content else None
        raise AssertionError("unreachable")

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the DAG processor has parsed the DAG."""

        def parsed() -> bool:
            self.rest("GET", f"/dags/{dag_id}")
            return True

        wait_until(parsed, f"DAG {dag_id}", timeout, self.daemons.get("dag-processor"))

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": dict(conf or {})}
        return str(self.rest("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.rest("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_runs(
        self, dag_id: str, run_ids: Iterable[str], timeout: float = 600
    ) -> dict[str, str]:
        """Wait until every run has ended; their final states."""
        pending = set(run_ids)
        states: dict[str, str] = {}
        deadline = time.monotonic() + timeout
        while pending:
            page = self.rest("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 500})
            for r in page["dag_runs"]:
                if r["dag_run_id"] in pending and r["state"] in ("success", "failed"):
                    states[r["dag_run_id"]] = r["state"]
                    pending.discard(r["dag_run_id"])
            if not pending:
                break
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{len(pending)} run(s) of {dag_id} still running after {timeout:g} s"
                )
            for name in ("scheduler", "api-server", "dag-processor"):
                d = self.daemons.get(name)
                if d is not None and not d.alive() and not self.supervising:
                    raise ServiceError(f"{d.name} died: {d.tail()}")
            time.sleep(1)
        return states

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        page = self.rest("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return list(page["task_instances"])

    # twinprov

    def twinprov(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the ``twinprov`` command line against the stack (not checked)."""
        return subprocess.run(
            [TWINPROV, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _from_state(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.stack.services start [ROOT] | stop ROOT | status ROOT``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("start", "stop", "status"):
        print(main.__doc__, file=sys.stderr)
        return 2
    if args[0] == "start":
        ensure_installed()
        stack = Stack.create(Path(args[1]) if len(args) > 1 else None)
        try:
            stack.start()
        except BaseException:
            stack.stop()
            raise
        print(f"stack started in {stack.started_in:.0f} s under {stack.root}")
        print(f"  Airflow UI/API   {stack.api} (admin / see {stack.root}/passwords.json)")
        print(f"  SPARQL query     {stack.sparql_url}")
        print(f"  Graph Store      {stack.sparql_gsp_url}")
        print(f"  MLflow           {stack.mlflow_uri}")
        print(f"  Postgres         127.0.0.1:{stack.pg.port} (data {stack.pg.root})")
        print(f"  environment      {stack.root}/stack.json ('env')")
        return 0
    if len(args) < 2:
        print("name the stack folder printed by `start`", file=sys.stderr)
        return 2
    state = _from_state(Path(args[1]) / "stack.json")
    if args[0] == "status":
        for name, pid in state["pids"].items():
            try:
                os.kill(pid, 0)
                alive = "running"
            except (ProcessLookupError, TypeError):
                alive = "stopped"
            print(f"{name:14} pid {pid}: {alive}")
        return 0
    for name in ("scheduler", "dag-processor", "api-server", "mlflow", "oxigraph"):
        pid = state["pids"].get(name)
        if pid:
            _stop_group(int(pid), 30)
    pg = Postgres(
        Path(state["pg_root"]),
        int(state["ports"]["postgres"]),
        state["passwords"]["postgres"],
        Path(state["pg_bindir"]),
        state["pg_os_user"],
    )
    pg.stop()
    shutil.rmtree(pg.root, ignore_errors=True)
    print(f"stack under {state['root']} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
