"""What one run did, as the command line (``twinprov show --json``) and the run pages show it,
and the SPARQL queries both offer. Reads the ledger; never writes it."""

from __future__ import annotations

from typing import Any

from twinprov.app.publish import PUBLISH_ROLE
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import RunNotFoundError
from twinprov.provenance.ledger import Ledger, RunRecord
from twinprov.provenance.record import collapse_tries, run_state

__all__ = ["LINEAGE_QUERY", "RUNS_USING_QUERY", "find_run", "run_summary"]

LINEAGE_QUERY = """\
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
PREFIX tp: <urn:twinprov:vocab#>
SELECT ?step ?output ?sha256 ?input WHERE {
  GRAPH <%(graph)s> {
    ?act a tp:TaskTry ; tp:taskId ?step ; tp:state "success" .
    ?out prov:wasGeneratedBy ?act ; rdfs:label ?output ; tp:sha256 ?sha256 .
    OPTIONAL { ?out prov:wasDerivedFrom ?in . ?in rdfs:label ?input }
  }
} ORDER BY ?step ?output ?input
"""

RUNS_USING_QUERY = """\
PREFIX prov: <http://www.w3.org/ns/prov#>
PREFIX tp: <urn:twinprov:vocab#>
SELECT DISTINCT ?dag ?run WHERE {
  {
    ?act prov:used <%(entity)s> ; prov:wasInformedBy ?r .
    FILTER NOT EXISTS { ?act a tp:WorkflowRun }
  } UNION {
    ?r prov:used <%(entity)s> .
  }
  ?r a tp:WorkflowRun ; tp:dagId ?dag ; tp:runId ?run .
} ORDER BY ?run
"""
"""Runs that used an entity: a task of the run read it (a spec step's input, a hand-written
task's inlet), or the run itself did (started by an Airflow asset event announcing it). A run
is informed by the upstream run whose asset event started it: that one did not use it."""


def find_run(ledger: Ledger, ref: str) -> RunRecord:
    """A run named by ``run_id``, ``dag_id/run_id`` or ``latest``."""
    runs = ledger.runs()
    if ref == "latest":
        if not runs:
            raise RunNotFoundError("no runs recorded yet; start one with `twinprov run WORKFLOW`")
        return max(runs, key=lambda r: r.first_seen)
    if "/" in ref:
        dag_id, run_id = ref.split("/", 1)
        matches = [r for r in runs if r.dag_id == dag_id and r.run_id == run_id]
    else:
        matches = [r for r in runs if r.run_id == ref]
    if not matches:
        raise RunNotFoundError(f"no recorded run '{ref}'; `twinprov runs` lists them")
    if len(matches) > 1:
        names = ", ".join(f"{r.dag_id}/{r.run_id}" for r in matches)
        raise RunNotFoundError(f"'{ref}' is ambiguous; name one of: {names}")
    return matches[0]


def run_summary(settings: Settings, rec: RunRecord) -> dict[str, Any]:
    """The ``twinprov show --json`` document of one run."""
    ledger = Ledger(settings.ledger_url)  # read only: spooled events wait for publication
    tries = [
        t
        for t in collapse_tries(ledger.events(rec.dag_id, rec.run_id))
        if t.payload.get("role") != PUBLISH_ROLE
    ]
    steps = []
    validations = []
    for t in tries:
        if (v := t.validation) is not None:
            validations.append(v.to_dict())
            continue
        p = t.payload
        env = p.get("environment") or {}
        steps.append(
            {
                "task_id": t.task_id,
                "map_index": t.map_index,
                "state": t.state,
                "try_number": t.try_number,
                "target": p.get("target"),
                "image": p.get("image"),
                "image_digest": p.get("image_digest"),
                "environment_digest": env.get("digest") if isinstance(env, dict) else None,
                "start": t.start,
                "end": t.end,
                "exit_code": t.manifest_record.exit_code,
                "error": t.error,
                "outputs": [o.to_dict() for o in t.manifest_record.outputs],
            }
        )
    fresh = ledger.run(rec.dag_id, rec.run_id) or rec
    return {
        "dag_id": rec.dag_id,
        "run_id": rec.run_id,
        "state": fresh.state or run_state(tries),
        "start": rec.info.get("run_start"),
        "end": fresh.ended,
        "triggering_user": rec.info.get("triggering_user"),
        "params": rec.info.get("params", {}),
        "steps": steps,
        "prov": fresh.publication.get("files", {}),
        "graph": fresh.publication.get("graph"),
        "validations": validations,
        "validation_report": fresh.publication.get("validation_report"),
        "crate": fresh.publication.get("crate"),
        "stac_items": sorted((fresh.publication.get("stac_items") or {}).values()),
        "mlflow_runs": [
            {k: m.get(k) for k in ("run_id", "uri", "task_id", "try_number", "metrics", "models")}
            for m in fresh.publication.get("mlflow_runs") or []
        ],
        "gaps": fresh.publication.get("gaps") or {},
        "verdict": fresh.publication.get("verdict"),
        "yprov": fresh.publication.get("yprov"),
    }
