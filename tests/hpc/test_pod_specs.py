"""Pod specs of the kubernetes and interlink targets, built by the provider's own
``KubernetesPodOperator.build_pod_request_obj`` (dry run). Nothing is mocked: a dry run needs no
Kubernetes API at all.

The interLink facts checked here come from the interLink code: the virtual node's label
``virtual-node.interlink/type=virtual-kubelet`` and taint ``virtual-node.interlink/no-schedule``
(interLink ``pkg/virtualkubelet/virtualkubelet.go``), the ``slurm-job.vk.io/*`` annotations and
their formats (interlink-slurm-plugin ``pkg/slurm/prepare.go``).
"""

from __future__ import annotations

import json
import shlex
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from twinprov.provenance import stepwrap
from twinprov.provenance.errors import SpecError, TwinprovError
from twinprov.provenance.spec import load_spec

HPC_SPEC = REPO / "dags" / "workflows" / "drought_early_warning_hpc.yaml"
PLANTED_SECRET = "pl4nted-S3CRET-value-0451"  # a value that must never appear in a pod

SPEC = """
name: pods_wf
defaults:
  target: interlink
  image: registry.example.org/dt/steps@sha256:{digest}
  kubernetes:
    namespace: dt
    service_account: dt-runner
    image_pull_policy: IfNotPresent
    node_selector: {{nodepool: cpu}}
    tolerations: [{{key: dedicated, operator: Equal, value: dt, effect: NoSchedule}}]
    labels: {{team: drought}}
    annotations: {{owner: dt-team}}
  hpc:
    site: vega
    partition: cpu
    walltime: "00:30:00"
    flags: [--account=dt-proj]
    image_root: "docker://"
params:
  threshold: {{type: string, default: "0.5"}}
steps:
  - id: fit
    command: [python, "${{workflow_dir}}/fit.py"]
    args: [--threshold, "${{params.threshold}}", --out, "${{outputs.model}}"]
    env: {{OMP_NUM_THREADS: "8", THRESHOLD: "${{params.threshold}}"}}
    secrets: [{{env: Cds_Api_Key, secret: cds-credentials, key: api-key}}]
    resources: {{cpu: 8, memory: 16Gi, gpu: 1}}
    kubernetes:
      labels: {{stage: fit}}
      annotations: {{owner: fit-owner}}
    hpc:
      walltime: "02:00:00"
      nodes: 2
      tasks: 8
      gpus: 1
      flags: [--qos=normal, --constraint=a100 fast]
      mpi_flags: [--bind-to, core]
      singularity_options: --nv --cleanenv
      singularity_mounts: --bind /ceph/hpc/data/dt:/data
      pre_exec: module load Apptainer
      flavor: gpu-nvidia
    volumes:
      - {{name: calib, type: configMap, mount_path: /etc/calib, source: calib-tables}}
      - {{name: scratch, type: emptyDir, mount_path: /scratch}}
    outputs: [{{name: model, path: model.bin, media_type: application/octet-stream}}]
  - id: report
    target: kubernetes
    image: registry.example.org/dt/report:2.1
    command: [python, "-c", "print('report')"]
    needs: [fit]
    kubernetes:
      node_selector: {{disk: ssd}}
"""


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "pods_wf.yaml"
    path.write_text(SPEC.format(digest="ab" * 32))
    return path


def _pods(spec_file: Path, backend: str | None = None, **kw: Any) -> dict[str, dict[str, Any]]:
    from twinprov.dags.pod_dry_run import render_pod_manifests

    docs = render_pod_manifests(spec_file, backend, kw.pop("params", {}), **kw)
    return {
        (d["metadata"]["labels"].get("task_id") or d["metadata"]["name"])
        if d["kind"] == "Pod"
        else "configmap": d
        for d in docs
    }


def _by_step(docs: dict[str, dict[str, Any]], prefix: str) -> dict[str, Any]:
    return next(d for k, d in docs.items() if k.startswith(prefix))


def test_interlink_pod_placement_annotations_resources(spec_file: Path) -> None:
    pod = _by_step(_pods(spec_file), "pods-wf-fit")
    meta, spec = pod["metadata"], pod["spec"]
    # placement on the interLink virtual node: its label, not the cluster-wide nodepool selector
    assert spec["nodeSelector"] == {"virtual-node.interlink/type": "virtual-kubelet"}
    assert {"key": "virtual-node.interlink/no-schedule", "operator": "Exists"} in spec[
        "tolerations"
    ]
    assert {"key": "dedicated", "operator": "Equal", "value": "dt", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    # slurm-job.vk.io/* annotations: step over defaults, typed fields first, flags concatenated
    ann = meta["annotations"]
    flags = ann["slurm-job.vk.io/flags"]
    assert shlex.split(flags) == [
        "--partition=cpu",
        "--time=02:00:00",
        "--nodes=2",
        "--ntasks=8",
        "--gres=gpu:1",
        "--account=dt-proj",
        "--qos=normal",
        "--constraint=a100 fast",  # one flag with a space survives the plugin's shell split
    ]
    assert ann["slurm-job.vk.io/mpi-flags"] == "--bind-to core"
    assert ann["slurm-job.vk.io/singularity-options"] == "--nv --cleanenv"
    assert ann["slurm-job.vk.io/singularity-mounts"] == "--bind /ceph/hpc/data/dt:/data"
    assert ann["slurm-job.vk.io/pre-exec"] == "module load Apptainer"
    assert ann["slurm-job.vk.io/image-root"] == "docker://"
    assert ann["slurm-job.vk.io/flavor"] == "gpu-nvidia"
    assert ann["owner"] == "fit-owner"  # the step's annotation wins over the default's
    assert meta["labels"]["team"] == "drought" and meta["labels"]["stage"] == "fit"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "twinprov"
    assert meta["namespace"] == "dt" and spec["serviceAccountName"] == "dt-runner"
    (c,) = spec["containers"]
    assert c["image"] == "registry.example.org/dt/steps@sha256:" + "ab" * 32
    assert c["imagePullPolicy"] == "IfNotPresent"
    # the SLURM plugin reads limits (--cpus-per-task, --mem) and nvidia.com/gpu
    assert c["resources"]["limits"] == {"cpu": "8", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert c["resources"]["requests"] == {"cpu": "8", "memory": "16Gi"}


def test_secrets_are_secret_key_refs_and_no_value_is_in_the_pod(
    spec_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # even with the value in the local environment, the pod carries only a reference
    monkeypatch.setenv("Cds_Api_Key", PLANTED_SECRET)
    docs = _pods(spec_file)
    env = {e["name"]: e for e in _by_step(docs, "pods-wf-fit")["spec"]["containers"][0]["env"]}
    assert env["Cds_Api_Key"] == {
        "name": "Cds_Api_Key",  # its case kept (the provider's Secret upper-cases)
        "valueFrom": {"secretKeyRef": {"name": "cds-credentials", "key": "api-key"}},
    }
    assert env["OMP_NUM_THREADS"] == {"name": "OMP_NUM_THREADS", "value": "8"}
    assert env["THRESHOLD"]["value"] == "0.5"  # a param rendered into an env value
    text = yaml.safe_dump_all(list(docs.values()))
    assert PLANTED_SECRET not in text and PLANTED_SECRET not in json.dumps(list(docs.values()))


def test_argv_without_shell_and_the_wrapper_from_a_configmap(spec_file: Path) -> None:
    nasty = "0.7; rm -rf / #$(id) `id` ${HOME} {{ ti }}"
    docs = _pods(spec_file, params={"threshold": nasty})
    pod = _by_step(docs, "pods-wf-fit")
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python", "/opt/twinprov/stepwrap.py"]
    args = c["args"]
    assert args[:2] == ["--workspace", "/twinprov/runs/pods_wf/dry-run/work"]
    plan = json.loads(args[3])
    assert plan == {
        "step": "fit",
        "inputs": [],
        "outputs": [
            {"name": "model", "path": "model.bin", "media_type": "application/octet-stream"}
        ],
    }
    sep = args.index("--")
    assert args[sep + 1 :] == [
        "python",
        "/opt/twinprov/workflow/fit.py",
        "--threshold",
        nasty,  # one argv element, untouched: no shell, no Jinja
        "--out",
        "model.bin",
    ]
    assert not any(a in ("sh", "bash", "-c") for a in c["command"])
    # the step wrapper: a ConfigMap holding provenance/stepwrap.py, mounted as one file
    cm = docs["configmap"]
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["namespace"] == "dt"
    assert cm["data"] == {"stepwrap.py": Path(stepwrap.__file__).read_text()}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["twinprov-stepwrap"]["configMap"]["name"] == cm["metadata"]["name"]
    assert cm["metadata"]["name"].startswith("twinprov-stepwrap-0-1-0-")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["twinprov-stepwrap"] == {
        "name": "twinprov-stepwrap",
        "mountPath": "/opt/twinprov/stepwrap.py",
        "subPath": "stepwrap.py",
        "readOnly": True,
    }
    # interLink serves ConfigMap, Secret and EmptyDir volumes: the workspace is an emptyDir
    assert vols["twinprov-workspace"] == {"name": "twinprov-workspace", "emptyDir": {}}
    assert vols["calib"]["configMap"]["name"] == "calib-tables"
    assert mounts["calib"]["readOnly"] is True and mounts["scratch"]["mountPath"] == "/scratch"


def test_kubernetes_pod_uses_cluster_settings_and_a_pvc_workspace(spec_file: Path) -> None:
    from twinprov.dags.pod_spec import KubeSettings

    docs = _pods(spec_file, settings=KubeSettings(workspace_claim="dt-runs"))
    pod = _by_step(docs, "pods-wf-report")
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"nodepool": "cpu", "disk": "ssd"}  # defaults + step
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "dt", "effect": "NoSchedule"}
    ]
    assert not any(k.startswith("slurm-job.vk.io/") for k in pod["metadata"]["annotations"])
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["twinprov-workspace"]["persistentVolumeClaim"] == {"claimName": "dt-runs"}
    assert spec["containers"][0]["image"] == "registry.example.org/dt/report:2.1"
    assert spec["restartPolicy"] == "Never"


def test_site_overrides_of_the_interlink_placement(tmp_path: Path) -> None:
    text = SPEC.format(digest="cd" * 32).replace(
        "  hpc:\n    site: vega",
        "  interlink:\n"
        "    node_selector: {kubernetes.io/hostname: vega-vk}\n"
        "    tolerations: [{key: site.example/hpc, operator: Exists, effect: NoExecute}]\n"
        "  hpc:\n    site: vega",
        1,
    )
    path = tmp_path / "site.yaml"
    path.write_text(text)
    pod = _by_step(_pods(path), "pods-wf-fit")
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "vega-vk"}
    keys = [t["key"] for t in pod["spec"]["tolerations"]]
    assert keys[0] == "virtual-node.interlink/no-schedule" and "site.example/hpc" in keys


def test_interlink_host_path_workspace_setting(spec_file: Path) -> None:
    from twinprov.dags.pod_spec import KubeSettings

    settings = KubeSettings(interlink_host_path="/ceph/hpc/data/dt/twinprov")
    pod = _by_step(_pods(spec_file, settings=settings), "pods-wf-fit")
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["twinprov-workspace"]["hostPath"] == {
        "path": "/ceph/hpc/data/dt/twinprov",
        "type": "DirectoryOrCreate",  # a type the SLURM plugin's prepareMounts accepts
    }


def test_settings_come_from_airflow_config(monkeypatch: pytest.MonkeyPatch) -> None:
    from twinprov.dags.pod_spec import KubeSettings

    monkeypatch.setenv("AIRFLOW__TWINPROV__KUBE_WORKSPACE_CLAIM", "runs-rwx")
    monkeypatch.setenv("AIRFLOW__TWINPROV__INTERLINK_STARTUP_TIMEOUT_SECONDS", "600")
    monkeypatch.setenv("AIRFLOW__TWINPROV__KUBE_ENSURE_STEPWRAP_CONFIGMAP", "false")
    s = KubeSettings.load()
    assert s.workspace_claim == "runs-rwx" and s.interlink_startup_timeout == 600
    assert s.ensure_configmap is False and s.interlink_host_path is None


def test_operator_is_the_providers_kpo_without_xcom_sidecar(spec_file: Path) -> None:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from twinprov.dags.pod_operator import kube_step_operator
    from twinprov.dags.pod_spec import KubeSettings

    spec = load_spec(spec_file)
    op = kube_step_operator(
        spec, spec.step("fit"), spec_path=str(spec_file), target="interlink",
        settings=KubeSettings(), task_id="fit",
    )  # fmt: skip
    assert isinstance(op, KubernetesPodOperator) and op.twinprov_role == "step"
    assert op.do_xcom_push is False and op.get_logs is True and op.deferrable is False
    assert op.startup_timeout_seconds == 86400  # a SLURM job may wait in the queue
    assert op.twinprov_static == {
        "target": "interlink",
        "image": "registry.example.org/dt/steps@sha256:" + "ab" * 32,
        "image_pinned": True,
        "environment": {
            "kind": "container",
            "digest": "sha256:" + "ab" * 32,
            "image": "registry.example.org/dt/steps@sha256:" + "ab" * 32,
        },
    }
    report = kube_step_operator(
        spec, spec.step("report"), spec_path=str(spec_file), target="kubernetes",
        settings=KubeSettings(), task_id="report",
    )  # fmt: skip
    assert report.twinprov_static["image_pinned"] is False
    env = report.twinprov_static["environment"]
    assert env["digest"] == "unpinned-" + env["image"]  # its own agent, named by the image
    with pytest.raises(TwinprovError, match="do_xcom_push"):
        kube_step_operator(
            spec, spec.step("fit"), spec_path=str(spec_file), target="interlink",
            settings=KubeSettings(), task_id="x", do_xcom_push=True,
        )  # fmt: skip


def test_bad_volumes_and_backends_are_refused(tmp_path: Path, spec_file: Path) -> None:
    from twinprov.dags.pod_dry_run import render_pod_manifests

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        SPEC.format(digest="ab" * 32).replace(
            "{name: scratch, type: emptyDir, mount_path: /scratch}",
            "{name: twinprov-workspace, type: emptyDir, mount_path: /scratch}",
        )
    )
    with pytest.raises(SpecError, match=r"volumes\[1\].name: 'twinprov-workspace' is reserved"):
        render_pod_manifests(bad, None, {})
    with pytest.raises(TwinprovError, match="runs no pods"):
        render_pod_manifests(spec_file, "local", {})
    with pytest.raises(TwinprovError, match="unknown parameter"):
        render_pod_manifests(spec_file, None, {"nope": 1})


def test_local_steps_have_no_pod(tmp_path: Path) -> None:
    from twinprov.dags.pod_dry_run import render_pod_manifests

    path = tmp_path / "mixed.yaml"
    path.write_text(
        textwrap.dedent("""
        name: mixed
        steps:
          - id: here
            command: [python, -c, "print(1)"]
          - id: there
            target: kubernetes
            image: python:3.11-slim
            command: [python, -c, "print(2)"]
        """)
    )
    docs = render_pod_manifests(path, None, {}, namespace="sandbox")
    assert [d["kind"] for d in docs] == ["ConfigMap", "Pod"]
    assert docs[1]["metadata"]["namespace"] == "sandbox"
    assert docs[1]["spec"]["containers"][0]["args"][-3:] == ["python", "-c", "print(2)"]


def test_demo_hpc_spec_renders_for_both_targets() -> None:
    """The demo HPC spec, reviewed against the interLink code (see module docstring)."""
    mixed = _pods(HPC_SPEC)
    spi = _by_step(mixed, "drought-early-warning-hpc-compute-spi")
    assert spi["spec"]["nodeSelector"] == {"virtual-node.interlink/type": "virtual-kubelet"}
    assert spi["metadata"]["annotations"] == {
        "slurm-job.vk.io/flags": "--partition=cpu --time=01:00:00 --nodes=1 --ntasks=1",
        "slurm-job.vk.io/singularity-options": "--cleanenv",
        "slurm-job.vk.io/image-root": "docker://",
    }
    assert spi["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    gen = _by_step(mixed, "drought-early-warning-hpc-generate")
    assert gen["spec"]["nodeSelector"] == {} and gen["metadata"]["namespace"] == "twinprov"
    for backend in ("kubernetes", "interlink"):
        docs = _pods(HPC_SPEC, backend)
        pods = [d for k, d in docs.items() if k != "configmap"]
        assert len(pods) == 3
        for pod in pods:
            image = pod["spec"]["containers"][0]["image"]
            assert "@sha256:" in image
            on_vk = "virtual-node.interlink/type" in (pod["spec"]["nodeSelector"] or {})
            assert on_vk is (backend == "interlink")


@pytest.mark.parametrize(
    ("image_id", "digest"),
    [
        ("docker.io/library/python@sha256:" + "0f" * 32, "sha256:" + "0f" * 32),  # containerd
        ("docker-pullable://python@sha256:" + "0f" * 32, "sha256:" + "0f" * 32),  # dockershim
        ("sha256:" + "0f" * 32, "sha256:" + "0f" * 32),  # an image loaded into the node
        ("", None),  # interLink: no image id
        (None, None),
    ],
)
def test_digest_from_container_status_image_id(image_id: str | None, digest: str | None) -> None:
    from twinprov.dags.pod_operator import _digest_of_image_id

    assert _digest_of_image_id(image_id) == digest
