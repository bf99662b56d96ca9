"""The dry run of ``twinprov pods``: the objects a run would submit, built by the operator
itself (no cluster, no credentials)."""

from __future__ import annotations

__all__ = ["render_cwl_pod_manifests", "render_pod_manifests"]

from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient

from twinprov.dags.pod_operator import kube_step_operator
from twinprov.dags.pod_spec import KubeSettings
from twinprov.dags.pod_stepwrap import stepwrap_configmap
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.spec import load_spec


def render_pod_manifests(
    spec_path: str | Path,
    backend: str | None,
    params: dict[str, Any],
    *,
    namespace: str | None = None,
    run_id: str = "dry-run",
    settings: KubeSettings | None = None,
) -> list[dict[str, Any]]:
    """The objects a run would submit, as plain dicts: the step-wrapper ConfigMap of each
    namespace, then each pod step's pod, built by the operator's own ``build_pod_request_obj``
    (dry run: no cluster, no credentials).

    ``backend`` (kubernetes, interlink) puts every step on that target; ``None`` keeps each
    step's own target and skips ``local`` steps. ``params`` override the spec's defaults (values
    already typed, e.g. by the CLI). ``namespace`` is used where the spec names none (default
    ``default``). The workspace path shows ``run_id``.
    """
    spec = load_spec(spec_path)
    if backend is not None:
        if backend not in ("kubernetes", "interlink"):
            raise TwinprovError(f"backend {backend!r} runs no pods (kubernetes or interlink)")
        spec = spec.with_target(backend)  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise TwinprovError(f"unknown parameter(s): {', '.join(unknown)}")
    values = {k: p.default for k, p in spec.params.items()} | dict(params)
    settings = settings or KubeSettings.load()
    ops: list[Any] = []
    for step in spec.topological_order():
        target = spec.target_of(step)
        if target == "local":
            continue
        op = kube_step_operator(
            spec,
            step,
            spec_path=str(spec_path),
            target=target,
            settings=settings,
            task_id=step.id,
        )
        if op.namespace is None:
            op.namespace = namespace or "default"
        op.configure_run(values, spec.name, run_id)
        ops.append(op)
    return _as_documents(ops)


def _as_documents(ops: list[Any]) -> list[dict[str, Any]]:
    """The step-wrapper ConfigMap of each namespace, then the pod of each configured operator,
    built by its own ``build_pod_request_obj`` (dry run), as plain dicts."""
    client = ApiClient()
    pods = [op.build_pod_request_obj(context=None, dry_run=True) for op in ops]
    namespaces = list(dict.fromkeys(pod.metadata.namespace for pod in pods))
    maps = [client.sanitize_for_serialization(stepwrap_configmap(ns)) for ns in namespaces]
    return [*maps, *(client.sanitize_for_serialization(pod) for pod in pods)]


def render_cwl_pod_manifests(
    cwl_path: str | Path,
    backend: str | None,
    *,
    namespace: str | None = None,
    run_id: str = "dry-run",
    settings: KubeSettings | None = None,
) -> list[dict[str, Any]]:
    """The pods of a CWL document's steps, placed by its overlay (``backend`` puts every step
    on that target; ``None`` skips the overlay's ``local`` steps): image from each step's
    ``DockerRequirement``, resources from its ``ResourceRequirement`` or the overlay, placement
    from the overlay. The command line is bound by cwltool when the step runs (it depends on
    the upstream outputs), so the dry run shows the process the pod runs instead."""
    from twinprov.dags.cwl_pod import cwl_pod_operator, dry_run_plan
    from twinprov.provenance.config import Settings
    from twinprov.provenance.cwl_doc import dag_steps, load_cwl
    from twinprov.provenance.cwl_overlay import load_overlay
    from twinprov.provenance.workspace import workspace_dir

    if backend is not None and backend not in ("kubernetes", "interlink"):
        raise TwinprovError(f"backend {backend!r} runs no pods (kubernetes or interlink)")
    doc = load_cwl(cwl_path)
    overlay = load_overlay(doc.path, [s.id for s in doc.steps])
    settings = settings or KubeSettings.load()
    ws = workspace_dir(Settings.load().runs_dir, doc.dag_id, run_id)
    ops: list[Any] = []
    for placed in dag_steps(doc):
        if placed.group is not None:  # a task group: its steps follow
            continue
        top = (*placed.scope, placed.step.id)[0]
        target = overlay.target_of(top, backend)
        if target == "local":
            continue
        op = cwl_pod_operator(
            placed.doc,
            placed.step,
            overlay,
            cwl_path=str(cwl_path),
            target=target,  # type: ignore[arg-type]
            settings=settings,
            placed_as=top,
            scope=placed.scope,
            task_id=placed.task_id,
        )
        if op.namespace is None:
            op.namespace = namespace or "default"
        op.use_plan(dry_run_plan(placed.step, ws, placed.scope), str(ws))
        op.configure_run({}, doc.dag_id, run_id)
        ops.append(op)
    return _as_documents(ops)
