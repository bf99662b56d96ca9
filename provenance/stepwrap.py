"""Step wrapper: runs one step's command and prints its manifest as the last line of output.

Standard library only, and self-contained, so the very same file runs beside a local subprocess,
inside a Kubernetes pod, or on an HPC node behind interLink (shipped in a ConfigMap), where the
manifest is read back from the log because there is no ``exec`` for an XCom sidecar.

Usage::

    python stepwrap.py --workspace DIR --plan JSON -- COMMAND [ARG ...]

``JSON`` is ``{"step": ID, "inputs": [{"name", "path"}], "outputs": [{"name", "path",
"media_type"}]}`` with paths relative to the workspace, and optionally ``"stdin"``,
``"stdout"``, ``"stderr"``: files (absolute paths) the command reads or writes instead of the
log. The exit code is the command's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

MANIFEST_PREFIX = "TWINPROV_MANIFEST "
PARENT_ENV = "TWINPROV_PARENT_PID"
"""Set by a parent that wants the step to end when it dies (the local backend's task process)."""
MANIFEST_VERSION = 1
CONTRACT_BROKEN = 65
_CHUNK = 1 << 20


class PathEscapeError(ValueError):
    """A path would leave the workspace."""


def resolve_inside(workspace: Path, rel: str) -> Path:
    """Resolve ``rel`` under ``workspace``; refuse absolute paths, ``..`` and outbound symlinks."""
    root = Path(workspace).resolve()
    if os.path.isabs(rel) or rel.startswith("~"):
        raise PathEscapeError(f"'{rel}' is absolute; paths must be relative to the run workspace")
    candidate = root / rel
    real = candidate.resolve()
    if real != root and root not in real.parents:
        why = "is a symlink pointing" if candidate.is_symlink() or real != candidate else "points"
        raise PathEscapeError(f"'{rel}' {why} outside the run workspace ({real})")
    return candidate


def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 hex digest and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()  # noqa: UP017 (Python < 3.11 in images)


def _describe(workspace: Path, item: dict[str, str], errors: list[str]) -> dict[str, object]:
    rec: dict[str, object] = dict(item)
    try:
        path = resolve_inside(workspace, item["path"])
    except PathEscapeError as e:
        errors.append(str(e))
        rec.update(sha256=None, size=None, exists=False)
        return rec
    rec["abs_path"] = str(path)
    if path.is_file():
        digest, size = sha256_file(path)
        rec.update(sha256=digest, size=size, exists=True)
    else:
        rec.update(sha256=None, size=None, exists=False)
    return rec


_PR_SET_PDEATHSIG = 1
_GRACE_S = 5.0


def _pdeathsig(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _child_dies_with_wrapper() -> None:
    _pdeathsig(signal.SIGKILL)


def _end_group(proc: subprocess.Popen[bytes], sig: int, grace: float = _GRACE_S) -> None:
    """Send ``sig`` to the command's whole process group; SIGKILL whatever is left after
    ``grace`` seconds (a step must not outlive the task that started it)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # grandchildren the command left behind


def run(
    workspace: Path, plan: dict[str, object], command: list[str]
) -> tuple[int, dict[str, object]]:
    """Run ``command`` in ``workspace`` and return its exit code and manifest."""
    workspace.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    inputs = [_describe(workspace, i, errors) for i in plan.get("inputs", [])]  # type: ignore[attr-defined]
    for i in inputs:
        if not i["exists"] and "abs_path" in i:
            errors.append(f"input '{i['name']}' not found at {i['path']}")
    started, t0 = _now(), time.monotonic()
    before = _rusage()
    streams = contextlib.ExitStack()
    try:
        # its own process group, so that the whole tree can be ended; and if this wrapper is
        # killed outright, the kernel kills the command (PR_SET_PDEATHSIG)
        proc = subprocess.Popen(
            command,
            cwd=workspace,
            start_new_session=True,
            preexec_fn=_child_dies_with_wrapper,
            stdin=_opened(plan, "stdin", streams),
            stdout=_opened(plan, "stdout", streams),
            stderr=_opened(plan, "stderr", streams),
        )
    except OSError as e:
        errors.append(f"cannot start {command[0]!r}: {e.strerror}")
        code = 127
    else:

        def forward(signum: int, _frame: object) -> None:
            _end_group(proc, signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        code = proc.wait()
    streams.close()
    duration = time.monotonic() - t0
    after = _rusage()
    outputs = [_describe(workspace, o, errors) for o in plan.get("outputs", [])]  # type: ignore[attr-defined]
    if code == 0:
        for o in outputs:
            if not o["exists"] and "abs_path" in o:
                errors.append(f"declared output '{o['name']}' was not written ({o['path']})")
    manifest: dict[str, object] = {
        "version": MANIFEST_VERSION,
        "step": plan.get("step"),
        "command": command,
        "exit_code": code,
        "started_at": started,
        "ended_at": _now(),
        "duration_s": round(duration, 6),
        "workspace": str(workspace.resolve()),
        "inputs": inputs,
        "outputs": outputs,
        "errors": errors,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "resource_usage": {k: round(after[k] - before.get(k, 0.0), 6) for k in after},
    }
    return code, manifest


def _opened(plan: dict[str, object], key: str, streams: contextlib.ExitStack) -> IO[bytes] | None:
    """The plan's ``stdin``/``stdout``/``stderr`` file (an absolute path; a CWL tool's
    redirection) opened for the command; None: the wrapper's own stream (the log)."""
    path = plan.get(key)
    if not path:
        return None
    if key != "stdin":
        Path(str(path)).parent.mkdir(parents=True, exist_ok=True)
    return streams.enter_context(open(str(path), "rb" if key == "stdin" else "wb"))  # noqa: SIM115


def _rusage() -> dict[str, float]:
    try:
        import resource
    except ImportError:  # not on this platform
        return {}
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_user_s": r.ru_utime, "cpu_system_s": r.ru_stime, "max_rss_kb": float(r.ru_maxrss)}


def parse_manifest_line(line: str) -> dict[str, object] | None:
    """The manifest carried by one log line, or ``None`` if the line is not a manifest."""
    idx = line.find(MANIFEST_PREFIX)
    if idx < 0:
        return None
    try:
        data = json.loads(line[idx + len(MANIFEST_PREFIX) :])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", required=True, type=Path)
    parser.add_argument("--plan", required=True, help="JSON: step, inputs, outputs")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("no command given after --")
    parent = os.environ.get(PARENT_ENV)
    if parent:
        # the task process that started us dies (kill -9, lost node): we get SIGTERM, and end
        # the command's process group (see ``forward``) instead of running on as an orphan
        _pdeathsig(signal.SIGTERM)
        if str(os.getppid()) != parent:
            print(f"twinprov: the task process {parent} is gone; step not started", file=sys.stderr)
            return 143
    code, manifest = run(ns.workspace, json.loads(ns.plan), command)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        print(MANIFEST_PREFIX + json.dumps(manifest, sort_keys=True), flush=True)
    except BrokenPipeError:  # nobody reads the log any more (the task process died)
        return code or CONTRACT_BROKEN
    # the command succeeded but broke the step's contract (missing output, path escaping)
    return code if code else (CONTRACT_BROKEN if manifest["errors"] else 0)


if __name__ == "__main__":
    sys.exit(main())
