"""Airflow's Celery workers on separate machines, each with its own ``TWINPROV_HOME``.

Point Airflow's Celery app at this configuration (Airflow's own defaults, unchanged)::

    [celery]
    celery_config_options = twinprov.airflow.celery_worker.CELERY_CONFIG

(``AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS``). Importing it does two things in every process that
builds Airflow's Celery app (workers, the scheduler's CeleryExecutor):

* **checks the storage rule**: run folders (step workspaces, PROV files, crates) must be on a
  filesystem every machine mounts, named by ``[twinprov] shared_dir``; without it the process
  stops at start with a :class:`~twinprov.provenance.errors.ConfigError` that says so
  (a step reads the outputs of the steps before it, which may have run on another worker);
* **preloads the capture** (the listener's modules and facts), so that task processes, forks of
  the worker, inherit them instead of importing them once per task;
* **drains the worker's spool**: when a worker is ready, and every
  ``[twinprov] spool_drain_seconds`` (30) after that, a thread of the worker's main process moves
  the events of its ``TWINPROV_HOME/spool`` into the ledger and publishes again the runs that
  gained events (:func:`twinprov.app.drain.drain_spool`); once more when the worker shuts down.
"""

from __future__ import annotations

__all__ = ["CELERY_CONFIG", "SpoolDrainer", "check_storage"]

import logging
import threading
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_ready, worker_shutdown

# The worker's main process imports this module before its pool forks, and every task process is
# a fork of a pool process: importing the listener here runs its preload (the capture's and the
# publication's modules, the Python environment, the ledger's engine) once per worker instead of
# once per task process, as the scheduler does for the LocalExecutor.
import twinprov.airflow.listener  # noqa: F401  (imported for its preload)
from twinprov.app.drain import drain_spool
from twinprov.provenance.config import Settings, number_setting
from twinprov.provenance.errors import ConfigError

log = logging.getLogger(__name__)

CELERY_CONFIG: dict[str, Any] = dict(DEFAULT_CELERY_CONFIG)
"""Airflow's Celery configuration, as Airflow builds it from ``[celery]``."""


def check_storage(settings: Settings) -> None:
    """Raise :class:`ConfigError` unless run folders are on a shared filesystem."""
    if settings.shared is None:
        raise ConfigError(
            "CeleryExecutor: set [twinprov] shared_dir (AIRFLOW__TWINPROV__SHARED_DIR) to a "
            "folder every worker, the scheduler and the API server mount at the same path "
            "(NFS, CephFS, a ReadWriteMany volume): run folders under each worker's own "
            f"TWINPROV_HOME ({settings.home}) are not reachable by the steps and the "
            "publication that run on other workers"
        )


class SpoolDrainer:
    """A daemon thread draining this machine's spool now and every ``every_s`` seconds."""

    def __init__(self, settings: Settings, every_s: float) -> None:
        self.settings = settings
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="twinprov-spool", daemon=True)

    def start(self) -> SpoolDrainer:
        self._thread.start()
        return self

    def drain_once(self) -> None:
        """One drain; failures are logged (the events stay in the spool for the next one)."""
        try:
            done = drain_spool(self.settings)
        except Exception as e:  # the ledger may be unreachable: try again next time
            log.warning("twinprov: spool %s not drained: %s", self.settings.spool_dir, e)
            return
        if done.events or done.republished:
            log.info(
                "twinprov: %d spooled event(s) moved into the ledger; runs published again: %s",
                done.events,
                ", ".join(f"{p.dag_id}/{p.run_id}" for p in done.republished) or "none",
            )

    def _loop(self) -> None:
        self.drain_once()
        while not self._stop.wait(self.every_s):
            self.drain_once()

    def stop(self) -> None:
        """Stop the thread, then drain a last time."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.drain_once()


_settings = Settings.load()
check_storage(_settings)
_drainer: SpoolDrainer | None = None


@worker_ready.connect
def _start_draining(**_: Any) -> None:
    global _drainer
    if _drainer is None:
        every = number_setting("spool_drain_seconds", 30.0)
        _drainer = SpoolDrainer(_settings, every).start()


@worker_shutdown.connect
def _stop_draining(**_: Any) -> None:
    if _drainer is not None:
        _drainer.stop()
