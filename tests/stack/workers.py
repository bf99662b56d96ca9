"""Airflow's CeleryExecutor on the native stack (:mod:`tests.stack.services`): a Redis broker
(Debian package ``redis-server``) and ``airflow celery worker`` processes, each with a
``TWINPROV_HOME`` of its own (its own spool) and the one shared folder of run folders
(``[twinprov] shared_dir``), as on separate machines. The scheduler is restarted with the
CeleryExecutor while they run, and back with the LocalExecutor afterwards.

Used by ``tests/stack/test_celery_workers.py`` and ``bench/celery_scale.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.stack.services import AIRFLOW, Daemon, ServiceError, Stack, _run, free_port, wait_until

CELERY_CONFIG = "twinprov.airflow.celery_worker.CELERY_CONFIG"


def ensure_redis() -> str:
    """The ``redis-server`` program; installed with apt-get (as root) when missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() != 0:
        raise ServiceError("redis-server is missing: run `apt-get install -y redis-server`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], env=env, timeout=600)
    _run(["apt-get", "install", "-y", "-qq", "redis-server"], env=env, timeout=900)
    found = shutil.which("redis-server")
    if not found:
        raise ServiceError("apt-get installed redis-server but it is not on PATH")
    return found


@dataclass
class Celery:
    """Redis, the Celery workers, and the settings that make the stack a Celery deployment."""

    stack: Stack
    root: Path
    redis_port: int = field(default_factory=free_port)
    daemons: dict[str, Daemon] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    """More ``AIRFLOW__…`` settings for the scheduler and every worker."""
    _marks: dict[str, int] = field(default_factory=dict)

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def env(self) -> dict[str, str]:
        """What the scheduler and the workers add to the stack's environment."""
        pg = self.stack.pg
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": (
                f"db+postgresql+psycopg2://airflow:{self.stack.passwords['airflow']}"
                f"@127.0.0.1:{pg.port}/airflow"
            ),
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": CELERY_CONFIG,
            "AIRFLOW__TWINPROV__SHARED_DIR": str(self.shared),
            # a worker lost with its machine: its tasks are failed (and retried) this soon
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            **self.settings,
        }

    def home(self, name: str) -> Path:
        """The worker's own ``TWINPROV_HOME``."""
        return self.root / name / "home"

    def start(self) -> Celery:
        """Redis, then the scheduler again with the CeleryExecutor."""
        self.shared.mkdir(parents=True, exist_ok=True)
        redis = ensure_redis()
        (self.root / "redis").mkdir(parents=True, exist_ok=True)
        self.daemons["redis"] = Daemon(
            "redis-server",
            [
                redis,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root / "redis"),
            ],
            dict(os.environ),
            self.root / "logs" / "redis.log",
        ).start()
        wait_until(self._redis_pong, "redis-server", 30, self.daemons["redis"])
        self.stack.restart_scheduler(self.env)
        return self

    def _redis_pong(self) -> bool:
        import socket

        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def start_worker(
        self,
        name: str,
        concurrency: int = 4,
        extra_env: Mapping[str, str] | None = None,
        *,
        wait: bool = True,
    ) -> Daemon:
        """``airflow celery worker`` as ``name``, with its own ``TWINPROV_HOME``; waits (unless
        ``wait`` is false: :meth:`wait_ready`) until Celery says it is ready."""
        home = self.home(name)
        home.mkdir(parents=True, exist_ok=True)
        env = {**self.stack.env, **self.env, "TWINPROV_HOME": str(home), **(extra_env or {})}
        log = self.root / "logs" / f"{name}.log"
        mark = log.stat().st_size if log.exists() else 0
        daemon = Daemon(
            f"celery worker {name}",
            [
                AIRFLOW,
                "celery",
                "worker",
                "--concurrency",
                str(concurrency),
                "--celery-hostname",
                f"{name}@twinprov-test",
                "--skip-serve-logs",
                "--without-gossip",
                "--without-mingle",
            ],
            env,
            log,
        ).start()
        self.daemons[name] = daemon
        self._marks[name] = mark
        if wait:
            self.wait_ready(name)
        return daemon

    def wait_ready(self, name: str, timeout: float = 180) -> None:
        log, mark = self.root / "logs" / f"{name}.log", self._marks.get(name, 0)

        def ready() -> bool:
            return "ready." in log.read_text(errors="replace")[mark:]

        wait_until(ready, f"celery worker {name}", timeout, self.daemons[name])

    def kill(self, name: str) -> None:
        """``kill -9`` of the worker's whole process group: the machine is gone."""
        daemon = self.daemons[name]
        if daemon.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait()

    def spooled(self, name: str) -> list[dict[str, Any]]:
        """The events waiting in the worker's spool."""
        out = []
        for f in sorted((self.home(name) / "spool").glob("*.jsonl")):
            with contextlib.suppress(OSError, ValueError):
                for line in f.read_text().splitlines():
                    if line.strip():
                        out.append(json.loads(line)["event"])
        return out

    def executed(self, name: str) -> int:
        """Workloads the worker has started (from its log)."""
        log = self.root / "logs" / f"{name}.log"
        return log.read_text(errors="replace").count("Executing workload in Celery")

    def stop_workers(self) -> None:
        for name, d in list(self.daemons.items()):
            if name != "redis" and d.alive():
                d.stop(timeout=60)

    def stop(self) -> None:
        """Workers, Redis, then the scheduler back with the stack's own executor."""
        self.stop_workers()
        if "redis" in self.daemons:
            self.daemons["redis"].stop()
        self.stack.restart_scheduler()


def worker_refuses_to_start(
    stack: Stack, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """``airflow celery worker`` started without ``shared_dir`` (it must exit at once)."""
    full = {**stack.env, **env}
    full.pop("AIRFLOW__TWINPROV__SHARED_DIR", None)
    return subprocess.run(
        [AIRFLOW, "celery", "worker", "--skip-serve-logs", "--concurrency", "1"],
        env=full,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
