"""The crates pass rocrate-validator's Provenance Run Crate 0.5 checks, offline.

Each validation takes a few seconds (SHACL over the whole profile chain: Provenance Run Crate →
Workflow Run Crate → Process Run Crate, Workflow RO-Crate, RO-Crate 1.1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ro_crates.conftest import load_failing_demo
from tests.ro_crates.test_assemble import RUN, mini_spec, mini_success
from tests.ro_crates.test_crate import hand_built
from twinprov.provenance.config import Settings
from twinprov.ro_crates.assemble import crate_input_from_ledger
from twinprov.ro_crates.conformance import check_conformance, prefill_context_cache
from twinprov.ro_crates.crate import build_crate
from twinprov.ro_crates.model import CrateInput, RunInfo

pytest.importorskip("rocrate_validator", reason="needs roc-validator")


def assert_conforms(crate: Path) -> None:
    report = check_conformance(crate)
    assert report.skipped_checks == 0, report.raw.get("skipped_check_details")
    assert report.required == 0, "\n".join(report.messages("REQUIRED"))
    assert report.conforms


def test_success_crate_conforms(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    # small threshold: one output is referenced by sha256 (its path a hint); another has an odd
    # name
    assert_conforms(build_crate(data, tmp_path / "crate", copy_threshold_bytes=1000))


def test_failed_run_crate_conforms(settings: Settings, tmp_path: Path) -> None:
    dag_id, run_id, _ws = load_failing_demo(settings, tmp_path)
    crate = build_crate(crate_input_from_ledger(settings, dag_id, run_id), tmp_path / "crate")
    assert_conforms(crate)


def test_hand_built_crate_conforms(tmp_path: Path) -> None:
    assert_conforms(
        build_crate(hand_built(tmp_path), tmp_path / "crate", copy_threshold_bytes=1024)
    )


def test_a_run_where_no_step_ran(tmp_path: Path) -> None:
    """The one case the checks cannot pass: a workflow that orchestrated no tool at all.

    The validator wants every tool in the workflow's ``hasPart`` to be some action's
    instrument, and at least one tool there; with no step run, only one of the two can hold.
    The crate keeps ``hasPart`` for orchestrated tools (none) and drops the OrganizeAction,
    which must name at least one step execution; that leaves exactly one REQUIRED issue.
    """
    data = hand_built(tmp_path)
    nothing = CrateInput(data.workflow, RunInfo("mini_crate", "r0", "failed"), tries=())
    crate = build_crate(nothing, tmp_path / "crate")
    doc = json.loads((crate / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    assert "OrganizeAction" not in {str(e["@type"]) for e in doc["@graph"]}
    report = check_conformance(crate)
    assert [i.check for i in report.issues if i.severity == "REQUIRED"] == [
        "provenance-run-crate-0.5_1.1"
    ]


def test_a_broken_crate_is_caught(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    crate = build_crate(crate_input_from_ledger(settings, "mini_crate", RUN), tmp_path / "crate")
    meta = crate / "ro-crate-metadata.json"
    doc = json.loads(meta.read_text(encoding="utf-8"))
    for e in doc["@graph"]:
        if e["@id"] == "#control/make":
            del e["instrument"]  # a ControlAction MUST name its HowToStep
    meta.write_text(json.dumps(doc), encoding="utf-8")
    report = check_conformance(crate)
    assert report.required >= 1
    assert any("ControlAction" in m for m in report.messages("REQUIRED"))


def test_context_cache_answers_every_spelling(tmp_path: Path) -> None:
    requests_cache = pytest.importorskip("requests_cache")
    cache = tmp_path / "http-cache"
    urls = prefill_context_cache(cache)
    assert "https://w3id.org/ro/crate/1.1/context" in urls
    assert "http://w3id.org/ro/terms/workflow-run/context" in urls
    assert "https://w3id.org/ro/crate/1.1/context.json" in urls
    session = requests_cache.CachedSession(str(cache), backend="sqlite", expire_after=-1)
    session.settings.only_if_cached = True
    for url in urls:
        response = session.get(url)
        assert response.from_cache and response.status_code == 200
        assert "@context" in response.json()
    assert session.get("https://example.org/elsewhere").status_code == 504
