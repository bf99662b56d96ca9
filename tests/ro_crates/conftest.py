"""Fixtures for the crate tests: runs recorded in a throw-away ledger, shaped like real ones.

The event payloads copy the shape the Airflow listener records (see
``tests/data/ledger/failing_demo_run.json``, captured from a real run): a ``running`` event with
the static facts, then a final event carrying the step wrapper's manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinprov.app.publish import publish_run
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger, TaskEvent
from twinprov.provenance.spec import load_spec
from twinprov.provenance.workspace import workspace_dir

DATA = Path(__file__).resolve().parents[1] / "data"
MINI_SPEC = DATA / "workflows" / "mini.yaml"
FAILING_SPEC = DATA / "workflows" / "failing.yaml"
FAILING_EVENTS = DATA / "ledger" / "failing_demo_run.json"
ODD_NAME = "data dir/ré#sult 1.txt"
"""A workspace path with a space, a '#' and non-ASCII letters (an output of mini.yaml)."""

_ENV = {
    "digest": "0154677647882bbb",
    "kind": "python",
    "package_count": 234,
    "packages_sha256": "0154677647882bbb971a6e9d002506faa4e7ec9d0154d91f5dc431751a7b875a",
    "platform": "Linux-6.18.44-x86_64-with-glibc2.36",
    "python_executable": "/usr/bin/python3",
    "python_version": "3.11.7",
}


@dataclass
class StepRun:
    """One try of one step to record: what it wrote and how it ended."""

    task_id: str
    outputs: Mapping[str, bytes] = field(default_factory=dict)
    state: str = "success"
    try_number: int = 1
    error: str | None = None
    exit_code: int = 0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stamp(i: int) -> str:
    return f"2026-11-27T14:{10 + i // 60:02d}:{i % 60:02d}.{123456 + i:06d}+00:00"


def record_run(
    settings: Settings,
    spec_path: Path,
    run_id: str,
    steps: list[StepRun],
    *,
    params: Mapping[str, Any] | None = None,
    user: str | None = "ada",
    publish: bool = True,
) -> Path:
    """Write the steps' files into the run workspace and their events into the ledger.

    Returns the run workspace.
    """
    spec = load_spec(spec_path)
    dag_id = spec.name
    ws = workspace_dir(settings.runs_dir, dag_id, run_id)
    ws.mkdir(parents=True, exist_ok=True)
    values = {k: p.default for k, p in spec.params.items()}
    values.update(params or {})
    info = {
        "airflow_version": "3.3.2",
        "logical_date": _stamp(0),
        "params": values,
        "run_start": _stamp(0),
        "run_type": "manual",
        "spec_path": str(spec_path),
        "spec_sha256": _sha(spec_path.read_bytes()),
        "triggered_via": "dag_test",
        "triggering_user": user,
        "workflow_version": spec.version,
    }
    ledger = Ledger(settings.ledger_url)
    written: dict[str, dict[str, Any]] = {}
    clock = 1
    for run in steps:
        step = spec.step(run.task_id)
        static = {
            "environment": _ENV,
            "hostname": "vm",
            "image": spec.image_of(step),
            "max_tries": 1,
            "operator": "LocalStepOperator",
            "pid": 4242,
            "role": "step",
            "target": "local",
        }
        start, clock = _stamp(clock), clock + 1
        running = {**static, "start_date": start}
        ledger.append(
            TaskEvent(dag_id, run_id, run.task_id, -1, run.try_number, "running", running), info
        )
        inputs = []
        for inp in step.inputs:
            producer, _, item = inp.from_.partition(".")
            path = next(o.path for o in spec.step(producer).outputs if o.name == item)
            rec = written.get(path)
            inputs.append(
                {
                    "abs_path": str(ws / path),
                    "exists": rec is not None,
                    "name": inp.name,
                    "path": path,
                    "sha256": rec["sha256"] if rec else None,
                    "size": rec["size"] if rec else None,
                }
            )
        outputs = []
        for out in step.outputs:
            rec: dict[str, Any] = {
                "abs_path": str(ws / out.path),
                "media_type": out.media_type,
                "name": out.name,
                "path": out.path,
            }
            if out.name in run.outputs:
                data = run.outputs[out.name]
                (ws / out.path).parent.mkdir(parents=True, exist_ok=True)
                (ws / out.path).write_bytes(data)
                rec.update(exists=True, sha256=_sha(data), size=len(data))
                written[out.path] = rec
            else:
                rec.update(exists=False, sha256=None, size=None)
            outputs.append(rec)
        end, clock = _stamp(clock), clock + 1
        manifest = {
            "command": ["/usr/bin/python3", f"{spec_path.parent}/mini/step.py", run.task_id],
            "duration_s": 0.5,
            "ended_at": end,
            "errors": [],
            "exit_code": run.exit_code,
            "host": "vm",
            "inputs": inputs,
            "outputs": outputs,
            "platform": "Linux",
            "resource_usage": {"cpu_system_s": 0.01, "cpu_user_s": 0.2, "max_rss_kb": 17748.0},
            "started_at": start,
            "step": run.task_id,
            "version": 1,
            "workspace": str(ws),
        }
        payload = {**static, "end_date": end, "manifest": manifest}
        if run.error:
            payload["error"] = run.error
        ledger.append(
            TaskEvent(dag_id, run_id, run.task_id, -1, run.try_number, run.state, payload), info
        )
    # the publish task's own events, which the crate must ignore
    publish_static = {"hostname": "vm", "max_tries": 2, "operator": "PublishOperator"}
    ledger.append(
        TaskEvent(
            dag_id,
            run_id,
            "publish_provenance",
            -1,
            1,
            "running",
            {**publish_static, "role": "publish", "start_date": _stamp(clock)},
        ),
        info,
    )
    if publish:
        publish_run(settings, dag_id, run_id)
    return ws


def load_failing_demo(settings: Settings, spec_dir: Path) -> tuple[str, str, Path]:
    """The captured real failing_demo run, replayed into the ledger of ``settings``.

    Returns ``(dag_id, run_id, workspace)``; the workspace holds ``a.txt`` as the run left it.
    """
    doc = json.loads(FAILING_EVENTS.read_text(encoding="utf-8"))
    spec = spec_dir / "failing.yaml"
    spec.write_bytes(FAILING_SPEC.read_bytes())
    first = doc["events"][0]
    dag_id, run_id = first["dag_id"], first["run_id"]
    ws = workspace_dir(settings.runs_dir, dag_id, run_id)
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "a.txt").write_text("hello", encoding="utf-8")

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return (
                value.replace("{workspace}", str(ws))
                .replace("{spec}", str(spec))
                .replace("{python}", "/usr/bin/python3")
            )
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    info = fill(doc["run_info"])
    ledger = Ledger(settings.ledger_url)
    for ev in doc["events"]:
        ledger.append(TaskEvent(**fill(ev)), info)
    publish_run(settings, dag_id, run_id)
    return dag_id, run_id, ws
