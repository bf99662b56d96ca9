"""A fake Kubernetes API server for the HPC tests: the only thing these tests replace.

:class:`FakeCluster` patches the methods of ``kubernetes.client.CoreV1Api`` that would send an
HTTP request (create/read/list/delete/patch pods, read pod logs, list events, read/create
ConfigMaps). Everything above them — the provider's ``KubernetesPodOperator``, ``PodManager``,
``PodLogsConsumer``, the ``KubernetesHook`` and its kubeconfig loading, twinprov's operator, the
Airflow task runner and listener — is the real code.

Behind the patched calls the fake behaves like a small cluster:

- a scheduler: a pod lands on a node whose labels match its ``nodeSelector`` and whose taints
  it tolerates; two nodes exist: ``kind-worker`` and the interLink virtual node
  ``interlink-slurm-vega`` (label ``virtual-node.interlink/type=virtual-kubelet``, taint
  ``virtual-node.interlink/no-schedule=true:NoSchedule``, as interLink's virtual kubelet sets);
- a kubelet: it runs the container's ``command + args`` as an argv (no shell) with this Python
  as the image's ``python``, volumes mapped to local folders (emptyDir per pod, a PVC or hostPath
  shared by name, ConfigMaps/Secrets from the fake store), env with ``secretKeyRef`` resolved from
  the fake Secrets — so the log the operator reads is the real output of the step wrapper;
- a registry: image references resolve to digests; a cluster node reports
  ``status.containerStatuses[].imageID = repo@sha256:…``; the virtual node reports no image id
  (interLink does not) and sets the ``JobID`` annotation (the SLURM job id), as interLink's
  virtual kubelet does (``pod.Annotations["JobID"] = resp.PodJID``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

VIRTUAL_NODE = "interlink-slurm-vega"
WORKER_NODE = "kind-worker"

NODES = {
    WORKER_NODE: {"labels": {"kubernetes.io/hostname": WORKER_NODE}, "taints": []},
    VIRTUAL_NODE: {
        "labels": {
            "kubernetes.io/hostname": VIRTUAL_NODE,
            "kubernetes.io/role": "agent",
            "virtual-node.interlink/type": "virtual-kubelet",
        },
        "taints": [("virtual-node.interlink/no-schedule", "true", "NoSchedule")],
    },
}

_PATCHED = (
    "create_namespaced_pod",
    "read_namespaced_pod",
    "list_namespaced_pod",
    "read_namespaced_pod_log",
    "list_namespaced_event",
    "delete_namespaced_pod",
    "patch_namespaced_pod",
    "read_namespaced_config_map",
    "create_namespaced_config_map",
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"  # RFC 3339 with nanoseconds, as kubelet


class _LogResponse:
    """What ``read_namespaced_pod_log(..., _preload_content=False)`` returns: a urllib3-like
    response whose ``stream()`` yields byte chunks."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, amt: int | None = None, decode_content: bool = True) -> Any:
        # two chunks, split mid-line, like a real HTTP stream
        cut = len(self._data) // 2
        yield from (c for c in (self._data[:cut], self._data[cut:]) if c)

    def __iter__(self) -> Any:
        return iter(self._data.splitlines(keepends=True))

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


@dataclass
class _PodRun:
    pod: k8s.V1Pod
    node: str | None
    log: bytes = b""
    exit_code: int | None = None
    started: dt.datetime | None = None
    finished: dt.datetime | None = None
    waiting: tuple[str, str] | None = None  # (reason, message): never started
    evicted: bool = False
    streamed: bool = False
    reads: int = 0
    deleted: bool = False


@dataclass
class FakeCluster:
    """In-memory cluster state plus the behaviour switches tests use."""

    root: Path
    workflow_dir: Path
    """What step images hold at ``/opt/twinprov/workflow``."""
    registry: dict[str, str] = field(default_factory=dict)
    """repository (no tag) → digest (``sha256:…``) of the images the registry serves."""
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], k8s.V1ConfigMap] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)
    """Storage identity of a PVC (``pvc:NAME``) or hostPath (``host:PATH``) → a shared key, for
    sites whose cluster and HPC see the same filesystem."""
    backing: dict[str, Path] = field(default_factory=dict)
    """Storage identity (``pvc:NAME``) → a folder of this machine that *is* that volume: a
    claim the Airflow worker mounts too, at the same path as the pods (CWL steps on pods)."""
    evict: set[str] = field(default_factory=set)
    """Task ids whose pods the node evicts while they run."""
    truncate_log: set[str] = field(default_factory=set)
    """Task ids whose pod log loses its last line (e.g. the node's log was rotated away)."""
    pods: dict[tuple[str, str], _PodRun] = field(default_factory=dict)
    created: list[k8s.V1Pod] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    _job_ids: Any = field(default_factory=lambda: itertools.count(4_242_001))

    # -------------------------------------------------------------------- installation
    def install(self, monkeypatch: Any) -> None:
        """Patch ``CoreV1Api``'s HTTP-calling methods to this fake (undone by ``monkeypatch``)."""
        fake = self
        for name in _PATCHED:
            impl = getattr(self, name)

            def method(_api: Any, *args: Any, _impl: Any = impl, _n: str = name, **kw: Any) -> Any:
                fake.calls.append(_n)
                return _impl(*args, **kw)

            monkeypatch.setattr(CoreV1Api, name, method)

    # -------------------------------------------------------------------- helpers
    def _key(self, namespace: str, name: str) -> tuple[str, str]:
        return (namespace, name)

    def _get(self, namespace: str, name: str) -> _PodRun:
        run = self.pods.get(self._key(namespace, name))
        if run is None or run.deleted:
            raise ApiException(status=404, reason=f'pods "{name}" not found')
        return run

    def storage(self, kind: str, name: str) -> Path:
        ident = f"{kind}:{name}"
        if ident in self.backing:
            return self.backing[ident]
        key = self.shared.get(ident, ident)
        path = self.root / "storage" / re.sub(r"[^A-Za-z0-9_.-]", "_", key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @staticmethod
    def _tolerates(pod: k8s.V1Pod, taint: tuple[str, str, str]) -> bool:
        key, value, effect = taint
        for t in pod.spec.tolerations or []:
            if t.effect and t.effect != effect:
                continue
            if t.operator == "Exists" and (t.key in (None, key)):
                return True
            if (t.operator in (None, "Equal")) and t.key == key and t.value == value:
                return True
        return False

    def _schedule(self, pod: k8s.V1Pod) -> str | None:
        selector = pod.spec.node_selector or {}
        for name, node in NODES.items():
            labels = node["labels"]
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            if all(self._tolerates(pod, t) for t in node["taints"]):
                return name
        return None

    def _image_id(self, image: str) -> str | None:
        repo, _, digest = image.partition("@")
        last = repo.rsplit("/", 1)[-1]
        repo = repo.rsplit(":", 1)[0] if ":" in last else repo  # drop a tag
        first = repo.split("/", 1)[0]
        if "/" not in repo:
            repo = f"docker.io/library/{repo}"
        elif "." not in first and ":" not in first and first != "localhost":
            repo = f"docker.io/{repo}"
        known = self.registry.get(repo)
        if known is None or (digest and digest != known):
            return None
        return f"{repo}@{known}"

    # -------------------------------------------------------------------- the kubelet
    def _mounts(self, run: _PodRun, work: Path, namespace: str) -> list[tuple[str, Path]]:
        pod = run.pod
        volumes = {v.name: v for v in pod.spec.volumes or []}
        out: list[tuple[str, Path]] = []
        for m in pod.spec.containers[0].volume_mounts or []:
            v = volumes[m.name]
            if v.empty_dir is not None:
                host = work / "emptyDirs" / v.name
                host.mkdir(parents=True, exist_ok=True)
            elif v.persistent_volume_claim is not None:
                if run.node == VIRTUAL_NODE:
                    raise RuntimeError("interLink cannot mount a PersistentVolumeClaim")
                host = self.storage("pvc", v.persistent_volume_claim.claim_name)
            elif v.host_path is not None:
                host = self.storage("host", v.host_path.path)
            elif v.config_map is not None or v.secret is not None:
                if v.config_map is not None:
                    cm = self.configmaps.get((namespace, v.config_map.name))
                    if cm is None:
                        raise LookupError(f'configmap "{v.config_map.name}" not found')
                    data = dict(cm.data or {})
                else:
                    data = self.secrets.get((namespace, v.secret.secret_name))
                    if data is None:
                        raise LookupError(f'secret "{v.secret.secret_name}" not found')
                folder = work / "volumes" / v.name
                folder.mkdir(parents=True, exist_ok=True)
                for key, value in data.items():
                    (folder / key).write_text(value)
                host = folder / m.sub_path if m.sub_path else folder
            else:
                raise RuntimeError(f"volume {v.name}: type not served by the fake")
            out.append((m.mount_path, host))
        out.append(("/opt/twinprov/workflow", self.workflow_dir))  # the image's own files
        return sorted(out, key=lambda x: -len(x[0]))

    @staticmethod
    def _map(arg: str, mounts: list[tuple[str, Path]]) -> str:
        for prefix, host in mounts:
            if arg == prefix or arg.startswith(prefix.rstrip("/") + "/"):
                return str(host) + arg[len(prefix) :]
        return arg

    def _run_container(self, run: _PodRun, namespace: str) -> None:
        pod = run.pod
        c = pod.spec.containers[0]
        image_id = self._image_id(c.image)
        if image_id is None:
            run.waiting = (
                "ErrImagePull",
                f'failed to pull and unpack image "{c.image}": manifest unknown',
            )
            return
        work = Path(tempfile.mkdtemp(prefix=f"{pod.metadata.name}-", dir=self.root))
        try:
            mounts = self._mounts(run, work, namespace)
        except LookupError as e:
            run.waiting = ("ContainerCreating", f"MountVolume.SetUp failed: {e}")
            return
        # the image's `python` (also the one the wrapper starts the step with) is this Python
        image_bin = work / "image-bin"
        image_bin.mkdir()
        shim = image_bin / "python"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        shim.chmod(0o755)
        env = {
            "PATH": f"{image_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(work),
            "PYTHONUNBUFFERED": "1",
        }
        for e in c.env or []:
            if e.value_from is not None and e.value_from.secret_key_ref is not None:
                ref = e.value_from.secret_key_ref
                env[e.name] = self.secrets[(namespace, ref.name)][ref.key]
            else:
                env[e.name] = e.value or ""
        argv = [self._map(a, mounts) for a in [*(c.command or []), *(c.args or [])]]
        argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
        run.started = _now()
        proc = subprocess.run(
            argv, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
        )
        run.finished = _now()
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        task_id = (pod.metadata.labels or {}).get("task_id", "")
        if task_id in self.evict:
            run.evicted = True
            lines = lines[: max(1, len(lines) // 3)]  # killed early: no manifest yet
            run.exit_code = 137
        elif task_id in self.truncate_log:
            lines = lines[:-1]
            run.exit_code = proc.returncode
        else:
            run.exit_code = proc.returncode
        step = (run.finished - run.started) / max(len(lines), 1)
        run.log = "".join(
            f"{_stamp(run.started + step * i)} {line}\n" for i, line in enumerate(lines)
        ).encode()

    # -------------------------------------------------------------------- status
    def _status(self, run: _PodRun) -> k8s.V1Pod:
        pod = run.pod
        c = pod.spec.containers[0]
        created = pod.metadata.creation_timestamp
        conds = [
            k8s.V1PodCondition(
                type="PodScheduled",
                status="True" if run.node else "False",
                reason=None if run.node else "Unschedulable",
                last_transition_time=created,
            )
        ]
        if run.node is None or run.waiting is not None:
            waiting = run.waiting or ("Pending", "0/2 nodes are available")
            statuses = [
                k8s.V1ContainerStatus(
                    name=c.name,
                    image=c.image,
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        waiting=k8s.V1ContainerStateWaiting(reason=waiting[0], message=waiting[1])
                    ),
                )
            ]
            pod.status = k8s.V1PodStatus(
                phase="Pending",
                conditions=conds,
                container_statuses=statuses if run.node else None,
            )
            return pod
        virtual = run.node == VIRTUAL_NODE
        image_id = "" if virtual else (self._image_id(c.image) or "")
        done = run.streamed or run.reads > 6
        if not done:
            running = k8s.V1ContainerStateRunning(started_at=run.started)
            state = k8s.V1ContainerState(running=running)
            phase, reason, message = "Running", None, None
        else:
            state = k8s.V1ContainerState(
                terminated=k8s.V1ContainerStateTerminated(
                    exit_code=run.exit_code,
                    reason="Error" if run.exit_code else "Completed",
                    started_at=run.started,
                    finished_at=run.finished,
                )
            )
            phase = "Succeeded" if run.exit_code == 0 and not run.evicted else "Failed"
            reason = message = None
            if run.evicted:
                reason = "Evicted"
                message = "The node was low on resource: memory. Threshold quantity: 100Mi."
        pod.status = k8s.V1PodStatus(
            phase=phase,
            reason=reason,
            message=message,
            host_ip="10.89.0.7" if virtual else "172.18.0.3",
            pod_ip=None if virtual else "10.244.1.17",
            start_time=created,
            conditions=conds,
            container_statuses=[
                k8s.V1ContainerStatus(
                    name=c.name,
                    image=c.image,
                    image_id=image_id,
                    ready=not done,
                    restart_count=0,
                    started=not done,
                    state=state,
                )
            ],
        )
        return pod

    # -------------------------------------------------------------------- CoreV1Api
    def create_namespaced_pod(self, namespace: str, body: Any, **_: Any) -> k8s.V1Pod:
        data = body if isinstance(body, dict) else ApiClient().sanitize_for_serialization(body)
        pod: k8s.V1Pod = ApiClient()._ApiClient__deserialize(data, "V1Pod")  # type: ignore[attr-defined]
        key = self._key(namespace, pod.metadata.name)
        if key in self.pods and not self.pods[key].deleted:
            raise ApiException(status=409, reason="AlreadyExists")
        pod.metadata.namespace = namespace
        pod.metadata.uid = f"uid-{len(self.pods) + 1:04d}"
        pod.metadata.creation_timestamp = _now()
        pod.metadata.resource_version = str(1000 + len(self.pods))
        node = self._schedule(pod)
        pod.spec.node_name = node
        run = _PodRun(pod=pod, node=node)
        self.pods[key] = run
        self.created.append(ApiClient()._ApiClient__deserialize(data, "V1Pod"))  # type: ignore[attr-defined]
        if node is not None:
            if node == VIRTUAL_NODE:
                # interLink's virtual kubelet: submit to SLURM, then annotate the job id
                pod.metadata.annotations = {
                    **(pod.metadata.annotations or {}),
                    "JobID": str(next(self._job_ids)),
                }
            self._run_container(run, namespace)
        return self._status(run)

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> k8s.V1Pod:
        run = self._get(namespace, name)
        run.reads += 1
        return self._status(run)

    def list_namespaced_pod(
        self, namespace: str, label_selector: str | None = None, **_: Any
    ) -> k8s.V1PodList:
        items = []
        for (ns, _name), run in self.pods.items():
            if ns != namespace or run.deleted:
                continue
            if label_selector and not _match(run.pod.metadata.labels or {}, label_selector):
                continue
            items.append(self._status(run))
        return k8s.V1PodList(items=items, metadata=k8s.V1ListMeta(resource_version="1"))

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> _LogResponse:
        run = self._get(namespace, name)
        if run.node is None or run.waiting is not None:
            raise ApiException(status=400, reason=f'container "{kw.get("container")}" is waiting')
        if run.streamed and kw.get("since_seconds"):
            return _LogResponse(b"")
        data = run.log if kw.get("timestamps") else re.sub(rb"(?m)^\S+ ", b"", run.log)
        run.streamed = True
        return _LogResponse(data)

    def list_namespaced_event(self, namespace: str, **kw: Any) -> k8s.CoreV1EventList:
        name = (kw.get("field_selector") or "").partition("=")[2]
        items = []
        run = self.pods.get(self._key(namespace, name))
        if run is not None:
            msg = (
                f"Successfully assigned {namespace}/{name} to {run.node}"
                if run.node
                else "0/2 nodes are available: 1 node(s) had untolerated taint"
            )
            items.append(
                k8s.CoreV1Event(
                    metadata=k8s.V1ObjectMeta(name=f"{name}.1", uid=f"ev-{name}-1"),
                    involved_object=k8s.V1ObjectReference(kind="Pod", name=name),
                    reason="Scheduled" if run.node else "FailedScheduling",
                    message=msg,
                    type="Normal" if run.node else "Warning",
                )
            )
        return k8s.CoreV1EventList(items=items, metadata=k8s.V1ListMeta(resource_version="7"))

    def delete_namespaced_pod(self, name: str, namespace: str, *args: Any, **_: Any) -> Any:
        run = self._get(namespace, name)
        run.deleted = True
        return k8s.V1Status(status="Success")

    def patch_namespaced_pod(self, name: str, namespace: str, body: Any, **_: Any) -> k8s.V1Pod:
        run = self._get(namespace, name)
        labels = ((body or {}).get("metadata") or {}).get("labels") or {}
        run.pod.metadata.labels = {**(run.pod.metadata.labels or {}), **labels}
        return self._status(run)

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> k8s.V1ConfigMap:
        cm = self.configmaps.get((namespace, name))
        if cm is None:
            raise ApiException(status=404, reason=f'configmaps "{name}" not found')
        return cm

    def create_namespaced_config_map(self, namespace: str, body: Any, **_: Any) -> Any:
        data = body if isinstance(body, dict) else ApiClient().sanitize_for_serialization(body)
        cm: k8s.V1ConfigMap = ApiClient()._ApiClient__deserialize(data, "V1ConfigMap")  # type: ignore[attr-defined]
        if (namespace, cm.metadata.name) in self.configmaps:
            raise ApiException(status=409, reason="AlreadyExists")
        self.configmaps[(namespace, cm.metadata.name)] = cm
        return cm


def _match(labels: dict[str, str], selector: str) -> bool:
    for term in selector.split(","):
        term = term.strip()
        if not term:
            continue
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k) != v:
                return False
        elif term not in labels:
            return False
    return True


FAKE_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: https://kube.fake.invalid:6443
    insecure-skip-tls-verify: true
contexts:
- name: fake
  context: {cluster: fake, user: fake, namespace: default}
current-context: fake
users:
- name: fake
  user: {token: not-a-real-token}
"""
