"""`twinprov cwl-runner`: a CWL workflow through Airflow, like cwl-runner, with provenance; and a
few tests of the CWL v1.2 conformance suite through cwltest (the whole suite: make conformance)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TWINPROV = str(Path(sys.executable).with_name("twinprov"))
CATALOG = REPO / "tests" / "data" / "cwl" / "catalog.cwl"
CONFORMANCE = Path(os.environ.get("CWL_TESTS", REPO.parent / "shared" / "cwl-v1.2-conformance"))


def _run(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TWINPROV_HOME": str(home)}
    return subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False
    )


def test_cwl_workflow_runs_with_provenance(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    proc = _run(
        [
            TWINPROV,
            "cwl-runner",
            "--outdir",
            str(out),
            "--quiet",
            str(CATALOG),
            str(CATALOG.with_name("catalog.job.yml")),
        ],
        home,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout is the output object, nothing else
    assert result["lines"] == 4
    assert result["catalog"]["class"] == "Directory"
    assert sorted(p.name for p in (out / "catalog").iterdir()) == [
        f"item{i}.txt" for i in range(1, 5)
    ]
    show = json.loads(_run([TWINPROV, "show", "latest", "--json"], home, tmp_path).stdout)
    assert show["state"] == "success"
    make = next(s for s in show["steps"] if s["task_id"] == "make")
    assert make["image"] == "docker.io/library/bash:5.2"
    (catalog,) = make["outputs"]
    assert len(catalog["sha256"]) == 64  # the Directory, hashed as the manifest of its files
    turtle = _run([TWINPROV, "export", "latest", "--format", "turtle"], home, tmp_path).stdout
    assert "cwlProcess" in turtle and "CommandLineTool" in turtle
    assert f"sha256-{catalog['sha256']}" in turtle
    check = _run([TWINPROV, "crate", "latest", "--check"], home, tmp_path)
    assert check.returncode == 0, check.stderr
    assert "0 REQUIRED" in check.stderr
    meta = json.loads((Path(check.stdout.strip()) / "ro-crate-metadata.json").read_text())
    graph = {e["@id"]: e for e in meta["@graph"]}
    main = graph[graph["./"]["mainEntity"]["@id"]]
    assert main["@id"] == "workflow/catalog.cwl"
    assert graph[main["programmingLanguage"]["@id"]]["alternateName"] == "CWL"


SUBSET = ["nested_prefixes_arrays", "wf_wc_parseInt", "directory_output", "initial_workdir_expr"]


@pytest.mark.skipif(
    not (CONFORMANCE / "conformance_tests.yaml").is_file(),
    reason="the CWL v1.2 conformance tests are not here (CWL_TESTS)",
)
def test_conformance_subset(tmp_path: Path) -> None:
    """A few `required` conformance tests through cwltest (< 2 min; all: make conformance).
    (Not the suite's first test: cwltest 2.7 cannot select test 0 by name.)"""
    cwltest = str(Path(sys.executable).with_name("cwltest"))
    proc = _run(
        [
            cwltest,
            "--test",
            str(CONFORMANCE / "conformance_tests.yaml"),
            "--tool",
            TWINPROV,
            "-s",
            ",".join(SUBSET),
            "-j",
            "2",
            "--",
            "cwl-runner",
        ],
        tmp_path / "home",
        tmp_path,
    )
    assert "All tests passed" in proc.stdout + proc.stderr or proc.returncode == 0, (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
