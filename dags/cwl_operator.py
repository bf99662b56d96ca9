"""The operator of CWL DAGs: one CWL step (or a whole tool) on the local backend.

The step runs through the step wrapper (as spec steps do: same log, same manifest, same process
group handling); inside it, ``cwl_exec.py`` runs the process with cwltool as a library under the
interpreter that has cwltool. After the wrapper ends, the CWL output object cwltool printed is
read back and every ``File``/``Directory`` in it (and in the step's input object) is hashed into
the manifest — CWL outputs are only known once cwltool has collected them (globs, expressions).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from twinprov.dags.operators import WrappedStepOperator, stepwrap_command
from twinprov.provenance import cwl_exec, stepwrap
from twinprov.provenance.config import Settings, setting
from twinprov.provenance.cwl_doc import (
    OUTPUT_FILE,
    SCATTER_FILE,
    CwlDocument,
    cwl_python,
    describe_values,
    gather_scatter,
    load_cwl,
    scatter_plan,
    step_job,
    step_name,
    subworkflow_job,
    subworkflow_of,
    workflow_outputs,
)
from twinprov.provenance.environment import python_environment
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.hashing import sha256_file
from twinprov.provenance.spec import RERUN_PARAM
from twinprov.provenance.stepenv import base_environment
from twinprov.provenance.workspace import spec_snapshot_path, workspace_dir

STATUS_FILE = ".twinprov-cwl-status.json"
INPUTS_TASK = "cwl_inputs"
"""A workflow's first task: its input object as cwltool prepares it (defaults, secondaryFiles
discovered from the input types, sizes, formats), hashed as the run's inputs."""
OUTPUTS_TASK = "cwl_outputs"
"""A task group's last task (a subworkflow shown step by step): the subworkflow's output object,
which the steps after the group read as the group step's outputs."""
SCATTER_SUFFIX = "__scatter"
"""Task id suffix of a scattered step's split task (:class:`CwlScatterOperator`)."""
UNSUPPORTED = 33
"""cwltool's (and cwltest's) exit code for an unsupported requirement or feature."""


def cwl_step_dir(workspace: Path, step_id: str) -> Path:
    """Where a CWL step's outputs are collected (cwltool's ``--outdir``)."""
    return workspace / "cwl" / step_id


def step_outputs(workspace: Path, doc: CwlDocument) -> dict[str, Any]:
    """The output objects of the steps that have run, by step id (and, under
    :data:`INPUTS_TASK`, the workflow's prepared input object). A scattered step's is gathered
    from its elements' once they have all run."""
    out: dict[str, Any] = {}
    for s in [*doc.steps, INPUTS_TASK]:
        step_id = s if isinstance(s, str) else s.id
        folder = cwl_step_dir(workspace, step_id)
        plan_file = folder / SCATTER_FILE
        if plan_file.is_file():
            plan = json.loads(plan_file.read_text(encoding="utf-8"))
            files = [folder / str(k) / OUTPUT_FILE for k in range(len(plan["jobs"]))]
            if all(f.is_file() for f in files):
                ports = [name for name, _ in doc.step(step_id).outputs]
                elements = [json.loads(f.read_text(encoding="utf-8")) for f in files]
                out[step_id] = gather_scatter(plan, ports, elements)
            continue
        f = folder / OUTPUT_FILE
        if f.is_file():
            out[step_id] = json.loads(f.read_text(encoding="utf-8"))
    return out


def run_params(context: Any) -> dict[str, Any]:
    """The run's params (the trigger form's values), without the rerun marker."""
    return {k: v for k, v in dict(context["params"]).items() if k != RERUN_PARAM}


@dataclass(frozen=True)
class Scope:
    """Where a task of a CWL DAG runs: the (sub)workflow of its task group, that group's
    folder, its input object, and cwltool's path to it in the run's document."""

    doc: CwlDocument
    folder: Path
    """The workspace at the top; a group's folder is its step's (``cwl/<group step>/``), its
    steps' folders are under it as a top-level step's are under the workspace."""
    job: dict[str, Any] | None = None
    """The subworkflow's input object; ``None`` at the top (the run's params)."""
    path: tuple[str, ...] = ()
    """cwltool's names of the group steps, outermost first (``--single-step a/b/step``)."""


def scoped(
    doc: CwlDocument, scope: tuple[str, ...] | list[str], ws: Path, params: dict[str, Any]
) -> Scope:
    """Where a task of the task group ``scope`` (step ids, outermost first) of ``doc`` runs."""
    at = Scope(doc, ws)
    for step_id in scope:
        sub = group_document(at.doc, [step_id])
        done = step_outputs(at.folder, at.doc)
        given = done.get(INPUTS_TASK, params if at.job is None else at.job)
        at = Scope(
            sub,
            cwl_step_dir(at.folder, step_id),
            subworkflow_job(at.doc, step_id, given, done),
            (*at.path, step_name(at.doc, step_id)),
        )
    return at


def group_document(doc: CwlDocument, scope: tuple[str, ...] | list[str]) -> CwlDocument:
    """The subworkflow the task group ``scope`` shows (``doc`` itself at the top)."""
    for step_id in scope:
        sub = subworkflow_of(doc, step_id)
        if sub is None:
            raise AirflowException(f"CWL step {step_id} of {doc.path} is not a task group")
        doc = sub
    return doc


def end_cwl_task(
    outdir: Path,
    step_id: str,
    rc: int,
    code: int,
    tail: list[str],
    manifest: dict[str, Any] | None,
) -> dict[str, Any]:
    """The end of a CWL task: its status file (read by ``cwl-runner``), then the failure as
    one error, a skip (the step's ``when`` was false), or the outputs' sha256 by name (the
    task's return value)."""
    status = {"exit_code": code, "message": failure_message(tail) if rc else ""}
    (outdir / STATUS_FILE).write_text(json.dumps(status), encoding="utf-8")
    if manifest is None:
        raise AirflowException(f"step {step_id}: no manifest (wrapper ended with code {rc})")
    if rc != 0:
        last = "\n".join(tail)
        raise AirflowException(
            f"CWL step {step_id} failed: cwltool exit code {code}; its last messages:\n{last}"
        )
    if (outdir / (OUTPUT_FILE + cwl_exec.SKIPPED_SUFFIX)).is_file():
        # the outputs (null) are written: the steps after it run with them, as CWL says
        raise AirflowSkipException(f"CWL step {step_id}: its `when` is false, outputs are null")
    return {"outputs": {o["name"]: o.get("sha256") for o in manifest["outputs"]}}


def failure_message(tail: list[str]) -> str:
    """cwltool's last error (from its last ``ERROR`` line on, colours removed) as one line."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in tail]
    lines = [line for line in lines if line and not line.startswith(stepwrap.MANIFEST_PREFIX)]
    start = max((k for k, line in enumerate(lines) if "ERROR" in line), default=len(lines) - 1)
    text = " ".join(lines[max(start, 0) :])
    return re.sub(r"^(\S+\s+)?ERROR\s*", "", text).strip()


def docker_on_host() -> bool:
    """Setting ``cwl_docker_on_host`` (default true: the local backend has no container engine):
    a tool whose ``DockerRequirement`` is a requirement runs on the host, and its provenance says
    ``container: none``; false: such a tool is refused as unsupported (exit code 33). Hints
    never stop a tool."""
    return (setting("cwl_docker_on_host") or "true").lower() in ("1", "true", "yes", "on")


def _docker_note(group: str | None) -> str | None:
    """What became of a step's DockerRequirement on the local backend (its provenance)."""
    if group == "requirements":
        if docker_on_host():
            return "required; not honoured, run on the host (setting cwl_docker_on_host)"
        return "required; refused, no container engine (setting cwl_docker_on_host)"
    return "hint; run on the host" if group == "hints" else None


def same_document(path: Path, snapshot: Path) -> None:
    """Every step runs the document the run started with (copied into the run at its start,
    for the crate and reruns): refuse to go on with one edited since."""
    if snapshot.is_file() and sha256_file(path)[0] != sha256_file(snapshot)[0]:
        raise AirflowException(
            f"{path} changed since the run started (its copy at the start: {snapshot}); "
            "trigger a new run to run the edited document"
        )


def prepare_cwl_job(
    at: Scope, step_id: str, context: Any, scatter_index: int | None = None
) -> tuple[Path, Path, list[str], str, dict[str, Any]]:
    """What cwltool is given to run one task of a CWL DAG: the step's output folder, its job
    file (written), cwltool's options, the kind of process, and the job object.

    The job is the run's params (the trigger form) for the inputs task or a tool document, and
    for a workflow step the values its ``in`` ports get from the workflow inputs and the
    upstream steps' outputs; for element ``scatter_index`` of a scattered step, that
    element's job (:func:`~twinprov.provenance.cwl_doc.scatter_plan`), in a folder of its own.
    In a task group (``at``, see :func:`scoped`) the subworkflow's input object stands for the
    params, and cwltool runs the step (or, for the group's inputs task, the subworkflow) found
    by its path in the whole document, with the requirements it inherits there."""
    doc, job = at.doc, at.job
    outdir = cwl_step_dir(at.folder, step_id)
    if scatter_index is not None:
        outdir = outdir / str(scatter_index)
    outdir.mkdir(parents=True, exist_ok=True)
    if job is None:
        # what the document's defaults say anyway stays out: cwltool applies them as written
        # (a trigger form sends every field, and JSON turns 0.00001 into 1e-05)
        defaults = {i.name: i.default for i in doc.inputs}
        job = {
            k: v for k, v in run_params(context).items() if v is not None and defaults.get(k) != v
        }
    # the local backend runs no containers: a DockerRequirement is honoured on a pod backend
    # (file names as CWL allows them: "#", spaces; nothing here goes through a shell)
    args = ["--outdir", str(outdir), "--quiet", "--no-container", "--relax-path-checks"]
    step_kind = "inputs"
    if step_id == INPUTS_TASK:
        args = ["--print-input-deps", "--relax-path-checks"]
        if at.path:
            args += ["--single-process", "/".join(at.path)]
    elif doc.is_workflow:
        step = doc.step(step_id)
        step_kind = step.kind
        if scatter_index is not None:
            plan_file = cwl_step_dir(at.folder, step_id) / SCATTER_FILE
            plan = json.loads(plan_file.read_text(encoding="utf-8"))
            job = plan["jobs"][scatter_index]
        else:
            done = step_outputs(at.folder, doc)
            job = step_job(doc, step.id, done.get(INPUTS_TASK, job), done)
        args += ["--single-step", "/".join((*at.path, step_name(doc, step.id)))]
    else:
        step_kind = doc.step(step_id).kind
    job_file = outdir / ".twinprov-cwl-job.json"
    job_file.write_text(json.dumps(job, indent=2, sort_keys=True), encoding="utf-8")
    return outdir, job_file, args, step_kind, job


class CwlStepOperator(WrappedStepOperator):
    """Runs one step of a CWL workflow (``cwltool --single-step``) or a CWL tool document."""

    ui_color = "#e4d9f0"
    twinprov_role = "step"

    def __init__(
        self,
        *,
        cwl_path: str,
        step_id: str,
        scatter_index: int | None = None,
        scope: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cwl_path = cwl_path
        """The run's document (a step of a task group belongs to a subworkflow of it)."""
        self.step_id = step_id
        self.scatter_index = scatter_index
        """The element of a scattered step this (mapped) task runs; None: the whole step."""
        self.scope = tuple(scope)
        """The task group steps this step is in, outermost first (see :func:`scoped`)."""
        self.twinprov_manifest: dict[str, Any] | None = None
        self.twinprov_facts: dict[str, Any] = {}
        self._proc: subprocess.Popen[str] | None = None

    @property
    def twinprov_static(self) -> dict[str, Any]:
        doc = group_document(load_cwl(self.cwl_path), self.scope)
        if self.step_id == INPUTS_TASK:
            return {"target": "local", "environment": python_environment()}
        step = doc.step(self.step_id)
        return {
            "target": "local",
            "image": step.image,
            "environment": python_environment(),
            "cwl": {
                "document": str(doc.path),
                "process": step.run,
                "class": step.kind,
                "cwlVersion": doc.cwl_version,
                "container": "none" if step.docker else None,
                "docker_on_host": docker_on_host() if step.docker else None,
                "dockerRequirement": _docker_note(step.docker),
            },
        }

    def execute(self, context: Any) -> dict[str, Any]:
        doc = load_cwl(self.cwl_path)
        settings = Settings.load()
        ti = context["ti"]
        ws = workspace_dir(settings.runs_dir, ti.dag_id, ti.run_id)
        same_document(
            doc.path, spec_snapshot_path(settings.runs_dir, ti.dag_id, ti.run_id, str(doc.path))
        )
        at = scoped(doc, self.scope, ws, run_params(context))
        outdir, job_file, args, step_kind, job = prepare_cwl_job(
            at, self.step_id, context, self.scatter_index
        )
        argv = [
            cwl_python(),
            cwl_exec.__file__,
            "--output",
            str(outdir / OUTPUT_FILE),
            "--",
            *args,
            doc.uri,
            str(job_file),
        ]
        env = base_environment(os.environ, settings.step_env_passthrough)
        env[stepwrap.PARENT_ENV] = str(os.getpid())
        env[cwl_exec.DOCKER_ON_HOST_ENV] = "1" if docker_on_host() else "0"
        plan = {"step": self.step_id, "inputs": [], "outputs": []}
        cmd = stepwrap_command(ws, plan, argv)
        self.log.info("CWL step %s (%s) in %s", self.step_id, step_kind, outdir)
        # the manifest is logged once completed with the CWL values, below
        rc, manifest, tail = self.run_wrapped(cmd, env, log_manifest=False)
        result: dict[str, Any] = {}
        out_file = outdir / OUTPUT_FILE
        if out_file.is_file():
            result = json.loads(out_file.read_text(encoding="utf-8"))
        if manifest is not None:
            if self.step_id == INPUTS_TASK:  # the workflow's inputs: used, not generated
                manifest["inputs"], manifest["outputs"] = describe_values(result, ws), []
            else:
                manifest["inputs"] = describe_values(job, ws)
                manifest["outputs"] = describe_values(result, ws)
            manifest["cwl_outputs"] = str(out_file)
            self.log.info("%s%s", stepwrap.MANIFEST_PREFIX, json.dumps(manifest, sort_keys=True))
        self.twinprov_manifest = manifest
        code = int(manifest.get("exit_code", rc)) if manifest else rc
        return end_cwl_task(outdir, self.step_id, rc, code, tail, manifest)


class CwlScatterOperator(BaseOperator):
    """Splits a scattered CWL step into its elements (one job each, see
    :func:`~twinprov.provenance.cwl_doc.scatter_plan`); returns their indexes, which the step's
    mapped task expands over (Airflow dynamic task mapping: one task instance per element)."""

    ui_color = "#efe8f7"

    def __init__(
        self, *, cwl_path: str, step_id: str, scope: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.cwl_path = cwl_path
        self.step_id = step_id
        self.scope = tuple(scope)

    def execute(self, context: Any) -> list[int]:
        ti = context["ti"]
        top = workspace_dir(Settings.load().runs_dir, ti.dag_id, ti.run_id)
        params = run_params(context)
        at = scoped(load_cwl(self.cwl_path), self.scope, top, params)
        doc, ws = at.doc, at.folder
        done = step_outputs(ws, doc)
        job = params if at.job is None else at.job
        folder = cwl_step_dir(ws, self.step_id)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            step_in = step_job(doc, self.step_id, done.get(INPUTS_TASK, job), done)
            plan = scatter_plan(doc, self.step_id, step_in)
        except TwinprovError as e:
            status = {"exit_code": 1, "message": str(e)}
            (folder / STATUS_FILE).write_text(json.dumps(status), encoding="utf-8")
            raise AirflowException(str(e)) from e
        (folder / SCATTER_FILE).write_text(json.dumps(plan, indent=2), encoding="utf-8")
        how = "whole (cwltool scatters)" if plan["whole"] else plan["method"]
        self.log.info("CWL step %s: %d element(s), %s", self.step_id, len(plan["jobs"]), how)
        return list(range(len(plan["jobs"])))


class CwlGroupOutputsOperator(BaseOperator):
    """The last task of a task group (a subworkflow shown step by step): the subworkflow's
    output object from its steps' (``outputSource``, ``linkMerge``, ``pickValue``), written where
    the steps after the group read the group step's outputs."""

    ui_color = "#efe8f7"

    def __init__(self, *, cwl_path: str, scope: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cwl_path = cwl_path
        self.scope = tuple(scope)

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        top = workspace_dir(Settings.load().runs_dir, ti.dag_id, ti.run_id)
        at = scoped(load_cwl(self.cwl_path), self.scope, top, run_params(context))
        doc, folder, job = at.doc, at.folder, at.job
        done = step_outputs(folder, doc)
        try:
            result = workflow_outputs(doc, done.get(INPUTS_TASK, job or {}), done)
        except TwinprovError as e:
            status = {"exit_code": 1, "message": str(e)}
            (folder / STATUS_FILE).write_text(json.dumps(status), encoding="utf-8")
            raise AirflowException(f"CWL step {self.scope[-1]}: {e}") from e
        (folder / OUTPUT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
        self.log.info("CWL subworkflow %s: outputs %s", self.scope[-1], ", ".join(sorted(result)))
        return {"outputs": sorted(result)}
