"""The typed run record: one to_dict/from_dict per record (round trips), and the rules that
exist once — merging a try's events, the try that counts, the run state, validation and verdict
readings."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from twinprov.provenance.record import (
    INTERRUPTED,
    FileRecord,
    Manifest,
    OutputComparison,
    RunRecord,
    StepTry,
    TaskEvent,
    ValidationResult,
    Verdict,
    collapse_tries,
    latest_tries,
    run_state,
)

text = st.text(min_size=1, max_size=12)
sha = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
files = st.builds(FileRecord, text, text, sha, st.integers(0, 2**40), text)


@given(files)
def test_file_record_round_trip(f: FileRecord) -> None:
    assert FileRecord.from_dict(json.loads(json.dumps(f.to_dict()))) == f


@given(st.lists(files, max_size=4), st.integers(-1, 255), text)
def test_manifest_round_trip(outputs: list[FileRecord], code: int, host: str) -> None:
    m = Manifest(exit_code=code, outputs=tuple(outputs), host=host, errors=("e",))
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_manifest_reads_the_wrapper_shape() -> None:
    m = Manifest.from_dict(
        {"exit_code": 0, "host": "n1", "duration_s": 1.5,
         "outputs": [{"name": "o", "path": "o.nc", "abs_path": "/w/o.nc", "sha256": "ab",
                      "size": 3, "media_type": "application/x-netcdf"}]}
    )
    assert m.outputs == (FileRecord("o", "/w/o.nc", "ab", 3, "application/x-netcdf"),)


@given(st.lists(st.sampled_from(["identical", "differs", "missing", "new",
                                 "equal_within_tolerance"]), max_size=4),
       st.sampled_from(["reproduced", "differs", "failed", "inputs_changed"]))
def test_verdict_round_trip_and_exit_code(statuses: list[str], status: str) -> None:
    outs = tuple(OutputComparison("s", f"o{i}", x, "a" * 64, None, "r")
                 for i, x in enumerate(statuses))
    v = Verdict(status, "urn:run", "/c", outs, "s", ("n",))
    d = json.loads(json.dumps(v.to_dict()))
    assert Verdict.from_dict(d) == v
    assert d["exit_code"] == {"reproduced": 0, "differs": 1}.get(status, 2)
    assert [o.same for o in v.outputs] == [
        x in ("identical", "equal_within_tolerance") for x in statuses
    ]
    assert Verdict.failed("why").to_dict()["exit_code"] == 2


def test_validation_result_from_the_ledger_payload() -> None:
    payload = {"output": "spi", "step": "compute_spi", "expected_sha256": "ab", "sha256": "zz",
               "success": False, "failed_expectations": ["expect_x(v)"], "evaluated": 4}
    t = StepTry("validate_spi", -1, 2, "success", payload={"validation": payload})
    v = t.validation
    assert v is not None and v.sha256 == "ab" and not v.passed
    assert (v.task_id, v.try_number) == ("validate_spi", 2)
    assert ValidationResult.from_dict(v.to_dict()) == v
    assert StepTry("make", -1, 1, "success").validation is None


def test_run_and_event_round_trip() -> None:
    r = RunRecord("d", "r", "t0", {"params": {"seed": 1}}, "success",
                  publication={"verdict": Verdict("reproduced", "urn:x").to_dict()})
    assert RunRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert r.params == {"seed": 1} and r.verdict == Verdict("reproduced", "urn:x")
    e = TaskEvent("d", "r", "t", -1, 1, "running", {"a": 1})
    assert TaskEvent.from_dict(json.loads(json.dumps(e.to_dict()))) == e


def _ev(task: str, try_number: int, state: str, **payload: object) -> TaskEvent:
    return TaskEvent("d", "r", task, -1, try_number, state, payload)


def test_the_last_try_decides_and_a_silent_try_is_interrupted() -> None:
    tries = collapse_tries([
        _ev("a", 1, "running", start_date="1"),
        _ev("a", 2, "running", start_date="2"),
        _ev("a", 2, "success", end_date="3"),
        _ev("b", 1, "running", start_date="1"),
        _ev("b", 1, "failed", error="boom"),
    ])
    by = {(t.task_id, t.try_number): t for t in tries}
    assert by[("a", 1)].state == INTERRUPTED and "killed or lost" in (by[("a", 1)].error or "")
    assert {(t.task_id, t.try_number) for t in latest_tries(tries)} == {("a", 2), ("b", 1)}
    assert run_state(tries) == "failed"
    assert run_state([t for t in tries if t.task_id == "a"]) == "success"
    assert run_state([]) == "running"
