"""Steps as Kubernetes pods, on a cluster or on HPC through interLink.

Both targets use the provider's ``KubernetesPodOperator`` as shipped; :class:`KubeStepOperator`
only adds what twinprov needs around it:

- the step runs under the stdlib-only step wrapper (``provenance/stepwrap.py``), delivered in a
  ConfigMap (:func:`stepwrap_configmap`) mounted at ``/opt/twinprov/stepwrap.py`` — no image of
  ours to build; params reach the command as argv elements (never a shell string);
- the step manifest is read from the pod log through the provider's ``progress_callback`` (not
  XCom: interLink has no ``exec``, so the XCom sidecar cannot work there);
- when the pod is done, its provenance is copied out of the final ``V1Pod``: name, namespace,
  node, the image digest from ``status.container_statuses[].image_id`` (a cluster) or the digest
  pinned in the spec (interLink reports none), the HPC job id interLink writes into the pod's
  ``JobID`` annotation.

Placement on interLink follows the interLink code: the virtual node carries the label
``virtual-node.interlink/type=virtual-kubelet`` and the taint
``virtual-node.interlink/no-schedule=true:NoSchedule`` (interLink
``pkg/virtualkubelet/virtualkubelet.go``); the SLURM plugin reads the ``slurm-job.vk.io/*``
annotations built by :func:`slurm_annotations` (interlink-slurm-plugin ``pkg/slurm/prepare.go``).
"""

from __future__ import annotations

__all__ = [
    "INTERLINK_NODE_SELECTOR",
    "INTERLINK_TOLERATION_KEY",
    "JOB_ID_ANNOTATION",
    "POD_WORKFLOW_DIR",
    "STEPWRAP_PATH",
    "WORKSPACE_MOUNT",
    "KubeSettings",
    "KubeStepOperator",
    "kube_step_operator",
    "render_pod_manifests",
    "slurm_annotations",
    "slurm_flags",
    "stepwrap_configmap",
    "stepwrap_configmap_name",
]

import hashlib
import json
import re
import shlex
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import (
    PodLaunchFailedException,
)
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.secret import Secret
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodLaunchTimeoutException
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from twinprov.dags.operators import step_values
from twinprov.provenance import stepwrap
from twinprov.provenance.errors import SpecError, SpecIssue, TwinprovError
from twinprov.provenance.spec import Hpc, Kubernetes, Step, WorkflowSpec, load_spec, render
from twinprov.provenance.workspace import workspace_dir

KubeTarget = Literal["kubernetes", "interlink"]

STEPWRAP_PATH = "/opt/twinprov/stepwrap.py"
"""Where the step wrapper appears in every step container (one file: the image's
``/opt/twinprov`` is not hidden, so step programs may live under ``/opt/twinprov/workflow``)."""
POD_WORKFLOW_DIR = "/opt/twinprov/workflow"
"""``${workflow_dir}`` inside a pod: where a step image keeps the workflow's programs."""
WORKSPACE_MOUNT = "/twinprov/runs"
"""Mount path of the run-workspace volume; a run works in ``<mount>/<dag>/<run>/work``."""
WORKSPACE_VOLUME = "twinprov-workspace"
STEPWRAP_VOLUME = "twinprov-stepwrap"
STEPWRAP_KEY = "stepwrap.py"
BASE_CONTAINER = "base"

INTERLINK_NODE_SELECTOR = {"virtual-node.interlink/type": "virtual-kubelet"}
"""Label every interLink virtual node carries (interLink ``NewProviderConfig``)."""
INTERLINK_TOLERATION_KEY = "virtual-node.interlink/no-schedule"
"""Taint of every interLink virtual node (``true:NoSchedule``); tolerated with ``Exists``."""
JOB_ID_ANNOTATION = "JobID"
"""Pod annotation in which interLink's virtual kubelet stores the remote (SLURM) job id."""
SLURM_ANNOTATION_PREFIX = "slurm-job.vk.io/"
MANAGED_BY = {"app.kubernetes.io/managed-by": "twinprov"}


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class KubeSettings:
    """Pod-side settings from Airflow's ``[twinprov]`` section (``AIRFLOW__TWINPROV__*``)."""

    workspace_claim: str | None = None
    """``kube_workspace_claim``: a PersistentVolumeClaim holding the run workspaces of the
    ``kubernetes`` target (ReadWriteMany, or ReadWriteOnce with every step on one node);
    unset: an emptyDir per pod, so steps cannot read each other's files."""
    interlink_host_path: str | None = None
    """``interlink_workspace_host_path``: a directory on the HPC site's shared filesystem used
    as a hostPath workspace by the interLink SLURM plugin (its ``prepareMounts`` binds hostPath
    volumes of type Directory/DirectoryOrCreate); unset: an emptyDir per pod (interLink's
    documented set: Secret, ConfigMap, EmptyDir)."""
    interlink_startup_timeout: int = 86400
    """``interlink_startup_timeout_seconds``: how long a pod may stay Pending on the virtual
    node — its SLURM job may wait that long in the queue."""
    ensure_configmap: bool = True
    """``kube_ensure_stepwrap_configmap``: create the step-wrapper ConfigMap when missing (needs
    RBAC on configmaps; otherwise apply it from ``twinprov pods``)."""

    @classmethod
    def load(cls) -> KubeSettings:
        """Read the settings (environment > ``airflow.cfg`` > defaults)."""
        from twinprov.provenance.config import setting as get

        timeout = get("interlink_startup_timeout_seconds")
        ensure = get("kube_ensure_stepwrap_configmap")
        return cls(
            workspace_claim=get("kube_workspace_claim"),
            interlink_host_path=get("interlink_workspace_host_path"),
            interlink_startup_timeout=int(timeout) if timeout else cls.interlink_startup_timeout,
            ensure_configmap=ensure is None or ensure.lower() in ("1", "true", "yes", "on"),
        )


# --------------------------------------------------------------------------- step wrapper


@lru_cache(maxsize=1)
def _stepwrap_source() -> str:
    return Path(stepwrap.__file__).read_text(encoding="utf-8")


def _twinprov_version() -> str:
    try:
        return metadata.version("twinprov")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def stepwrap_configmap_name() -> str:
    """``twinprov-stepwrap-<version>-<sha256 of the wrapper, 10 hex>`` (DNS-1123 safe)."""
    version = re.sub(r"[^a-z0-9]+", "-", _twinprov_version().lower()).strip("-")
    digest = hashlib.sha256(_stepwrap_source().encode()).hexdigest()[:10]
    return f"twinprov-stepwrap-{version}-{digest}"


def stepwrap_configmap(namespace: str) -> k8s.V1ConfigMap:
    """The ConfigMap that ships ``provenance/stepwrap.py`` to every step pod of ``namespace``."""
    return k8s.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=k8s.V1ObjectMeta(
            name=stepwrap_configmap_name(),
            namespace=namespace,
            labels={**MANAGED_BY, "app.kubernetes.io/version": _twinprov_version()},
            annotations={
                "twinprov/stepwrap-sha256": hashlib.sha256(_stepwrap_source().encode()).hexdigest()
            },
        ),
        data={STEPWRAP_KEY: _stepwrap_source()},
    )


def _ensure_stepwrap_configmap(client: Any, namespace: str, log: Any) -> None:
    """Create the wrapper's ConfigMap if missing; refuse one whose content was changed."""
    want = stepwrap_configmap(namespace)
    name = want.metadata.name
    try:
        have = client.read_namespaced_config_map(name, namespace)
    except ApiException as e:
        if e.status == 404:
            try:
                client.create_namespaced_config_map(namespace, want)
                log.info("created ConfigMap %s/%s (twinprov step wrapper)", namespace, name)
            except ApiException as e2:
                if e2.status != 409:  # 409: created meanwhile by a parallel step
                    log.warning(
                        "cannot create ConfigMap %s/%s (%s %s): apply it from `twinprov pods`",
                        namespace,
                        name,
                        e2.status,
                        e2.reason,
                    )
        else:
            log.warning("cannot read ConfigMap %s/%s (%s %s)", namespace, name, e.status, e.reason)
        return
    if (have.data or {}).get(STEPWRAP_KEY) != _stepwrap_source():
        raise AirflowException(
            f"ConfigMap {namespace}/{name} does not hold twinprov's step wrapper; delete it"
        )


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
            _ensure_stepwrap_configmap(client, pod_request.metadata.namespace, operator.log)

    @staticmethod
    def progress_callback(*, line: str, container_name: str, pod: k8s.V1Pod, **_: Any) -> None:
        if container_name == BASE_CONTAINER and pod is not None and pod.metadata is not None:
            _SINK.feed(pod.metadata.namespace, pod.metadata.name, line)

    @staticmethod
    def on_pod_completion(*, pod: k8s.V1Pod | None, operator: Any, **_: Any) -> None:
        if isinstance(operator, KubeStepOperator) and pod is not None:
            operator._completed_pod = pod


# --------------------------------------------------------------------------- spec → pod parts


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


def _layers(spec: WorkflowSpec, step: Step, target: KubeTarget) -> list[Kubernetes]:
    layers = [spec.defaults.kubernetes]
    if target == "interlink":
        layers.append(spec.defaults.interlink)
    layers.append(step.kubernetes)
    return [x for x in layers if x is not None]


def _pod_settings(spec: WorkflowSpec, step: Step, target: KubeTarget) -> dict[str, Any]:
    """Pod settings after merging: defaults.kubernetes < defaults.interlink (interlink) < step.

    Scalars: the last layer that sets one wins. Labels, annotations: merged by key. Tolerations:
    concatenated. Node selector: merged by key — but on interLink it starts from the virtual-node
    label, replaced by ``defaults.interlink.node_selector`` when a site names its own, and the
    cluster-wide ``defaults.kubernetes.node_selector`` is not applied (it would not match the
    virtual node).
    """
    out: dict[str, Any] = {
        "namespace": None,
        "service_account": None,
        "image_pull_policy": None,
        "labels": dict(MANAGED_BY),
        "annotations": {},
        "tolerations": [],
        "node_selector": {},
    }
    if target == "interlink":
        il = spec.defaults.interlink
        out["node_selector"] = dict(
            il.node_selector if il and il.node_selector else INTERLINK_NODE_SELECTOR
        )
        out["tolerations"].append(k8s.V1Toleration(key=INTERLINK_TOLERATION_KEY, operator="Exists"))
    for layer in _layers(spec, step, target):
        for key in ("namespace", "service_account", "image_pull_policy"):
            if getattr(layer, key) is not None:
                out[key] = getattr(layer, key)
        out["labels"].update(layer.labels or {})
        out["annotations"].update(layer.annotations or {})
        for t in layer.tolerations or []:
            out["tolerations"].append(
                k8s.V1Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect)
            )
        is_site_layer = target == "interlink" and layer is spec.defaults.interlink
        is_cluster_default = target == "interlink" and layer is spec.defaults.kubernetes
        if layer.node_selector and not is_site_layer and not is_cluster_default:
            out["node_selector"].update(layer.node_selector)
    return out


def _merged_hpc(spec: WorkflowSpec, step: Step) -> Hpc:
    """``defaults.hpc`` overlaid by ``step.hpc`` field by field; ``flags`` are concatenated
    (defaults first: the SLURM plugin keeps the last of duplicate flags, so a step overrides)."""
    base = spec.defaults.hpc.model_dump() if spec.defaults.hpc else {}
    over = step.hpc.model_dump(exclude_none=True) if step.hpc else {}
    flags = [*(base.get("flags") or []), *(over.pop("flags", None) or [])]
    merged = {**base, **over, "flags": flags or None}
    return Hpc.model_validate(merged)


def slurm_flags(hpc: Hpc) -> list[str]:
    """SLURM ``sbatch`` flags of an ``hpc:`` block, typed fields first, then ``flags``."""
    flags: list[str] = []
    if hpc.partition:
        flags.append(f"--partition={hpc.partition}")
    if hpc.walltime:
        flags.append(f"--time={hpc.walltime}")
    if hpc.nodes is not None:
        flags.append(f"--nodes={hpc.nodes}")
    if hpc.tasks is not None:
        flags.append(f"--ntasks={hpc.tasks}")
    if hpc.gpus:
        flags.append(f"--gres=gpu:{hpc.gpus}")
    flags.extend(hpc.flags or [])
    return flags


def slurm_annotations(hpc: Hpc) -> dict[str, str]:
    """The ``slurm-job.vk.io/*`` annotations the interLink SLURM plugin reads.

    ``flags`` is one whitespace-separated string (the plugin splits it shell-style and writes
    one ``#SBATCH`` line per flag); ``mpi-flags`` is appended to ``mpiexec -np $SLURM_NTASKS``;
    ``pre-exec`` goes verbatim into the batch script; ``singularity-options`` and
    ``singularity-mounts`` onto the ``singularity exec`` line; ``image-root`` replaces the
    plugin's image prefix (e.g. ``docker://``); ``flavor`` picks a site flavor.
    """
    out: dict[str, str] = {}
    flags = slurm_flags(hpc)
    if flags:
        out["flags"] = " ".join(shlex.quote(f) if re.search(r"\s", f) else f for f in flags)
    if hpc.mpi_flags:
        out["mpi-flags"] = " ".join(hpc.mpi_flags)
    for key, value in (
        ("pre-exec", hpc.pre_exec),
        ("singularity-options", hpc.singularity_options),
        ("singularity-mounts", hpc.singularity_mounts),
        ("image-root", hpc.image_root),
        ("flavor", hpc.flavor),
    ):
        if value:
            out[key] = value
    return {SLURM_ANNOTATION_PREFIX + k: v for k, v in out.items()}


def _quantity(value: str | float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _resources(step: Step) -> k8s.V1ResourceRequirements | None:
    r = step.resources
    if r is None or (r.cpu is None and r.memory is None and not r.gpu):
        return None
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if r.cpu is not None:
        requests["cpu"] = limits["cpu"] = _quantity(r.cpu)
    if r.memory is not None:
        requests["memory"] = limits["memory"] = r.memory
    if r.gpu:
        limits["nvidia.com/gpu"] = str(r.gpu)
    return k8s.V1ResourceRequirements(requests=requests or None, limits=limits or None)


def _secrets(step: Step) -> list[Secret]:
    out = []
    for s in step.secrets:
        secret = Secret("env", s.env, s.secret, s.key)
        secret.deploy_target = s.env  # the provider upper-cases; env names are case-sensitive
        out.append(secret)
    return out


def _volumes(
    spec: WorkflowSpec, step: Step, target: KubeTarget, settings: KubeSettings, source: str
) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount], str]:
    """The workspace, the step wrapper and the spec's volumes; plus the workspace kind."""
    if target == "kubernetes" and settings.workspace_claim:
        ws_kind = f"persistentVolumeClaim {settings.workspace_claim}"
        ws = k8s.V1Volume(
            name=WORKSPACE_VOLUME,
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=settings.workspace_claim
            ),
        )
    elif target == "interlink" and settings.interlink_host_path:
        ws_kind = f"hostPath {settings.interlink_host_path}"
        ws = k8s.V1Volume(
            name=WORKSPACE_VOLUME,
            host_path=k8s.V1HostPathVolumeSource(
                path=settings.interlink_host_path, type="DirectoryOrCreate"
            ),
        )
    else:
        ws_kind = "emptyDir"
        ws = k8s.V1Volume(name=WORKSPACE_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource())
    volumes = [
        ws,
        k8s.V1Volume(
            name=STEPWRAP_VOLUME,
            config_map=k8s.V1ConfigMapVolumeSource(
                name=stepwrap_configmap_name(),
                items=[k8s.V1KeyToPath(key=STEPWRAP_KEY, path=STEPWRAP_KEY)],
            ),
        ),
    ]
    mounts = [
        k8s.V1VolumeMount(name=WORKSPACE_VOLUME, mount_path=WORKSPACE_MOUNT),
        # subPath: one file, so the image's /opt/twinprov (e.g. /opt/twinprov/workflow) stays
        # visible; the SLURM plugin binds ConfigMap keys file by file and honours subPath too.
        k8s.V1VolumeMount(
            name=STEPWRAP_VOLUME, mount_path=STEPWRAP_PATH, sub_path=STEPWRAP_KEY, read_only=True
        ),
    ]
    i = spec.steps.index(step) if step in spec.steps else 0
    issues: list[SpecIssue] = []
    for j, v in enumerate(step.volumes):
        where = f"steps[{i}].volumes[{j}]"
        if v.name in (WORKSPACE_VOLUME, STEPWRAP_VOLUME):
            issues.append(SpecIssue(f"{where}.name", f"'{v.name}' is reserved by twinprov"))
            continue
        mount_path = PurePosixPath(v.mount_path)
        if not mount_path.is_absolute() or str(mount_path) in (WORKSPACE_MOUNT, STEPWRAP_PATH):
            issues.append(
                SpecIssue(f"{where}.mount_path", f"'{v.mount_path}' is not a usable mount path")
            )
            continue
        if v.type != "emptyDir" and not v.source:
            issues.append(SpecIssue(f"{where}.source", f"a {v.type} volume needs a source"))
            continue
        if v.type == "emptyDir":
            vol = k8s.V1Volume(name=v.name, empty_dir=k8s.V1EmptyDirVolumeSource())
        elif v.type == "configMap":
            vol = k8s.V1Volume(name=v.name, config_map=k8s.V1ConfigMapVolumeSource(name=v.source))
        elif v.type == "secret":
            vol = k8s.V1Volume(name=v.name, secret=k8s.V1SecretVolumeSource(secret_name=v.source))
        elif v.type == "persistentVolumeClaim":
            vol = k8s.V1Volume(
                name=v.name,
                persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                    claim_name=str(v.source)
                ),
            )
        else:
            vol = k8s.V1Volume(name=v.name, host_path=k8s.V1HostPathVolumeSource(path=v.source))
        volumes.append(vol)
        mounts.append(
            k8s.V1VolumeMount(
                name=v.name, mount_path=v.mount_path, read_only=v.type in ("configMap", "secret")
            )
        )
    if issues:
        raise SpecError(source, issues)
    return volumes, mounts, ws_kind


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
            hpc = _merged_hpc(self._twinprov_spec, self._twinprov_step)
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


def _check_image(spec: WorkflowSpec, step: Step, target: KubeTarget, source: str) -> str:
    image = spec.image_of(step)
    i = spec.steps.index(step) if step in spec.steps else 0
    if not image:
        raise SpecError(
            source,
            [SpecIssue(f"steps[{i}].image", f"a container image is required for {target}")],
        )
    return image


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
    image = _check_image(spec, step, target, spec_path)
    pod = _pod_settings(spec, step, target)
    volumes, mounts, ws_kind = _volumes(spec, step, target, settings, spec_path)
    annotations = dict(pod["annotations"])
    if target == "interlink":
        annotations.update(slurm_annotations(_merged_hpc(spec, step)))
    callbacks = [TwinprovPodCallbacks]
    extra = task_kwargs.pop("callbacks", None)
    if extra:
        callbacks += extra if isinstance(extra, list) else [extra]
    kwargs: dict[str, Any] = {
        "image": image,
        "name": f"{spec.name}-{step.id}"[:60].lower().replace("_", "-"),
        "namespace": pod["namespace"],
        "cmds": ["python", STEPWRAP_PATH],
        "arguments": [],
        "labels": pod["labels"],
        "annotations": annotations,
        "node_selector": pod["node_selector"] or None,
        "tolerations": pod["tolerations"] or None,
        "service_account_name": pod["service_account"],
        "image_pull_policy": pod["image_pull_policy"],
        "container_resources": _resources(step),
        "secrets": _secrets(step),
        "volumes": volumes,
        "volume_mounts": mounts,
        "get_logs": True,
        "do_xcom_push": False,
        "base_container_name": BASE_CONTAINER,
        "callbacks": callbacks,
        "deferrable": False,  # callbacks (and so the manifest) only run in sync mode
    }
    if target == "interlink":
        kwargs["startup_timeout_seconds"] = settings.interlink_startup_timeout
        kwargs["startup_check_interval_seconds"] = 30  # a queued job: poll the API gently
        kwargs["schedule_timeout_seconds"] = 300
    kwargs.update(task_kwargs)
    kwargs["do_xcom_push"] = False
    op = KubeStepOperator(
        spec=spec, step=step, spec_path=spec_path, target=target, settings=settings, **kwargs
    )
    op.workspace_kind = ws_kind
    return op


# --------------------------------------------------------------------------- dry run


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
    client = ApiClient()
    pods: list[dict[str, Any]] = []
    namespaces: list[str] = []
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
        pod = op.build_pod_request_obj(context=None, dry_run=True)
        if pod.metadata.namespace not in namespaces:
            namespaces.append(pod.metadata.namespace)
        pods.append(client.sanitize_for_serialization(pod))
    maps = [client.sanitize_for_serialization(stepwrap_configmap(ns)) for ns in namespaces]
    return [*maps, *pods]
