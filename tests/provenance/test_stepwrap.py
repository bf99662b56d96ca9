"""The step wrapper: a real subprocess, real files, the manifest read back from its output."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from provenance import stepwrap


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
