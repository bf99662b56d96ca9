"""The step wrapper: a real subprocess, real files, the manifest read back from its output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from twinprov.provenance import stepwrap


def _wrap(ws: Path, plan: dict, *cmd: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [
            sys.executable,
            stepwrap.__file__,
            "--workspace",
            str(ws),
            "--plan",
            json.dumps(plan),
            "--",
            *cmd,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    last = proc.stdout.strip().splitlines()[-1]
    manifest = stepwrap.parse_manifest_line(last)
    assert manifest is not None, proc.stdout
    return proc.returncode, manifest, proc.stdout


def test_manifest_is_last_line_with_sha256_of_outputs(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "in.txt").write_text("input")
    plan = {
        "step": "s",
        "inputs": [{"name": "i", "path": "in.txt"}],
        "outputs": [{"name": "o", "path": "sub/out.txt", "media_type": "text/plain"}],
    }
    code = "import os; os.makedirs('sub'); open('sub/out.txt','w').write('hello'); print('work')"
    rc, m, out = _wrap(ws, plan, sys.executable, "-c", code)
    assert rc == 0 and m["exit_code"] == 0 and m["errors"] == []
    assert "work" in out.splitlines()[0]
    (o,) = m["outputs"]
    assert o["sha256"] == hashlib.sha256(b"hello").hexdigest() and o["size"] == 5
    assert o["media_type"] == "text/plain"
    assert m["inputs"][0]["sha256"] == hashlib.sha256(b"input").hexdigest()
    assert m["duration_s"] >= 0 and m["started_at"] <= m["ended_at"]


def test_failing_command_keeps_its_exit_code(tmp_path: Path) -> None:
    rc, m, _ = _wrap(tmp_path, {"step": "s"}, sys.executable, "-c", "raise SystemExit(7)")
    assert rc == 7 and m["exit_code"] == 7


def test_missing_declared_output_breaks_the_contract(tmp_path: Path) -> None:
    plan = {"outputs": [{"name": "o", "path": "never.txt", "media_type": "text/plain"}]}
    rc, m, _ = _wrap(tmp_path, plan, sys.executable, "-c", "pass")
    assert rc == stepwrap.CONTRACT_BROKEN
    assert m["errors"] == ["declared output 'o' was not written (never.txt)"]


def test_output_symlinked_outside_is_not_hashed(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    code = f"import os; os.symlink({str(secret)!r}, 'out.txt')"
    plan = {"outputs": [{"name": "o", "path": "out.txt", "media_type": "text/plain"}]}
    rc, m, _ = _wrap(ws, plan, sys.executable, "-c", code)
    assert rc == stepwrap.CONTRACT_BROKEN
    assert m["outputs"][0]["sha256"] is None
    assert any("outside the run workspace" in e for e in m["errors"])


def test_command_that_cannot_start_is_reported(tmp_path: Path) -> None:
    rc, m, _ = _wrap(tmp_path, {}, "/nonexistent/program")
    assert rc == 127 and "cannot start" in m["errors"][0]


def test_non_manifest_lines_are_ignored() -> None:
    assert stepwrap.parse_manifest_line("hello") is None
    assert stepwrap.parse_manifest_line(stepwrap.MANIFEST_PREFIX + "{broken") is None
    assert stepwrap.parse_manifest_line("x " + stepwrap.MANIFEST_PREFIX + '{"a": 1}') == {"a": 1}


def test_step_ends_when_the_task_process_is_killed(tmp_path: Path) -> None:
    """``kill -9`` of the process that started the wrapper (the Airflow task process) ends the
    step's whole process tree (the command and a grandchild it started) instead of leaving
    orphans writing into the workspace."""
    import os
    import signal
    import time

    pids = tmp_path / "pids"
    step = (
        "import os, subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{g.pid}}')\n"
        "time.sleep(300)\n"
    )
    wrapper = [
        sys.executable, stepwrap.__file__, "--workspace", str(tmp_path / "ws"),
        "--plan", json.dumps({"step": "s"}), "--", sys.executable, "-c", step,
    ]  # fmt: skip
    parent = (
        "import os, subprocess, sys, time\n"
        f"env = dict(os.environ, {stepwrap.PARENT_ENV}=str(os.getpid()))\n"
        f"p = subprocess.Popen({wrapper!r}, env=env)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    task = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert task.stdout is not None
    wrapper_pid = int(task.stdout.readline())
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    command_pid, grandchild_pid = map(int, pids.read_text().split())

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().split(") ")[1][0] != "Z"
        except FileNotFoundError:
            return False

    assert all(alive(p) for p in (wrapper_pid, command_pid, grandchild_pid))
    os.kill(task.pid, signal.SIGKILL)
    task.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in (wrapper_pid, command_pid, grandchild_pid)):
        assert time.monotonic() < deadline, "the step outlived the task process"
        time.sleep(0.05)


def test_wrapper_whose_task_process_is_already_gone_does_not_start(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, **{stepwrap.PARENT_ENV: "1"})  # not our parent: it already died
    proc = subprocess.run(
        [sys.executable, stepwrap.__file__, "--workspace", str(tmp_path), "--plan", "{}", "--",
         "touch", "started"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 143 and "is gone" in proc.stderr
    assert not (tmp_path / "started").exists()
