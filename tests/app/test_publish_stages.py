"""Publication stages in-process (``twinprov.app.publish``): a stage that fails becomes a gap
under its own name with a one-line reason, the others and the PROV files still publish, and a
later publication fills the gaps. The failures are real: an MLflow tracking server that does not
answer (a closed port on 127.0.0.1) and a run whose workflow spec copy has been deleted."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from twinprov.app.publish import AFTER_PROV, BEFORE_PROV, WITH_PROV, crate_dir, publish_run
from twinprov.dags.runner import run_workflow
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

TRACKED = """
name: tracked_wf
steps:
  - id: only
    mlflow: true
    command: [python, -c, "open('o.txt', 'w').write('tracked')"]
    outputs: [{name: o, path: o.txt, media_type: text/plain}]
"""


def test_the_stages_are_named_and_ordered() -> None:
    assert [s.name for s in BEFORE_PROV] == ["mlflow", "verdict"]
    assert [s.name for s in AFTER_PROV] == [
        "validation_report", "validations", "stac", "crate", "mlflow_tags", "openlineage"
    ]
    assert [s.name for s in WITH_PROV] == ["yprov"]


@pytest.mark.usefixtures("airflow_db")
def test_failed_stages_are_gaps_and_a_later_publication_fills_them(
    workflows_dir: Path, twinprov_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workflows_dir / "tracked.yaml").write_text(TRACKED)
    run = run_workflow(str(workflows_dir / "tracked.yaml"), {})
    assert run.state == "success"
    settings = Settings.load()
    first = publish_run(settings, run.dag_id, run.run_id)
    assert first.gaps == {}, first.gaps

    # break two stages for real: MLflow does not answer, the spec the run used is gone
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    down = dataclasses.replace(settings, mlflow_tracking_uri="http://127.0.0.1:9")
    crate = crate_dir(settings, run.dag_id, run.run_id)
    shutil.rmtree(crate)
    rec = Ledger(settings.ledger_url).run(run.dag_id, run.run_id)
    assert rec is not None
    snapshot = Path(rec.info["spec_snapshot"])
    kept = snapshot.read_bytes()
    snapshot.unlink()
    pub = publish_run(down, run.dag_id, run.run_id)
    assert set(pub.gaps) == {"mlflow", "crate"}, pub.gaps
    assert pub.gaps["mlflow"].startswith("MLflow at http://127.0.0.1:9 unreachable")
    assert all("\n" not in reason for reason in pub.gaps.values())
    # the essential part and the other stages are there
    assert pub.triples and pub.store_error is None
    assert all(Path(p).is_file() for p in pub.files.values())
    rec = Ledger(settings.ledger_url).run(run.dag_id, run.run_id)
    assert rec is not None and rec.publication["gaps"] == pub.gaps
    assert rec.published_digest == rec.stored_digest == pub.digest
    prov = json.loads(Path(pub.files["prov.json"]).read_text())
    assert prov["activity"], "the PROV document lost its activities"

    snapshot.write_bytes(kept)
    again = publish_run(settings, run.dag_id, run.run_id)
    assert again.gaps == {}
    assert (crate / "ro-crate-metadata.json").is_file()
    rec = Ledger(settings.ledger_url).run(run.dag_id, run.run_id)
    assert rec is not None and rec.publication["gaps"] == {}
