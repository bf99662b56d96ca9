"""cwl_exec: a tool with a DockerRequirement on a machine without a container engine (cwltool
as a library, under the interpreter that has it). Runs on the host only when allowed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from twinprov.provenance import cwl_exec
from twinprov.provenance.cwl_doc import cwl_python

TOOL = (Path(__file__).resolve().parents[1] / "data" / "cwl" / "say_docker.cwl").read_text()
"""A tool with a DockerRequirement (shared with the other CWL error test)."""


def _run(tmp_path: Path, on_host: bool) -> subprocess.CompletedProcess[str]:
    tool, job = tmp_path / "tool.cwl", tmp_path / "job.json"
    tool.write_text(TOOL)
    job.write_text(json.dumps({"msg": "hello"}))
    env = {**os.environ, cwl_exec.DOCKER_ON_HOST_ENV: "1" if on_host else "0"}
    argv = [cwl_python(), cwl_exec.__file__, "--output", str(tmp_path / "out.json"), "--"]
    argv += ["--outdir", str(tmp_path / "out"), "--quiet", "--no-container", str(tool), str(job)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.parametrize("on_host", [False, True])
def test_docker_requirement_runs_on_host_only_when_allowed(tmp_path: Path, on_host: bool) -> None:
    proc = _run(tmp_path, on_host)
    where = f"{tmp_path / 'tool.cwl'}:5:5:"  # the DockerRequirement, as written
    if not on_host:
        assert proc.returncode == 33, proc.stderr  # cwltool's "unsupported feature"
        assert where in proc.stderr and "DockerRequirement" in proc.stderr
        assert "cwl_docker_on_host" in proc.stderr
        assert not (tmp_path / "out.json").exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert f"{where} DockerRequirement (docker.io/library/debian:12) not honoured" in proc.stderr
    said = json.loads((tmp_path / "out.json").read_text())["said"]
    assert Path(said["path"]).read_text() == "hello\n"
