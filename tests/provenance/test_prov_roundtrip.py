"""PROV serialization round trip over generated ledger events (Hypothesis property test)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prov.model import ProvDocument

from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import TaskEvent
from twinprov.provenance.prov_model import RunFacts, build_document

_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)
_sha = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_t0 = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def _file(draw: st.DrawFn) -> dict:
    return {
        "name": draw(_name),
        "path": draw(_text),
        "sha256": draw(_sha),
        "size": draw(st.integers(0, 2**40)),
        "media_type": draw(st.sampled_from(["text/csv", "application/x-netcdf", "image/png"])),
    }


@st.composite
def _run(draw: st.DrawFn) -> tuple[RunFacts, list[TaskEvent]]:
    run_id = "manual__" + draw(_name) + "+00:00"
    params = draw(
        st.dictionaries(
            _name, st.one_of(st.integers(-(10**6), 10**6), _text, st.booleans()), max_size=4
        )
    )
    facts = RunFacts(
        "dag_" + draw(_name),
        run_id,
        {"params": params, "triggering_user": draw(_name), "airflow_version": "3.3.2"},
        draw(st.sampled_from(["success", "failed"])),
    )
    events = []
    for task_id in draw(st.lists(_name, min_size=1, max_size=4, unique=True)):
        for try_number in range(1, draw(st.integers(1, 3)) + 1):
            start = _t0 + timedelta(seconds=draw(st.integers(0, 10**6)))
            end = start + timedelta(seconds=draw(st.integers(0, 10**4)))
            final = draw(st.sampled_from(["success", "failed"]))
            manifest = {
                "exit_code": 0 if final == "success" else draw(st.integers(1, 255)),
                "inputs": draw(st.lists(_file(), max_size=2)),
                "outputs": draw(st.lists(_file(), max_size=3)),
                "duration_s": (end - start).total_seconds(),
            }
            events.append(
                TaskEvent(
                    facts.dag_id,
                    run_id,
                    task_id,
                    -1,
                    try_number,
                    "running",
                    {"start_date": start.isoformat(), "operator": "Op"},
                )
            )
            payload = {"end_date": end.isoformat(), "manifest": manifest}
            if final == "failed":
                payload["error"] = draw(_text)
            events.append(TaskEvent(facts.dag_id, run_id, task_id, -1, try_number, final, payload))
    return facts, events


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_run())
def test_provjson_turtle_provjson_round_trip(run: tuple[RunFacts, list[TaskEvent]]) -> None:
    facts, events = run
    doc = build_document(Ids(), facts, events)
    as_json = doc.serialize(format="json")
    from_json = ProvDocument.deserialize(content=as_json, format="json")
    turtle = from_json.serialize(format="rdf", rdf_format="turtle")
    from_turtle = ProvDocument.deserialize(content=turtle, format="rdf", rdf_format="turtle")
    back = ProvDocument.deserialize(content=from_turtle.serialize(format="json"), format="json")
    assert back == doc


def test_one_activity_per_try_and_retry_link() -> None:
    evs = [
        TaskEvent("d", "r", "t", -1, 1, "failed", {"start_date": _t0.isoformat(), "error": "x"}),
        TaskEvent("d", "r", "t", -1, 2, "success", {"start_date": _t0.isoformat()}),
    ]
    doc = build_document(Ids(), RunFacts("d", "r", {}, "success"), evs)
    turtle = doc.serialize(format="rdf", rdf_format="turtle")
    assert "<urn:twinprov:run/d/r/task/t/-1/1>" in turtle
    assert "twinprov:retryOf <urn:twinprov:run/d/r/task/t/-1/1>" in turtle
    assert 'twinprov:error "x"' in turtle
