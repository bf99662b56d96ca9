"""Crates that travel: outputs too large to copy are named by sha256, found again in a data
folder after the crate and the data have moved, and packed with the crate for archiving.
Real Airflow (``dag.test()``), the real command line in-process (``twinprov.cli.main``)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.e2e.test_rerun import MAKE  # the same grid maker
from twinprov.cli import main

SPEC = """
name: travel_wf
params:
  noise: {type: number, default: 0.0, minimum: 0}
steps:
  - id: make
    command: [python, "${workflow_dir}/make.py", "${params.noise}"]
    outputs:
      - name: grid
        path: grid.nc
        media_type: application/x-netcdf
        compare: {rtol: 0.0, atol: 0.001}
"""



def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and stdout without the log lines Airflow's tasks print there in-process."""
    code = main(list(argv))
    lines = capsys.readouterr().out.splitlines()
    start = next((i for i, line in enumerate(lines) if line in ("{", "[")), None)
    return code, "\n".join(lines[start:] if start is not None else lines[-1:])


def test_moved_crate_finds_its_data_by_checksum_and_reruns(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The original's grid is referenced by sha256 (copy threshold 0). Zipped ``--with-data``,
    the archive carries its bytes. Then the crate goes to another folder, the grid to a data
    folder under another name, the original run folder is gone: a rerun on another home with
    ``--resolve`` finds the grid by checksum, and the unseeded noise (1e-6) is judged against
    the original's values within the declared tolerance, which needs the original bytes."""
    from twinprov.dags.runner import run_workflow

    monkeypatch.setenv("AIRFLOW__TWINPROV__CRATE_COPY_THRESHOLD", "0")
    spec = workflows_dir / "travel.yaml"
    spec.write_text(SPEC)
    (workflows_dir / "make.py").write_text(MAKE)
    first = run_workflow(str(spec), {"noise": 1e-6})
    assert first.state == "success"
    code, out = _cli(capsys, "show", first.run_id, "--json")
    shown = json.loads(out)
    crate = Path(shown["crate"])
    (grid,) = [o for s in shown["steps"] for o in s["outputs"]]
    graph = {
        e["@id"]: e for e in json.loads((crate / "ro-crate-metadata.json").read_text())["@graph"]
    }
    entity = graph[f"#sha256-{grid['sha256']}"]  # named by its checksum, the path a hint
    assert entity["contentUrl"] == Path(grid["path"]).resolve().as_uri()
    assert entity["contentUrl"] not in graph  # no longer its id

    code, out = _cli(capsys, "crate", first.run_id, "--zip", "--with-data")
    assert code == 0
    with zipfile.ZipFile(out.strip()) as z:
        assert "ro-crate-metadata.json" in z.namelist()
        packed = z.read(f"data/sha256-{grid['sha256']}")
    assert hashlib.sha256(packed).hexdigest() == grid["sha256"]

    # the crate and the data go their own ways; the run's folder is gone
    moved = tmp_path / "mailed" / "crate"
    shutil.copytree(crate, moved)
    data = tmp_path / "archive" / "2026" / "renamed-grid.bin"
    data.parent.mkdir(parents=True)
    shutil.move(grid["path"], data)
    shutil.rmtree(crate.parent)
    monkeypatch.setenv("TWINPROV_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.delenv("TWINPROV_WORKFLOWS_DIR")

    code, out = _cli(capsys, "rerun", str(moved), "--resolve", str(tmp_path / "archive"), "--json")
    verdict = json.loads(out)
    assert code == 0, verdict
    assert verdict["status"] == "reproduced"
    (o,) = verdict["outputs"]
    assert o["status"] == "equal_within_tolerance", o  # read the original's bytes: found
