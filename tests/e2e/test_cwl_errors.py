"""`twinprov cwl-runner` on what the local backend cannot do: the error names the feature, the
file and the line (exit code 33, as cwltool); a DockerRequirement runs on the host only while
the setting `cwl_docker_on_host` allows it, and the provenance says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TWINPROV = str(Path(sys.executable).with_name("twinprov"))

TOOL = (Path(__file__).resolve().parents[1] / "data" / "cwl" / "say_docker.cwl").read_text()
"""A tool with a DockerRequirement (shared with the other CWL error test)."""


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # its own Airflow DB: with the session's DB shared, a run of this test left that SQLite file
    # unreadable ("disk I/O error") for the tests after it (cause not found yet; see the note)
    environ = {
        **os.environ,
        "TWINPROV_HOME": str(tmp_path / "home"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        **env,
    }
    return subprocess.run(
        [TWINPROV, *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )


def test_unsupported_features_and_docker_on_host(tmp_path: Path) -> None:
    tool, job = tmp_path / "say.cwl", tmp_path / "say.job.json"
    tool.write_text(TOOL)
    job.write_text(json.dumps({"msg": "hello"}))
    out = ["--outdir", str(tmp_path / "out")]

    # a requirement CWL v1.2 does not have: refused before anything runs
    odd = tmp_path / "odd.cwl"
    odd.write_text(
        TOOL.replace(
            "DockerRequirement:\n    dockerPull: docker.io/library/debian:12", "GpuRequirement: {}"
        )
    )
    proc = _run(["cwl-runner", *out, str(odd), str(job)], tmp_path)
    assert proc.returncode == 33, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"twinprov: {odd}:4:3: unsupported requirement GpuRequirement (not a CWL v1.2 "
        "requirement; twinprov runs CWL v1.2 — move it to `hints` if the tool can run without it)"
    )

    # no container engine, and the setting forbids running on the host
    proc = _run(
        ["cwl-runner", *out, str(tool), str(job)],
        tmp_path,
        AIRFLOW__TWINPROV__CWL_DOCKER_ON_HOST="false",
    )
    assert proc.returncode == 33, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("twinprov: CWL step say.cwl failed: ")
    assert "say.cwl:5:5: DockerRequi" in last  # the step log shortens long lines
    assert "cwl_docker_on_host" in last and proc.stdout == ""

    # allowed (the default): runs on the host, and the task's provenance says so
    proc = _run(["cwl-runner", *out, str(tool), str(job)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    said = json.loads(proc.stdout)["said"]
    assert Path(said["path"]).read_text() == "hello\n"
    turtle = _run(["export", "latest", "--format", "turtle"], tmp_path).stdout
    assert 'twinprov:container "none"' in turtle
    assert "required; not honoured, run on the host (setting cwl_docker_on_host)" in turtle
    assert "docker.io/library/debian:12" in turtle
