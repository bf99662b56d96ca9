"""A workflow step as a pod, on a cluster or on HPC through interLink: the provider's
``KubernetesPodOperator`` as shipped, plus what twinprov needs around it (the pod itself is built
by :mod:`twinprov.dags.pod_spec`):

- params reach the command as argv elements of the step wrapper (never a shell string), rendered
  at execute time (:meth:`KubeStepOperator.configure_run`);
- the step manifest is read from the pod log through the provider's ``progress_callback`` (not
  XCom: interLink has no ``exec``, so the XCom sidecar cannot work there);
- when the pod is done, its provenance is copied out of the final ``V1Pod``: name, namespace,
  node, the image digest from ``status.container_statuses[].image_id`` (a cluster) or the digest
  pinned in the spec (interLink reports none), the HPC job id interLink writes into the pod's
  ``JobID`` annotation.
"""

from __future__ import annotations

__all__ = ["KubeStepOperator", "TwinprovPodCallbacks", "kube_step_operator"]

import json
import re
import threading
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import (
    PodLaunchFailedException,
)
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodLaunchTimeoutException
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from twinprov.dags.operators import step_values
from twinprov.dags.pod_spec import (
    BASE_CONTAINER,
    JOB_ID_ANNOTATION,
    POD_WORKFLOW_DIR,
    WORKSPACE_MOUNT,
    KubeSettings,
    KubeTarget,
    merged_hpc,
    pod_arguments,
    slurm_flags,
)
from twinprov.dags.pod_stepwrap import STEPWRAP_PATH, ensure_stepwrap_configmap
from twinprov.provenance import stepwrap
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.spec import Step, WorkflowSpec, render
from twinprov.provenance.workspace import workspace_dir

# --------------------------------------------------------------------------- log sink


class _ManifestSink:
    """The last step manifest seen in each pod's base-container log (keyed by namespace/name).

    The provider calls ``progress_callback`` on a callback *class* (no operator argument), so the
    lines are collected here and the operator picks its pod's manifest up after the pod ended.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}

    def feed(self, namespace: str, name: str, text: str) -> None:
        for line in text.splitlines():
            found = stepwrap.parse_manifest_line(line)
            with self._lock:
                rec = self._seen.setdefault((namespace, name), {"lines": 0, "manifest": None})
                rec["lines"] += 1
                if found is not None:
                    rec["manifest"] = found

    def pop(self, namespace: str, name: str) -> tuple[dict[str, Any] | None, int]:
        with self._lock:
            rec = self._seen.pop((namespace, name), None)
        return (rec["manifest"], rec["lines"]) if rec else (None, 0)


_SINK = _ManifestSink()


class TwinprovPodCallbacks(KubernetesPodOperatorCallback):
    """Hooks into the provider's pod lifecycle (sync mode)."""

    @staticmethod
    def on_pod_manifest_created(*, pod_request: k8s.V1Pod, client: Any, operator: Any, **_: Any):
        if isinstance(operator, KubeStepOperator) and operator.ensure_configmap:
            ensure_stepwrap_configmap(client, pod_request.metadata.namespace, operator.log)

    @staticmethod
    def progress_callback(*, line: str, container_name: str, pod: k8s.V1Pod, **_: Any) -> None:
        if container_name == BASE_CONTAINER and pod is not None and pod.metadata is not None:
            _SINK.feed(pod.metadata.namespace, pod.metadata.name, line)

    @staticmethod
    def on_pod_completion(*, pod: k8s.V1Pod | None, operator: Any, **_: Any) -> None:
        if isinstance(operator, KubeStepOperator) and pod is not None:
            operator._completed_pod = pod


# --------------------------------------------------------------------------- image digests


def _pinned_digest(image: str | None) -> str | None:
    if image and "@sha256:" in image:
        return "sha256:" + image.split("@sha256:", 1)[1]
    return None


def _digest_of_image_id(image_id: str | None) -> str | None:
    """``sha256:…`` out of a container status ``image_id`` (``repo@sha256:…``,
    ``docker-pullable://repo@sha256:…`` or a bare ``sha256:…``); None when empty (interLink)."""
    if not image_id:
        return None
    m = re.search(r"sha256:[0-9a-f]{64}", image_id)
    return m.group(0) if m else None


# --------------------------------------------------------------------------- the operator


class KubeStepOperator(KubernetesPodOperator):
    """A workflow step as a pod: the provider's ``KubernetesPodOperator`` plus twinprov's
    attributes (read by the listener) and the manifest/pod read-out around ``execute``.

    Jinja templating is off (``template_fields = ()``): twinprov renders its own ``${…}``
    placeholders, at execute time, into argv elements and env values — a param value is never
    seen by Jinja nor by a shell.
    """

    template_fields = ()
    ui_color = "#c9daf8"
    twinprov_role = "step"

    def __init__(
        self,
        *,
        spec: WorkflowSpec,
        step: Step,
        spec_path: str,
        target: KubeTarget,
        settings: KubeSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.step_id = step.id
        self.twinprov_target: KubeTarget = target
        self.twinprov_manifest: dict[str, Any] | None = None
        self.twinprov_facts: dict[str, Any] | None = None
        self._twinprov_spec = spec
        self._twinprov_step = step
        self._completed_pod: k8s.V1Pod | None = None
        self.workspace_kind = "emptyDir"
        settings = settings or KubeSettings()
        self.ensure_configmap = settings.ensure_configmap

    # facts known before running ------------------------------------------------------------
    @property
    def image_as_written(self) -> str | None:
        return self._twinprov_spec.image_of(self._twinprov_step)

    @property
    def twinprov_static(self) -> dict[str, Any]:
        """Target, image as written, whether it is pinned, and the environment agent."""
        image = self.image_as_written
        pinned = _pinned_digest(image)
        return {
            "target": self.twinprov_target,
            "image": image,
            "image_pinned": pinned is not None,
            "environment": {
                "kind": "container",
                # an unpinned image is its own agent, named by the image as written
                "digest": pinned or f"unpinned-{image}",
                "image": image,
            },
        }

    # run-time configuration ----------------------------------------------------------------
    def configure_run(self, params: dict[str, Any], dag_id: str, run_id: str) -> str:
        """Render the command and env for one run; return the workspace path in the pod."""
        spec, step = self._twinprov_spec, self._twinprov_step
        values = step_values(spec, step, params, POD_WORKFLOW_DIR)
        argv = [render(a, values) for a in [*step.command, *step.args]]
        plan = {
            "step": step.id,
            "inputs": [{"name": i.name, "path": values[f"inputs.{i.name}"]} for i in step.inputs],
            "outputs": [
                {"name": o.name, "path": o.path, "media_type": o.media_type} for o in step.outputs
            ],
        }
        ws = str(workspace_dir(Path(WORKSPACE_MOUNT), dag_id, run_id))
        self.cmds = ["python", STEPWRAP_PATH]
        self.arguments = ["--workspace", ws, "--plan", json.dumps(plan), "--", *argv]
        self.env_vars = [k8s.V1EnvVar(name=k, value=render(v, values)) for k, v in step.env.items()]
        return ws

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        step = self._twinprov_step
        from twinprov.dags.operators import run_params
        from twinprov.provenance.config import Settings

        self.configure_run(run_params(Settings.load(), ti.dag_id, context), ti.dag_id, ti.run_id)
        self.twinprov_manifest = None
        self._completed_pod = None
        self.twinprov_facts = self._facts(None, None)
        error: Exception | None = None
        try:
            super().execute(context)
        except Exception as e:  # the provider's reason; re-raised below as one line
            error = e
        known = self.pod or self.pod_request_obj
        name = known.metadata.name if known is not None else None
        namespace = known.metadata.namespace if known is not None else None
        manifest, lines = _SINK.pop(namespace, name) if known is not None else (None, 0)
        final = self._final_pod()
        self.twinprov_manifest = manifest
        self.twinprov_facts = self._facts(final, manifest)
        where = f"pod {namespace}/{name}"
        if manifest is None and self.pod is None and error is not None:
            raise AirflowException(
                f"step {step.id}: {where} was not created: {_one_line(error)}"
            ) from error
        if manifest is None:
            launch = _launch_failure(error)
            if launch is not None:
                raise AirflowException(
                    f"step {step.id}: {where} did not start: {_one_line(launch)}"
                ) from error
            state = _pod_state(final)
            why = f"{state}; " if state else ""
            raise AirflowException(
                f"step {step.id}: no manifest in the log of {where} ({why}{lines} log lines read)"
            ) from error
        code = manifest.get("exit_code")
        errors = [str(e) for e in manifest.get("errors") or []]
        if code != 0 or errors:
            why = f"exit code {code}" + (f"; {'; '.join(errors)}" if errors else "")
            if self.workspace_kind == "emptyDir" and any("not found" in e for e in errors):
                why += (
                    " (the workspace is an emptyDir per pod: steps share files only through "
                    "[twinprov] kube_workspace_claim / interlink_workspace_host_path)"
                )
            raise AirflowException(f"step {step.id} failed: {why}") from error
        if error is not None:
            raise AirflowException(f"step {step.id}: {where}: {_one_line(error)}") from error
        from twinprov.dags.outputs import announce

        announce(self, context, self._twinprov_spec.name, step.id, manifest.get("outputs") or [])
        return {"outputs": {o["name"]: o["sha256"] for o in manifest.get("outputs") or []}}

    # provenance of the pod -----------------------------------------------------------------
    def _final_pod(self) -> k8s.V1Pod | None:
        """The most final pod state the provider has shown us (it may have deleted the pod)."""
        for pod in (self.remote_pod, self._completed_pod):
            if pod is not None and pod.status is not None and pod.status.phase in _TERMINAL:
                return pod
        return self.remote_pod or self._completed_pod

    def _facts(self, pod: k8s.V1Pod | None, manifest: dict[str, Any] | None) -> dict[str, Any]:
        image = self.image_as_written
        pinned = _pinned_digest(image)
        known = pod or self.pod or self.pod_request_obj
        meta = known.metadata if known is not None else None
        spec = known.spec if known is not None else None
        status = pod.status if pod is not None else None
        facts: dict[str, Any] = {
            "image_pinned": pinned is not None,
            "image_digest": pinned,
            "pod": {
                "name": meta.name if meta else None,
                "namespace": meta.namespace if meta else None,
                "node": spec.node_name if spec else None,
                "phase": status.phase if status else None,
                "reason": status.reason if status else None,
                "workspace": self.workspace_kind,
            },
        }
        base = None
        for cs in (status.container_statuses or []) if status else []:
            if cs.name == BASE_CONTAINER:
                base = cs
        if base is not None:
            facts["image_id"] = base.image_id or None
            terminated = base.state.terminated if base.state else None
            if terminated is not None:
                facts["pod"]["exit_code"] = terminated.exit_code
                facts["pod"]["termination_reason"] = terminated.reason
        if self.twinprov_target == "kubernetes":
            observed = _digest_of_image_id(base.image_id if base is not None else None)
            if observed:
                facts["image_digest"] = observed
                facts["environment"] = {"kind": "container", "digest": observed, "image": image}
        else:  # interLink reports no image digest: only what the spec pinned is known
            hpc = merged_hpc(self._twinprov_spec, self._twinprov_step)
            annotations = (meta.annotations or {}) if meta else {}
            facts["hpc"] = {
                "site": hpc.site,
                "job_id": annotations.get(JOB_ID_ANNOTATION),
                "partition": hpc.partition,
                "walltime": hpc.walltime,
                "flags": slurm_flags(hpc) or None,
                "nodes": hpc.nodes,
                "tasks": hpc.tasks,
                "gpus": hpc.gpus,
                "flavor": hpc.flavor,
                "node": (manifest or {}).get("host"),
            }
        return facts


_TERMINAL = ("Succeeded", "Failed")


def _launch_failure(error: BaseException | None) -> BaseException | None:
    """The provider's "pod did not start" error, also when its cleanup raised over it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PodLaunchFailedException | PodLaunchTimeoutException):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]


def _pod_state(pod: k8s.V1Pod | None) -> str:
    if pod is None or pod.status is None:
        return ""
    s = pod.status
    parts = [f"pod phase {s.phase}"] if s.phase else []
    if s.reason:
        parts.append(f"reason {s.reason}" + (f": {s.message}" if s.message else ""))
    for cs in s.container_statuses or []:
        t = cs.state.terminated if cs.state else None
        if cs.name == BASE_CONTAINER and t is not None:
            parts.append(
                f"container exit code {t.exit_code}" + (f" ({t.reason})" if t.reason else "")
            )
    return ", ".join(parts)


def kube_step_operator(
    spec: WorkflowSpec,
    step: Step,
    *,
    spec_path: str,
    target: KubeTarget,
    settings: KubeSettings | None = None,
    **task_kwargs: Any,
) -> KubeStepOperator:
    """The operator that runs ``step`` as a pod on ``target`` (``kubernetes`` or ``interlink``).

    ``task_kwargs`` (``task_id``, ``retries``, …) go to the operator and may override any
    ``KubernetesPodOperator`` argument set here, except ``do_xcom_push`` (must stay False).
    """
    if target not in ("kubernetes", "interlink"):
        raise TwinprovError(f"step {step.id}: target {target!r} does not run in a pod")
    if task_kwargs.get("do_xcom_push"):
        raise TwinprovError(
            "do_xcom_push needs exec into the pod (not on interLink); twinprov "
            "reads the step manifest from the log instead"
        )
    settings = settings or KubeSettings.load()
    kwargs, ws_kind = pod_arguments(
        spec, step, spec_path=spec_path, target=target, settings=settings
    )
    callbacks = [TwinprovPodCallbacks]
    extra = task_kwargs.pop("callbacks", None)
    if extra:
        callbacks += extra if isinstance(extra, list) else [extra]
    kwargs["callbacks"] = callbacks
    kwargs.update(task_kwargs)
    kwargs["do_xcom_push"] = False
    op = KubeStepOperator(
        spec=spec, step=step, spec_path=spec_path, target=target, settings=settings, **kwargs
    )
    op.workspace_kind = ws_kind
    return op
