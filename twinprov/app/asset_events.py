"""What a rerun's verdict says about each output asset, as the ``extra`` of an Airflow asset
event (the Airflow side adds the events: :mod:`twinprov.airflow.dag_capture`).

A spec output's asset is ``twinprov://<workflow>/<step>/<output>``; a hand-written DAG's is
the outlet (``file://…``) its task declared or emitted. Reads the ledger; never writes it.
"""

from __future__ import annotations

__all__ = ["VERDICT_EVENT_KIND", "verdict_events"]

from typing import Any

from twinprov.provenance.assets import DAG_KIND, output_uri
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

VERDICT_EVENT_KIND = "reproducibility"
"""``extra["kind"]`` of a verdict's asset event (an output's own event has none)."""


def _hand_written_outlets(ledger: Ledger, dag_id: str, run_id: str) -> dict[tuple[str, str], str]:
    """(task id, output name) → the outlet's URI, from the run's recorded assets."""
    uris: dict[tuple[str, str], str] = {}
    for e in ledger.events(dag_id, run_id):
        for a in e.payload.get("assets") or ():
            if isinstance(a, dict) and a.get("direction") == "outlet" and a.get("uri"):
                uris[(e.task_id, str(a.get("name")))] = str(a["uri"])
    return uris


def verdict_events(
    settings: Settings, dag_id: str, run_id: str
) -> list[tuple[str, dict[str, Any]]]:
    """``(asset URI, extra)`` for every output a rerun's published verdict compared (none for a
    run that is not a rerun, or not published yet): the run's verdict, the output's status, its
    sha256 now and in the original, the original run, the rerun's PROV run IRI, crate and
    verdict file."""
    from twinprov.app.rerun import workflow_of

    ledger = Ledger(settings.ledger_url)
    rec = ledger.run(dag_id, run_id)
    verdict = rec.publication.get("verdict") if rec is not None else None
    if rec is None or not isinstance(verdict, dict) or not verdict.get("outputs"):
        return []
    outlets = (
        _hand_written_outlets(ledger, dag_id, run_id)
        if rec.info.get("dag_kind") == DAG_KIND
        else None
    )
    common = {
        "kind": VERDICT_EVENT_KIND,
        "verdict": verdict.get("status"),
        "original_run": verdict.get("original_run"),
        "run": rec.publication.get("graph"),
        "dag_id": dag_id,
        "run_id": run_id,
        "crate": rec.publication.get("crate"),
        "verdict_file": verdict.get("file"),
    }
    events = []
    for o in verdict["outputs"]:
        if not isinstance(o, dict) or not o.get("rerun_sha256"):
            continue  # missing from the rerun: no asset of the rerun to attach it to
        key = (str(o.get("step")), str(o.get("output")))
        uri = outlets.get(key) if outlets is not None else output_uri(workflow_of(dag_id), *key)
        if uri is None:
            continue
        extra = {
            **common,
            "output": f"{key[0]}.{key[1]}",
            "status": o.get("status"),
            "sha256": o.get("rerun_sha256"),
            "original_sha256": o.get("original_sha256"),
            "rule": o.get("rule"),
        }
        events.append((uri, {k: v for k, v in extra.items() if v is not None}))
    return events
