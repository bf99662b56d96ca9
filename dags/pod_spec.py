"""A spec step as the pieces of a ``V1Pod``: container command, env, secrets, resources,
volumes, labels and annotations, and the placement on interLink (node selector, toleration,
SLURM annotations). Pure: no cluster, no operator (:mod:`twinprov.dags.pod_operator` runs the pod,
:mod:`twinprov.dags.pod_dry_run` prints it).

Placement on interLink follows the interLink code: the virtual node carries the label
``virtual-node.interlink/type=virtual-kubelet`` and the taint
``virtual-node.interlink/no-schedule=true:NoSchedule`` (interLink
``pkg/virtualkubelet/virtualkubelet.go``); the SLURM plugin reads the ``slurm-job.vk.io/*``
annotations built by :func:`slurm_annotations` (interlink-slurm-plugin ``pkg/slurm/prepare.go``).

The step runs under the step wrapper, mounted from its ConfigMap
(:mod:`twinprov.dags.pod_stepwrap`).
"""

from __future__ import annotations

__all__ = [
    "BASE_CONTAINER",
    "INTERLINK_NODE_SELECTOR",
    "INTERLINK_TOLERATION_KEY",
    "JOB_ID_ANNOTATION",
    "POD_WORKFLOW_DIR",
    "WORKSPACE_MOUNT",
    "KubeSettings",
    "KubeTarget",
    "merged_hpc",
    "pod_arguments",
    "slurm_annotations",
    "slurm_flags",
]

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from airflow.providers.cncf.kubernetes.secret import Secret
from kubernetes.client import models as k8s

from twinprov.dags.pod_stepwrap import (
    MANAGED_BY,
    STEPWRAP_KEY,
    STEPWRAP_PATH,
    STEPWRAP_VOLUME,
    stepwrap_configmap_name,
)
from twinprov.provenance.errors import SpecError, SpecIssue
from twinprov.provenance.spec import Hpc, Kubernetes, Step, WorkflowSpec

KubeTarget = Literal["kubernetes", "interlink"]

POD_WORKFLOW_DIR = "/opt/twinprov/workflow"
"""``${workflow_dir}`` inside a pod: where a step image keeps the workflow's programs."""
WORKSPACE_MOUNT = "/twinprov/runs"
"""Mount path of the run-workspace volume; a run works in ``<mount>/<dag>/<run>/work``."""
WORKSPACE_VOLUME = "twinprov-workspace"
BASE_CONTAINER = "base"

INTERLINK_NODE_SELECTOR = {"virtual-node.interlink/type": "virtual-kubelet"}
"""Label every interLink virtual node carries (interLink ``NewProviderConfig``)."""
INTERLINK_TOLERATION_KEY = "virtual-node.interlink/no-schedule"
"""Taint of every interLink virtual node (``true:NoSchedule``); tolerated with ``Exists``."""
JOB_ID_ANNOTATION = "JobID"
"""Pod annotation in which interLink's virtual kubelet stores the remote (SLURM) job id."""
SLURM_ANNOTATION_PREFIX = "slurm-job.vk.io/"


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
        from twinprov.provenance.config import number_setting
        from twinprov.provenance.config import setting as get

        timeout = number_setting(
            "interlink_startup_timeout_seconds", cls.interlink_startup_timeout, int
        )
        ensure = get("kube_ensure_stepwrap_configmap")
        return cls(
            workspace_claim=get("kube_workspace_claim"),
            interlink_host_path=get("interlink_workspace_host_path"),
            interlink_startup_timeout=int(timeout),
            ensure_configmap=ensure is None or ensure.lower() in ("1", "true", "yes", "on"),
        )


# --------------------------------------------------------------------------- spec → pod parts


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


def merged_hpc(spec: WorkflowSpec, step: Step) -> Hpc:
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


def _check_image(spec: WorkflowSpec, step: Step, target: KubeTarget, source: str) -> str:
    image = spec.image_of(step)
    i = spec.steps.index(step) if step in spec.steps else 0
    if not image:
        raise SpecError(
            source,
            [SpecIssue(f"steps[{i}].image", f"a container image is required for {target}")],
        )
    return image


def pod_arguments(
    spec: WorkflowSpec, step: Step, *, spec_path: str, target: KubeTarget, settings: KubeSettings
) -> tuple[dict[str, Any], str]:
    """The ``KubernetesPodOperator`` arguments that make the pod of ``step`` on ``target`` (all
    but the callbacks and the task's own), and the kind of its workspace volume.

    Raises:
        SpecError: the step has no image, or a volume twinprov cannot mount.
    """
    image = _check_image(spec, step, target, spec_path)
    pod = _pod_settings(spec, step, target)
    volumes, mounts, ws_kind = _volumes(spec, step, target, settings, spec_path)
    annotations = dict(pod["annotations"])
    if target == "interlink":
        annotations.update(slurm_annotations(merged_hpc(spec, step)))
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
        "deferrable": False,  # callbacks (and so the manifest) only run in sync mode
    }
    if target == "interlink":
        kwargs["startup_timeout_seconds"] = settings.interlink_startup_timeout
        kwargs["startup_check_interval_seconds"] = 30  # a queued job: poll the API gently
        kwargs["schedule_timeout_seconds"] = 300
    return kwargs, ws_kind
