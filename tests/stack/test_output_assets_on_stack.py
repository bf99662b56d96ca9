"""Data-aware scheduling on twinprov's output assets, through the real scheduler of the native
stack: the demo workflow (A) emits an asset event for its checked region summary, carrying the
sha256, run IRI, crate and verdict; the hand-written example DAG ``drought_alert_digest`` (B),
scheduled on that asset, runs after A without being triggered, is captured (tagged
``twinprov``) and published from the DAG-run listener in the scheduler, and its provenance links
to A's output entity by checksum."""

from __future__ import annotations

import time

from tests.stack import checks
from tests.stack.services import Stack

A, B = "drought_early_warning", "drought_alert_digest"


def test_workflow_b_scheduled_on_a_output_runs_after_a_and_links_by_checksum(
    stack: Stack,
) -> None:
    stack.wait_dag(B)
    stack.rest("PATCH", f"/dags/{B}", json={"is_paused": False})
    a_run = stack.trigger(A)
    assert stack.wait_runs(A, [a_run], timeout=900)[a_run] == "success"
    summary_sha = next(
        o["sha256"]
        for e in checks.events(stack, A, a_run)
        if e.task_id == "classify_hazard" and e.payload.get("manifest")
        for o in e.payload["manifest"]["outputs"]
        if o["name"] == "summary"
    )
    # other tests of the session run A too (and B is not paused at creation): the run of B that
    # matters is the one whose consumed asset event came from this run of A
    deadline = time.monotonic() + 420
    rec = None
    seen: set[str] = set()
    while rec is None and time.monotonic() < deadline:
        page = stack.rest("GET", f"/dags/{B}/dagRuns", params={"limit": 100})
        for r in page["dag_runs"]:
            rid = r["dag_run_id"]
            if r["run_type"] != "asset_triggered" or rid in seen:
                continue
            if r["state"] not in ("success", "failed"):
                continue
            got = checks.ledger(stack).run(B, rid)
            published = got is not None and got.published_digest == got.stored_digest
            if got is None or not (published and got.published_digest):
                continue  # published by on_dag_run_success in the scheduler: not yet
            seen.add(rid)
            sources = [c.get("source_run_id") for c in got.info.get("consumed_assets") or []]
            if a_run in sources:
                assert r["state"] == "success", r
                rec = got
        time.sleep(2)
    assert rec is not None, f"no published run of {B} consumed the asset event of {A}/{a_run}"
    consumed = next(c for c in rec.info["consumed_assets"] if c.get("source_run_id") == a_run)
    extra = consumed["extra"]
    assert extra["sha256"] == summary_sha and extra["validation"] in ("passed", "failed")
    assert extra["run"] == checks.graph_iri(A, a_run) and consumed["source_run_id"] == a_run
    assert extra["crate"].endswith("/crate")
    triples = checks.store_triples(stack, rec.publication["graph"])
    used = "<http://www.w3.org/ns/prov#used>"
    entity = f"<urn:twinprov:data/sha256-{summary_sha}>"
    assert (f"<{rec.publication['graph']}>", used, entity) in triples
    informed = "<http://www.w3.org/ns/prov#wasInformedBy>"
    assert (f"<{rec.publication['graph']}>", informed, f"<{checks.graph_iri(A, a_run)}>") in triples
