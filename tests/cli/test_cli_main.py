"""The command line in-process (``twinprov.cli.main(argv)``), on the embedded default: the
parameter checks, the backend choice, and read commands that do not write."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from twinprov.cli import build_parser, main
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger, TaskEvent

OUTSIDE = """
name: outside_wf
params:
  count: {type: integer, default: 1, minimum: 0}
steps:
  - id: only
    command: [python, -c, "import os; open('o.txt', 'w').write(os.environ['TOKEN'][:0] + 'ok')"]
    secrets: [{env: TOKEN, variable: outside_token}]
    outputs: [{name: o, path: o.txt, media_type: text/plain}]
"""


@pytest.fixture
def outside_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A spec in a folder named by TWINPROV_WORKFLOWS_DIR, not the default one, whose step takes
    an Airflow variable as a secret."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "outside_wf.yaml"
    path.write_text(OUTSIDE)
    monkeypatch.setenv("TWINPROV_WORKFLOWS_DIR", str(folder))
    monkeypatch.setenv("AIRFLOW_VAR_OUTSIDE_TOKEN", "tok-123")
    return path


def test_params_of_a_spec_outside_the_default_folder_are_checked(
    outside_spec: Path, twinprov_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "outside_wf", "-p", "count=-1"]) == 2
    err = capsys.readouterr().err
    assert "count=-1: must be at least 0" in err, err
    assert main(["run", "outside_wf", "-p", "nope=1"]) == 2
    assert "unknown parameter" in capsys.readouterr().err
    assert not (twinprov_home / "ledger.sqlite").exists() or not Ledger(
        Settings.load().ledger_url
    ).runs(), "a refused run must start nothing"


def test_backend_choices_and_no_default_override() -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "w"]).backend is None
    for target in ("local", "kubernetes", "interlink"):
        assert parser.parse_args(["run", "w", "--backend", target]).backend == target


@pytest.mark.usefixtures("airflow_db")
def test_run_with_a_variable_secret_then_show_and_export_write_nothing(
    outside_spec: Path, twinprov_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `twinprov run` used to apply --backend local always, which re-checked the spec and refused
    # its `variable:` secret ("secrets[0].field: only with 'connection:'")
    assert main(["run", "outside_wf", "--json"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out  # Airflow's own log lines share stdout in-process
    run, _ = json.JSONDecoder().raw_decode(out[out.index('{\n  "dag_id"') :])
    assert run["state"] == "success"
    settings = Settings.load()
    # a late event in the spool: a read command must leave it there and the ledger unchanged
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    late = settings.spool_dir / "late-event.jsonl"
    event = TaskEvent(run["dag_id"], run["run_id"], "late", -1, 1, "success", {})
    late.write_text(json.dumps({"event": asdict(event), "run_info": {}}) + "\n")
    ledger_file = Path(settings.ledger_url.removeprefix("sqlite:///"))
    before = hashlib.sha256(ledger_file.read_bytes()).hexdigest()
    rec = Ledger(settings.ledger_url).run(run["dag_id"], run["run_id"])
    assert rec is not None and rec.published_digest
    assert main(["show", run["run_id"], "--json"]) == 0
    out = capsys.readouterr().out
    shown, _ = json.JSONDecoder().raw_decode(out[out.index('{\n  "dag_id"') :])
    assert [s["task_id"] for s in shown["steps"]] == ["only"]
    for fmt in ("provjson", "turtle"):
        assert main(["export", run["run_id"], "--format", fmt]) == 0
        assert run["run_id"] in capsys.readouterr().out
    assert late.exists(), "a read command ingested the spool"
    assert hashlib.sha256(ledger_file.read_bytes()).hexdigest() == before
    again = Ledger(settings.ledger_url).run(run["dag_id"], run["run_id"])
    assert again is not None and again.published_digest == rec.published_digest
