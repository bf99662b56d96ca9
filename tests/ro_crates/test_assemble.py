"""Ledger + spec → CrateInput: what is read, what is left out, what is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.ro_crates.conftest import MINI_SPEC, ODD_NAME, StepRun, load_failing_demo, record_run
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import RunNotFoundError
from twinprov.ro_crates.assemble import crate_input_from_ledger, media_type_of, workflow_info
from twinprov.ro_crates.errors import CrateInputError, SpecChangedError

RUN = "manual__2026-11-27T14:10:00.000000+00:00"


def mini_spec(tmp_path: Path) -> Path:
    """A private copy of the mini workflow folder (tests may edit it)."""
    folder = tmp_path / "workflows"
    shutil.copytree(MINI_SPEC.parent, folder)
    return folder / MINI_SPEC.name


def mini_success(settings: Settings, spec: Path, **params: object) -> Path:
    return record_run(
        settings,
        spec,
        RUN,
        [
            StepRun("make", {"raw": b"1 2 3\n", "big": b"\0" * 5000}),
            StepRun("summarise", {"summary": b"n,mean\n3,2\n"}),
            StepRun("report", {"report": b'{"ok": true}\n'}),
        ],
        params=params,
    )


def test_workflow_info_reads_the_spec(tmp_path: Path) -> None:
    wf = workflow_info(mini_spec(tmp_path))
    assert [s.id for s in wf.steps] == ["make", "summarise", "report"]
    assert [s.position for s in wf.steps] == [0, 1, 2]
    make, summarise, report = wf.steps
    assert make.params == ("seed",)
    assert set(summarise.params) == {"threshold", "mode"}
    assert summarise.inputs[0].producer == "make" and summarise.inputs[0].item == "raw"
    assert report.inputs[0].source == "summarise.summary"
    assert make.image is not None and make.image.startswith("ghcr.io/example/maker:1.2@sha256:")
    assert make.sources == ("mini/step.py",)
    assert [s.rel_path for s in wf.sources] == ["mini/step.py"]
    assert [(p.name, p.type) for p in wf.params] == [
        ("seed", "integer"),
        ("mode", "string"),
        ("threshold", "number"),
    ]
    assert wf.license == "MIT" and wf.authors[0].orcid == "0000-0002-1825-0097"


def test_from_ledger_success(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    ws = mini_success(settings, spec, mode="careful")
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    assert data.run.state == "success"
    assert data.run.triggering_user == "ada"
    assert data.run.params["mode"] == "careful"
    assert data.run.airflow_version == "3.3.2"
    assert data.run.iri == "urn:twinprov:run/mini_crate/" + RUN.replace(":", "%3A").replace(
        "+", "%2B"
    )
    # the publish task's events are left out
    assert [t.task_id for t in data.tries] == ["make", "summarise", "report"]
    make, summarise, report = data.tries
    assert {o.name for o in make.outputs} == {"raw", "big"}
    raw = next(o for o in make.outputs if o.name == "raw")
    assert raw.path == ws / ODD_NAME and raw.rel_path == ODD_NAME
    assert raw.media_type == "text/plain" and raw.size == 6
    assert raw.iri == f"urn:twinprov:data/sha256-{raw.sha256}"
    # an input gets the media type its producer declared
    assert summarise.inputs[0].media_type == "text/plain"
    assert summarise.inputs[0].sha256 == raw.sha256
    assert summarise.env == {"MINI_MODE": "careful"}
    assert summarise.resource_usage["cpu_user_s"] == pytest.approx(0.2)
    assert summarise.resource_usage["duration_s"] == pytest.approx(0.5)
    assert make.environment["kind"] == "python"
    assert report.exit_code == 0 and report.error is None
    assert report.iri is not None and report.iri.endswith("/task/report/-1/1")
    assert sorted(data.prov_files) == ["prov.json", "prov.provn", "prov.ttl"]
    assert all(p.is_file() for p in data.prov_files.values())
    assert data.run.end == max(t.end for t in data.tries if t.end)


def test_from_ledger_failed_real_events(settings: Settings, tmp_path: Path) -> None:
    dag_id, run_id, _ws = load_failing_demo(settings, tmp_path)
    data = crate_input_from_ledger(settings, dag_id, run_id)
    assert data.run.state == "failed"
    assert [(t.task_id, t.state) for t in data.tries] == [
        ("first", "success"),
        ("second", "failed"),
    ]
    second = data.tries[1]
    assert second.error == "step second failed: exit code 3"
    assert second.exit_code == 3 and second.failed
    assert [i.name for i in second.inputs] == ["a"]
    assert [s.id for s in data.workflow.steps] == ["first", "second", "third"]


def test_unknown_run(settings: Settings) -> None:
    with pytest.raises(RunNotFoundError):
        crate_input_from_ledger(settings, "nope", "nothing")


def test_changed_spec_is_refused(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    spec.write_text(spec.read_text(encoding="utf-8") + "\n# edited after the run\n", "utf-8")
    with pytest.raises(SpecChangedError, match="changed since the run"):
        crate_input_from_ledger(settings, "mini_crate", RUN)


def test_missing_spec_is_refused(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    spec.unlink()
    with pytest.raises(CrateInputError, match="cannot read the workflow spec"):
        crate_input_from_ledger(settings, "mini_crate", RUN)


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("a.nc", "application/x-netcdf"),
        ("x/y.CSV", "text/csv"),
        ("step.py", "text/x-python"),
        ("blob", "application/octet-stream"),
    ],
)
def test_media_type_of(name: str, media: str) -> None:
    assert media_type_of(name) == media


def test_publication_links_are_read(settings: Settings, tmp_path: Path) -> None:
    """STAC Items, MLflow runs and validation reports the publication recorded."""
    from twinprov.provenance.ledger import Ledger

    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    item = tmp_path / "stac" / "raw-item.json"
    item.parent.mkdir()
    item.write_text('{"type": "Feature"}', encoding="utf-8")
    report = tmp_path / "raw.gx.json"
    report.write_text('{"success": true}', encoding="utf-8")
    ledger = Ledger(settings.ledger_url)
    rec = ledger.run("mini_crate", RUN)
    assert rec is not None
    raw_sha = "9" * 64
    publication = {
        **rec.publication,
        "stac_items": {"raw": str(item), "gone": str(tmp_path / "missing.json")},
        "mlflow_runs": [
            {
                "run_id": "r1",
                "uri": "runs:/r1",
                "task_id": "summarise",
                "try_number": 1,
                "metrics": {"rmse": 0.5, "flag": True},
                "tracking_uri": "sqlite:///x.db",
                "experiment_id": "3",
            }
        ],
        "validations": [
            {"output": "raw", "sha256": raw_sha, "success": True, "report_json": str(report)},
            {"output": "bad"},
        ],
    }
    ledger.update_run("mini_crate", RUN, publication=publication)
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    [stac] = data.stac_items
    make = data.tries[0]
    assert stac.path == item and stac.about_sha256 == make.outputs[0].sha256
    [ml] = data.mlflow_runs
    assert (ml.run_id, ml.uri, ml.task_id, ml.try_number) == ("r1", "runs:/r1", "summarise", 1)
    assert ml.metrics == {"rmse": 0.5} and ml.experiment_id == "3"
    [v] = data.validations
    assert (v.output, v.sha256, v.success, v.report_json) == ("raw", raw_sha, True, report)
