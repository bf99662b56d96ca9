"""``twinprov rerun`` of a hand-written DAG's run, through real Airflow (``dag.test()``): the
same DAG re-triggered with the original's conf, its outlets' bytes compared with the original's
(the verdict of spec reruns), and the verdict attached to each outlet's Airflow Asset as an
asset event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import add_dag_file, asset_events
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

SCALER = """
from pathlib import Path

from airflow.sdk import Asset, dag, task

DIR = Path(%(dir)r)
VALUES = Asset(uri=(DIR / "values.txt").as_uri())
SCALED = Asset(uri=(DIR / "scaled.txt").as_uri())


@dag(dag_id="scaler", schedule=None, tags=["twinprov"], params={"factor": 2})
def scaler():
    @task(inlets=[VALUES], outlets=[SCALED])
    def scale(params=None):
        offset = int((DIR / "offset.txt").read_text())  # read, but not declared as an inlet
        values = [int(v) for v in (DIR / "values.txt").read_text().split()]
        scaled = [v * int(params["factor"]) + offset for v in values]
        (DIR / "scaled.txt").write_text(" ".join(map(str, scaled)))

    scale()


scaler()
"""


def _rerun(ref: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    from twinprov.cli import main

    capsys.readouterr()
    code = main(["rerun", ref, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_rerun_of_a_hand_written_dag_compares_its_outlets(
    airflow_db: None,
    twinprov_home: Path,
    dags_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from twinprov.dags.runner import run_workflow

    data = tmp_path / "data"
    data.mkdir()
    (data / "values.txt").write_text("1 2 3")
    (data / "offset.txt").write_text("0")
    add_dag_file(dags_folder, "scaler.py", SCALER % {"dir": str(data)})
    original = run_workflow("scaler", {"factor": 3})
    assert original.state == "success" and (data / "scaled.txt").read_text() == "3 6 9"
    ref = f"scaler/{original.run_id}"
    ledger = Ledger(Settings.load().ledger_url)
    out_uri = (data / "scaled.txt").as_uri()

    # same DAG, same conf (factor 3, not the default 2), same bytes: reproduced
    code, verdict = _rerun(ref, capsys)
    assert (code, verdict["status"]) == (0, "reproduced"), verdict
    assert (data / "scaled.txt").read_text() == "3 6 9"
    (scaled,) = verdict["outputs"]
    assert (scaled["step"], scaled["output"], scaled["status"]) == (
        "scale",
        "scaled.txt",
        "identical",
    )
    rerun_id = verdict["run"].split("/", 1)[1]
    rec = ledger.run("scaler", rerun_id)
    assert rec is not None and rec.publication["verdict"]["status"] == "reproduced"
    assert rec.info["conf"] == {"factor": 3, "rerun_of": ref}
    (event,) = [e for e in asset_events(rerun_id)[out_uri] if e.get("kind") == "reproducibility"]
    assert event["verdict"] == "reproduced" and event["status"] == "identical"
    assert event["sha256"] == event["original_sha256"] == scaled["original_sha256"]
    assert event["original_run"] == verdict["original_run"]

    # a file the task reads without declaring it changed: the bytes differ, the task is named
    (data / "offset.txt").write_text("1")
    code, verdict = _rerun(ref, capsys)
    assert (code, verdict["status"]) == (1, "differs"), verdict
    assert verdict["first_divergent_step"] == "scale"
    assert verdict["outputs"][0]["status"] == "differs"
    rerun_id = verdict["run"].split("/", 1)[1]
    (event,) = [e for e in asset_events(rerun_id)[out_uri] if e.get("kind") == "reproducibility"]
    assert event["verdict"] == "differs" and event["sha256"] != event["original_sha256"]

    # a declared input (inlet) changed: not a reproducibility failure, the input is named
    (data / "offset.txt").write_text("0")
    (data / "values.txt").write_text("1 2 4")
    code, verdict = _rerun(ref, capsys)
    assert verdict["status"] == "inputs_changed", verdict
    assert any("scale.values.txt" in n for n in verdict["notes"])
