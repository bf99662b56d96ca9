"""A CWL step as pods, on a Kubernetes cluster or on HPC through interLink.

cwltool still does everything CWL (binding the command line, staging, expressions,
``InitialWorkDirRequirement``, collecting outputs): it runs in the task, as on the local backend,
but every command line it would start becomes a pod instead (see ``POD_PLANS_ENV`` in
:mod:`twinprov.provenance.cwl_exec`). Each pod is the provider's ``KubernetesPodOperator`` run
by :class:`~twinprov.dags.pod_operator.KubeStepOperator` (same callbacks, manifest from the log,
image digest, interLink job id), with

- the image of the job's ``DockerRequirement`` (``dockerPull``);
- requests and limits from its ``ResourceRequirement`` as cwltool evaluated it (cores, ram in
  MiB), unless the overlay file gives ``resources`` for the step;
- the command line, working directory, redirections and environment (``EnvVarRequirement``,
  HOME, TMPDIR) cwltool built, run by the step wrapper;
- placement (namespace, node selector, tolerations, SLURM annotations) from the overlay file
  (:mod:`twinprov.provenance.cwl_overlay`), never from the CWL.

cwltool's job directories are in the run workspace, so pod and worker must see that workspace at
the same path: a PersistentVolumeClaim (``kube_workspace_claim``) or the HPC site's shared
filesystem (``interlink_workspace_host_path``) that the worker mounts at ``runs_dir`` too.
"""

from __future__ import annotations

__all__ = [
    "CwlPodStepOperator",
    "cwl_pod_arguments",
    "cwl_pod_operator",
    "cwl_pod_spec",
    "dry_run_plan",
]

import collections
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from twinprov.dags.cwl_operator import (
    cwl_step_dir,
    end_cwl_task,
    prepare_cwl_job,
    run_params,
    same_document,
    scoped,
)
from twinprov.dags.pod_operator import KubeStepOperator, TwinprovPodCallbacks
from twinprov.dags.pod_spec import WORKSPACE_VOLUME, KubeSettings, KubeTarget, pod_arguments
from twinprov.dags.pod_stepwrap import STEPWRAP_PATH
from twinprov.provenance import cwl_exec, stepwrap
from twinprov.provenance.config import Settings
from twinprov.provenance.cwl_doc import (
    OUTPUT_FILE,
    CwlDocument,
    CwlStep,
    cwl_python,
    describe_values,
    load_cwl,
)
from twinprov.provenance.cwl_overlay import CwlOverlay, StepPlacement
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.spec_model import Resources, Step, WorkflowSpec
from twinprov.provenance.stepenv import base_environment
from twinprov.provenance.workspace import spec_snapshot_path, workspace_dir

_POLL_S = 0.2


def cwl_pod_spec(
    doc: CwlDocument,
    step: CwlStep,
    overlay: CwlOverlay,
    target: KubeTarget,
    placed_as: str | None = None,
) -> tuple[WorkflowSpec, Step]:
    """The CWL step as the one-step spec the pod builder reads: image from the
    ``DockerRequirement`` (else the overlay's), resources from the overlay or the static
    ``ResourceRequirement``, placement from the overlay. A step of a subworkflow shown as a task
    group is placed as its top-level step, ``placed_as`` (the overlay names the document's own
    steps)."""
    key = placed_as or step.id
    placed = overlay.steps.get(key) or StepPlacement()
    image = step.image or placed.image or overlay.defaults.image
    if not image:
        raise TwinprovError(
            f"{doc.path}: CWL step '{step.id}' has no DockerRequirement, so no image to run on "
            f"{target}: add one, or name an image in its overlay (steps.{key}.image)"
        )
    resources = placed.resources
    if resources is None and (step.cores or step.ram_mib):
        resources = Resources(
            cpu=step.cores, memory=f"{int(step.ram_mib)}Mi" if step.ram_mib else None
        )
    spec_step = Step(
        id=step.id,
        command=[step.run],
        image=image,
        resources=resources,
        target=target,
        kubernetes=placed.kubernetes,
        hpc=placed.hpc,
    )
    defaults = overlay.defaults.model_copy(update={"target": target})
    return WorkflowSpec(name=doc.dag_id, defaults=defaults, steps=[spec_step]), spec_step


def _quantity(cores: float) -> str:
    return str(int(cores)) if float(cores).is_integer() else f"{int(cores * 1000)}m"


def _under(path: str, root: Path) -> bool:
    try:
        Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


class CwlPodStepOperator(KubeStepOperator):
    """One task of a CWL DAG whose commands run as pods (see the module docstring)."""

    ui_color = "#d9c9f0"

    def __init__(
        self,
        *,
        cwl_path: str,
        cwl_step: CwlStep,
        fixed_resources: bool = False,
        scatter_index: int | None = None,
        scope: tuple[str, ...] = (),
        workspace_kind: str = "emptyDir",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.cwl_path = cwl_path
        """The run's document (a step of a task group belongs to a subworkflow of it)."""
        self.cwl_step = cwl_step
        self.fixed_resources = fixed_resources
        """The overlay sets the step's resources: cwltool's evaluated ones are not used."""
        self.scatter_index = scatter_index
        """The element of a scattered step this (mapped) task runs; None: the whole step."""
        self.scope = tuple(scope)
        """The task group steps this step is in, outermost first."""
        self.workspace_kind = workspace_kind
        self._static_resources = self.container_resources
        self._plan: dict[str, Any] | None = None
        self._workspace = ""

    @property
    def image_as_written(self) -> str | None:
        if self._plan is not None and self._plan.get("image"):
            return str(self._plan["image"])
        return super().image_as_written

    @property
    def twinprov_static(self) -> dict[str, Any]:
        doc = load_cwl(self.cwl_path)
        return {
            **super().twinprov_static,
            "cwl": {
                "document": str(doc.path),
                "process": self.cwl_step.run,
                "class": self.cwl_step.kind,
                "cwlVersion": doc.cwl_version,
                "container": "pod",
                "dockerRequirement": self.cwl_step.docker,
            },
        }

    # one pod per command line ----------------------------------------------------------------
    def use_plan(self, plan: dict[str, Any], workspace: str) -> None:
        """The command line the next pod runs (``plan-N.json`` of cwl_exec)."""
        self._plan = plan
        self._workspace = workspace

    def configure_run(self, params: dict[str, Any], dag_id: str, run_id: str) -> str:
        """The pod of the current plan: cwltool's command line under the step wrapper."""
        plan = self._plan
        if plan is None:
            raise AirflowException(f"CWL step {self.step_id}: no command to run")
        # each command line its own pod: nothing of the previous plan carries over
        self.image = plan.get("image") or self._twinprov_spec.image_of(self._twinprov_step)
        self.container_resources = self._static_resources
        self.active_deadline_seconds = None
        wrap = {
            "step": self.step_id,
            "inputs": [],
            "outputs": [],
            **{k: plan[k] for k in ("stdin", "stdout", "stderr") if plan.get(k)},
        }
        self.cmds = ["python", STEPWRAP_PATH]
        self.arguments = [
            "--workspace",
            plan["cwd"],
            "--plan",
            json.dumps(wrap),
            "--",
            *plan["argv"],
        ]
        self.env_vars = [k8s.V1EnvVar(name=k, value=str(v)) for k, v in sorted(plan["env"].items())]
        got = plan.get("resources") or {}
        if not self.fixed_resources and (got.get("cores") or got.get("ram_mib")):
            requests: dict[str, str] = {}
            if got.get("cores"):
                requests["cpu"] = _quantity(float(got["cores"]))
            if got.get("ram_mib"):
                requests["memory"] = f"{int(got['ram_mib'])}Mi"
            self.container_resources = k8s.V1ResourceRequirements(
                requests=requests, limits=dict(requests)
            )
        if plan.get("timelimit"):
            self.active_deadline_seconds = int(plan["timelimit"])
        return self._workspace

    def _run_pod(self, plan: dict[str, Any], context: Any, runs_dir: Path) -> dict[str, Any]:
        outside = [f for f in plan.get("files") or [] if not _under(f, runs_dir)]
        if outside:
            raise AirflowException(
                f"CWL step {self.step_id}: {outside[0]} is outside the run workspace "
                f"({runs_dir}), so the pod cannot read it; give the run inputs that are under "
                "runs_dir (the storage the pods mount)"
            )
        self.use_plan(plan, self._workspace)
        # the provider keeps the pod it built for the previous command: a new one for this one
        self.pod_request_obj = None
        self.pod = None
        self.remote_pod = None
        try:
            super().execute(context)
        except AirflowException:
            if self.twinprov_manifest is None:  # the pod did not run the command
                raise
        manifest = self.twinprov_manifest
        assert manifest is not None
        return manifest

    def execute(self, context: Any) -> dict[str, Any]:
        doc = load_cwl(self.cwl_path)
        settings = Settings.load()
        ti = context["ti"]
        if self.workspace_kind == "emptyDir":
            raise AirflowException(
                f"CWL step {self.step_id} on {self.twinprov_target}: cwltool stages the files "
                "and collects the outputs in the run workspace, so pods must mount it: set "
                "[twinprov] kube_workspace_claim (kubernetes) or interlink_workspace_host_path "
                f"(interlink) to storage the worker also sees at {settings.runs_dir}"
            )
        ws = workspace_dir(settings.runs_dir, ti.dag_id, ti.run_id)
        self._workspace = str(ws)
        same_document(
            doc.path, spec_snapshot_path(settings.runs_dir, ti.dag_id, ti.run_id, str(doc.path))
        )
        at = scoped(doc, self.scope, ws, run_params(context))
        outdir, job_file, args, kind, job = prepare_cwl_job(
            at, self.step_id, context, self.scatter_index
        )
        plans = outdir / ".twinprov-pods"
        shutil.rmtree(plans, ignore_errors=True)
        plans.mkdir(parents=True)
        # cwltool's job and temporary directories on the shared workspace, not in /tmp
        args += ["--tmpdir-prefix", f"{outdir}/tmp/", "--tmp-outdir-prefix", f"{outdir}/jobs/"]
        out_file = outdir / OUTPUT_FILE
        out_file.unlink(missing_ok=True)
        argv = [cwl_python(), cwl_exec.__file__, "--output", str(out_file), "--"]
        argv += [*args, doc.uri, str(job_file)]
        env = base_environment(os.environ, settings.step_env_passthrough)
        env[cwl_exec.POD_PLANS_ENV] = str(plans)
        self.log.info(
            "CWL step %s (%s): commands run as pods on %s", self.step_id, kind, self.twinprov_target
        )
        started = dt.datetime.now(dt.UTC).isoformat()
        t0 = time.monotonic()
        tail: collections.deque[str] = collections.deque(maxlen=40)
        proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

        def relay() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                self.log.info("%s", line.rstrip("\n"))

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        ran: list[dict[str, Any]] = []
        try:
            n = 0
            while True:
                plan_file = plans / f"plan-{n}.json"
                if plan_file.is_file():
                    plan = json.loads(plan_file.read_text(encoding="utf-8"))
                    manifest = self._run_pod(plan, context, settings.runs_dir)
                    ran.append({"manifest": manifest, "facts": self.twinprov_facts})
                    result = {"exit_code": int(manifest.get("exit_code", 1))}
                    (plans / f"result-{n}.json").write_text(json.dumps(result), encoding="utf-8")
                    n += 1
                elif proc.poll() is not None:
                    break
                else:
                    time.sleep(_POLL_S)
        except BaseException:
            proc.kill()
            raise
        finally:
            rc = proc.wait()
            reader.join(timeout=10)
        result_obj: dict[str, Any] = {}
        if out_file.is_file():
            result_obj = json.loads(out_file.read_text(encoding="utf-8"))
        manifest = self._step_manifest(ran, rc, started, time.monotonic() - t0, ws)
        manifest["inputs"] = describe_values(job, ws)
        manifest["outputs"] = describe_values(result_obj, ws)
        manifest["cwl_outputs"] = str(out_file)
        self.log.info("%s%s", stepwrap.MANIFEST_PREFIX, json.dumps(manifest, sort_keys=True))
        self.twinprov_manifest = manifest
        if ran:
            self.twinprov_facts = {
                **(ran[-1]["facts"] or {}),
                "pods": [r["facts"]["pod"] for r in ran if r["facts"]],
            }
        return end_cwl_task(outdir, self.step_id, rc, rc, list(tail), manifest)

    def _step_manifest(
        self, ran: list[dict[str, Any]], rc: int, started: str, duration: float, ws: Path
    ) -> dict[str, Any]:
        """The task's manifest: the pods' (first start, last end, their commands), or the
        task's own when no command ran (an ExpressionTool, a failure before any)."""
        manifests = [r["manifest"] for r in ran]
        base: dict[str, Any] = dict(manifests[-1]) if manifests else {}
        base.update(
            {
                "version": stepwrap.MANIFEST_VERSION,
                "step": self.step_id,
                "exit_code": rc,
                "started_at": manifests[0]["started_at"] if manifests else started,
                "ended_at": base.get("ended_at") or dt.datetime.now(dt.UTC).isoformat(),
                "duration_s": round(sum(m.get("duration_s", 0.0) for m in manifests), 6)
                if manifests
                else round(duration, 6),
                "workspace": str(ws),
                "errors": [e for m in manifests for e in m.get("errors") or []],
                "commands": [m.get("command") for m in manifests],
            }
        )
        base.setdefault("command", [])
        base.setdefault("host", socket.gethostname())
        base.setdefault("platform", platform.platform())
        return base


def dry_run_plan(step: CwlStep, workspace: Path, scope: tuple[str, ...] = ()) -> dict[str, Any]:
    """A stand-in plan for ``twinprov pods``: the image and static resources are known, the
    command line is not (cwltool binds it from the upstream outputs when the step runs)."""
    folder = workspace
    for step_id in (*scope, step.id):
        folder = cwl_step_dir(folder, step_id)
    return {
        "image": step.image,
        "argv": [f"<the command line cwltool binds for {step.run} when the step runs>"],
        "cwd": str(folder / "jobs"),
        "env": {},
        "resources": {"cores": step.cores, "ram_mib": step.ram_mib},
    }


def cwl_pod_arguments(
    doc: CwlDocument,
    step: CwlStep,
    overlay: CwlOverlay,
    *,
    cwl_path: str,
    target: KubeTarget,
    settings: KubeSettings | None = None,
    runs_dir: Path | None = None,
    placed_as: str | None = None,
    scope: tuple[str, ...] = (),
    **task_kwargs: Any,
) -> dict[str, Any]:
    """The :class:`CwlPodStepOperator` arguments that run the CWL step ``step`` (of ``doc``, the
    run's document, or the subworkflow of the task group ``scope``) as pods on ``target``,
    placed as ``placed_as``."""
    settings = settings or KubeSettings.load()
    spec, spec_step = cwl_pod_spec(doc, step, overlay, target, placed_as)
    kwargs, ws_kind = pod_arguments(
        spec, spec_step, spec_path=str(doc.path), target=target, settings=settings
    )
    if scope:  # pods named after the task, group included (the provider adds a suffix)
        kwargs["name"] = f"{spec.name}-{'-'.join((*scope, step.id))}"[:60].lower().replace("_", "-")
    # cwltool's command lines name the workspace as the worker sees it
    mount_at = str(runs_dir or Settings.load().runs_dir)
    kwargs["volume_mounts"] = [
        k8s.V1VolumeMount(name=m.name, mount_path=mount_at) if m.name == WORKSPACE_VOLUME else m
        for m in kwargs["volume_mounts"]
    ]
    kwargs["callbacks"] = [TwinprovPodCallbacks]
    # one task runs one pod per command line, all with the task's labels: the provider must
    # not take the previous command's pod for this one ("reattach")
    kwargs["reattach_on_restart"] = False
    kwargs.update(task_kwargs)
    kwargs["do_xcom_push"] = False
    placed = overlay.steps.get(placed_as or step.id) or StepPlacement()
    return {
        **kwargs,
        "cwl_path": cwl_path,
        "cwl_step": step,
        "fixed_resources": placed.resources is not None,
        "spec": spec,
        "step": spec_step,
        "spec_path": str(doc.path),
        "target": target,
        "settings": settings,
        "workspace_kind": ws_kind,
        "scope": scope,
    }


def cwl_pod_operator(
    doc: CwlDocument, step: CwlStep, overlay: CwlOverlay, **kwargs: Any
) -> CwlPodStepOperator:
    """The operator that runs the CWL step ``step`` as pods (see :func:`cwl_pod_arguments`)."""
    return CwlPodStepOperator(**cwl_pod_arguments(doc, step, overlay, **kwargs))
