"""How ``twinprov cwl-runner`` lays the CWL output object out in ``--outdir``
(``dags/cwl_runner.py``), on real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from twinprov.dags.cwl_runner import _copy_out


def _file(path: Path, text: str) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return {"class": "File", "location": path.as_uri(), "basename": path.name}


def test_two_outputs_with_one_name_stay_two_files(tmp_path: Path) -> None:
    """Two steps that each write ``out`` (the conformance test nameroot_nameext_generated):
    both reach the output folder, under distinct names; the same file reached twice is one."""
    a = _file(tmp_path / "step1" / "out", "root\n")
    b = _file(tmp_path / "step2" / "out", "ext\n")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    got = _copy_out({"rootFile": a, "extFile": b, "again": dict(a)}, outdir)
    paths = {k: Path(v["path"]) for k, v in got.items()}
    assert paths["rootFile"] != paths["extFile"] and paths["again"] == paths["rootFile"]
    assert paths["rootFile"].read_text() == "root\n" and paths["extFile"].read_text() == "ext\n"
    assert got["extFile"]["basename"] == paths["extFile"].name == "out_2"
    assert {p.name for p in outdir.iterdir()} == {"out", "out_2"}
    digest = hashlib.sha256(b"ext\n").hexdigest()
    assert hashlib.sha256(paths["extFile"].read_bytes()).hexdigest() == digest
