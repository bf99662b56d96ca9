"""Events that exist on one worker only: a worker's spool drained into the ledger, and the
publication of a run that waits for them.

With workers on separate machines (Airflow's CeleryExecutor), each worker writes its task events
ahead to its own spool (``TWINPROV_HOME/spool``). An event the ledger could not take (database
unreachable from that machine, a process killed between the two writes) is then on that machine
only. The worker drains its spool when it starts and periodically
(:mod:`twinprov.airflow.celery_worker`); a run that gains events that way is published again.
The publish task, which may run on another machine, compares the task instances Airflow reports
ended with the ledger, waits a bounded time for what is missing, and otherwise publishes with the
gap recorded (:func:`wait_for_events`, ``publish_run(..., missing=…)``).
"""

from __future__ import annotations

__all__ = ["Drained", "drain_spool", "missing_events", "wait_for_events"]

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from twinprov.app.publish import PUBLISH_ROLE, Publication, publish_run
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.ledger import Ledger

log = logging.getLogger(__name__)

RECORDED_END_STATES = ("success", "failed")
"""Airflow end states of a task instance whose try the listener recorded (a skipped or
upstream-failed task never ran, so it has no events)."""


@dataclass(frozen=True)
class Drained:
    """What one drain of a worker's spool did."""

    events: int
    """Events moved from the spool into the ledger (new ones only)."""
    republished: list[Publication] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    """``dag_id/run_id`` → why its publication failed (it stays pending)."""


def drain_spool(settings: Settings) -> Drained:
    """Move this machine's spooled events into the ledger, then publish again every run that
    gained events and whose publish task has run already (else that task publishes it)."""
    ledger = Ledger(settings.ledger_url)
    added, touched = ledger.drain_spool(settings.spool_dir)
    republished: list[Publication] = []
    errors: dict[str, str] = {}
    for dag_id, run_id in sorted(touched):
        rec = ledger.run(dag_id, run_id)
        if rec is None:
            continue
        publish_started = rec.published_at is not None or any(
            e.payload.get("role") == PUBLISH_ROLE for e in ledger.events(dag_id, run_id)
        )
        if not publish_started:
            continue
        try:
            republished.append(publish_run(settings, dag_id, run_id))
        except TwinprovError as e:
            errors[f"{dag_id}/{run_id}"] = str(e)
            log.warning("twinprov: run %s/%s not published again: %s", dag_id, run_id, e)
    return Drained(added, republished, errors)


def missing_events(
    ledger: Ledger, dag_id: str, run_id: str, ended: Mapping[tuple[str, int], str]
) -> list[str]:
    """Task instances Airflow reports ended (``(task_id, map_index)`` → state) whose end the
    ledger does not hold: no try of theirs ended there, or Airflow says ``success`` and the
    ledger's latest try did not succeed. Named ``task`` or ``task[i]``, sorted."""
    latest: dict[tuple[str, int], tuple[int, set[str]]] = {}
    for e in ledger.events(dag_id, run_id):
        key = (e.task_id, e.map_index)
        num, states = latest.get(key, (0, set()))
        if e.try_number > num:
            latest[key] = (e.try_number, {e.state})
        elif e.try_number == num:
            states.add(e.state)
    missing = []
    for (task_id, map_index), state in ended.items():
        if state not in RECORDED_END_STATES:
            continue
        _num, states = latest.get((task_id, map_index), (0, set()))
        ends = states - {"running"}
        if not ends or (state == "success" and "success" not in ends):
            missing.append(task_id if map_index < 0 else f"{task_id}[{map_index}]")
    return sorted(missing)


def wait_for_events(
    settings: Settings,
    dag_id: str,
    run_id: str,
    ended: Mapping[tuple[str, int], str],
    timeout_s: float,
    *,
    poll_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Wait up to ``timeout_s`` until the ledger holds the end of every task instance of
    ``ended`` (this machine's spool is drained on each look); what is still missing then."""
    ledger = Ledger(settings.ledger_url)
    deadline = time.monotonic() + timeout_s
    while True:
        ledger.ingest_spool(settings.spool_dir)
        missing = missing_events(ledger, dag_id, run_id, ended)
        left = deadline - time.monotonic()
        if not missing or left <= 0:
            return missing
        sleep(min(poll_s, left))
