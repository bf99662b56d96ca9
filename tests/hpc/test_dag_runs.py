"""Whole DAG runs (real Airflow ``dag.test()``) of steps on the kubernetes and interlink targets.

In every test only the Kubernetes API boundary is faked (:mod:`tests.hpc.fake_kube`: the
HTTP-calling methods of ``kubernetes.client.CoreV1Api`` used by the provider's ``PodManager`` /
``KubernetesPodOperator`` to create the pod, await its start and completion and read its log, plus
the ConfigMap calls). The provider's operator, the hook, twinprov's operator and listener, the
ledger and the publication are the real code, and the pod logs are the real output of the step
wrapper run by the fake kubelet.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.hpc.conftest import PYTHON_DIGEST, STEPS_DIGEST, STEPS_REPO
from tests.hpc.fake_kube import VIRTUAL_NODE, WORKER_NODE, FakeCluster
from twinprov.provenance import stepwrap
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger, TaskEvent
from twinprov.provenance.store import EmbeddedStore

PLANTED = "pl4nted-S3CRET-token-9137"
GREETING = "hello {{ ti }} $(id) `id`; rm -rf /"  # must reach the step verbatim
PRODUCE = (
    "import os, sys, pathlib\n"
    "assert os.environ['API_TOKEN'], 'no token'\n"
    "p = pathlib.Path(sys.argv[2]); p.parent.mkdir(parents=True, exist_ok=True)\n"
    "p.write_text(sys.argv[1]); print('wrote', p)"
)
CONSUME = (
    "import json, sys\n"
    "text = open(sys.argv[1]).read()\n"
    "json.dump({'chars': len(text)}, open(sys.argv[2], 'w')); print('chars', len(text))"
)
HOST_PATH = "/ceph/hpc/data/dt/twinprov"


def _two_step(target: str, image: str, **defaults: Any) -> dict[str, Any]:
    return {
        "name": f"{target}_two_step",
        "defaults": {"target": target, "image": image, "kubernetes": {"namespace": "dt"}}
        | defaults,
        "params": {"greeting": {"type": "string", "default": GREETING}},
        "steps": [
            {
                "id": "produce",
                "command": ["python", "-c", PRODUCE, "${params.greeting}", "${outputs.text}"],
                "env": {"LANG": "C.UTF-8"},
                "secrets": [{"env": "API_TOKEN", "secret": "dt-credentials", "key": "token"}],
                "resources": {"cpu": "500m", "memory": "256Mi"},
                "outputs": [{"name": "text", "path": "out/text.txt", "media_type": "text/plain"}],
            },
            {
                "id": "consume",
                "command": ["python", "-c", CONSUME, "${inputs.text}", "${outputs.count}"],
                "inputs": [{"name": "text", "from": "produce.text"}],
                "outputs": [
                    {"name": "count", "path": "count.json", "media_type": "application/json"}
                ],
            },
        ],
    }


def _write(folder: Path, spec: dict[str, Any]) -> Path:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _final(dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    """The last event of each task, payload merged as the PROV builder does."""
    out: dict[str, dict[str, Any]] = {}
    events: list[TaskEvent] = Ledger(Settings.load().ledger_url).events(dag_id, run_id)
    for ev in events:
        merged = out.setdefault(ev.task_id, {})
        merged.update({k: v for k, v in ev.payload.items() if v is not None})
        merged["state"] = ev.state
    return out


def _select(sparql: str) -> list[dict[str, str]]:
    with EmbeddedStore(Settings.load().store_path).open() as store:
        res = store.query(sparql)
        names = [v.value for v in res.variables]
        return [{n: sol[n].value for n in names if sol[n] is not None} for sol in res]


def _graph(dag_id: str, run_id: str) -> str:
    rec = Ledger(Settings.load().ledger_url).run(dag_id, run_id)
    assert rec is not None and rec.published_digest
    return str(rec.publication["graph"])


def _task_rows(graph: str) -> dict[str, dict[str, str]]:
    rows = _select(f"""
        PREFIX tp: <urn:twinprov:vocab#>
        SELECT ?task ?state ?target ?image ?digest ?pinned ?pod ?ns ?node ?job ?partition
               ?walltime ?flags ?hpcnode ?error ?env ?code WHERE {{ GRAPH <{graph}> {{
          ?a a tp:TaskTry ; tp:taskId ?task ; tp:state ?state .
          OPTIONAL {{ ?a tp:target ?target }} OPTIONAL {{ ?a tp:image ?image }}
          OPTIONAL {{ ?a tp:imageDigest ?digest }} OPTIONAL {{ ?a tp:imagePinned ?pinned }}
          OPTIONAL {{ ?a tp:podName ?pod }} OPTIONAL {{ ?a tp:namespace ?ns }}
          OPTIONAL {{ ?a tp:node ?node }} OPTIONAL {{ ?a tp:hpcJobId ?job }}
          OPTIONAL {{ ?a tp:partition ?partition }} OPTIONAL {{ ?a tp:walltime ?walltime }}
          OPTIONAL {{ ?a tp:slurmFlags ?flags }} OPTIONAL {{ ?a tp:hpcNode ?hpcnode }}
          OPTIONAL {{ ?a tp:error ?error }} OPTIONAL {{ ?a tp:exitCode ?code }}
          OPTIONAL {{ ?a <http://www.w3.org/ns/prov#wasAssociatedWith> ?env .
                     ?env a <http://www.w3.org/ns/prov#SoftwareAgent> .
                     FILTER(CONTAINS(STR(?env), "/env/container-")) }}
        }} }}""")
    return {r["task"]: r for r in rows}


def _no_secret_anywhere(home: Path) -> None:
    hits = [
        p
        for p in home.rglob("*")
        if p.is_file() and PLANTED.encode() in p.read_bytes()  # ledger, PROV files, store…
    ]
    assert hits == []


def test_kubernetes_two_step_run_records_digest_pod_and_data(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two pods on a cluster node (an unpinned image: the digest comes from the pod status);
    files flow between them through a PVC workspace. Faked: the Kubernetes API only."""
    from twinprov.dags.runner import run_workflow

    monkeypatch.setenv("AIRFLOW__TWINPROV__KUBE_WORKSPACE_CLAIM", "dt-runs")
    fake_cluster.secrets[("dt", "dt-credentials")] = {"token": PLANTED}
    spec = _write(workflows_dir, _two_step("kubernetes", "python:3.11-slim"))
    outcome = run_workflow(str(spec), {})
    assert outcome.state == "success"

    final = _final(outcome.dag_id, outcome.run_id)
    for task in ("produce", "consume"):
        p = final[task]
        assert p["state"] == "success" and p["target"] == "kubernetes"
        assert p["image"] == "python:3.11-slim" and p["image_pinned"] is False
        assert p["image_digest"] == PYTHON_DIGEST  # read from status.containerStatuses[].imageID
        assert p["image_id"] == f"docker.io/library/python@{PYTHON_DIGEST}"
        assert p["environment"] == {
            "kind": "container",
            "digest": PYTHON_DIGEST,
            "image": "python:3.11-slim",
        }
        assert p["pod"]["namespace"] == "dt" and p["pod"]["node"] == WORKER_NODE
        assert p["pod"]["name"].startswith(f"kubernetes-two-step-{task}-")
        assert p["pod"]["phase"] == "Succeeded" and "hpc" not in p
        assert p["manifest"]["exit_code"] == 0
    # the param reached the step verbatim (no Jinja, no shell) and the file flowed to step 2
    (text,) = final["produce"]["manifest"]["outputs"]
    assert text["sha256"] == hashlib.sha256(GREETING.encode()).hexdigest()
    (count,) = final["consume"]["manifest"]["outputs"]
    runs = fake_cluster.storage("pvc", "dt-runs")
    assert json.loads(Path(runs, count["abs_path"]).read_text()) == {"chars": len(GREETING)}
    # the operator created the step wrapper's ConfigMap; the pods were deleted when done
    cm = fake_cluster.configmaps[("dt", next(n for ns, n in fake_cluster.configmaps))]
    assert cm.data == {"stepwrap.py": Path(stepwrap.__file__).read_text()}
    assert all(run.deleted for run in fake_cluster.pods.values())
    assert "read_namespaced_pod_log" in fake_cluster.calls

    rows = _task_rows(_graph(outcome.dag_id, outcome.run_id))
    assert rows["produce"]["digest"] == PYTHON_DIGEST and rows["produce"]["pinned"] == "false"
    assert rows["produce"]["node"] == WORKER_NODE and rows["produce"]["ns"] == "dt"
    assert rows["produce"]["pod"] == final["produce"]["pod"]["name"]
    assert rows["consume"]["env"].endswith("env/container-sha256%3A" + "a1" * 32)
    _no_secret_anywhere(twinprov_home)


def test_interlink_two_step_run_records_job_ids_site_and_pinned_digest(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two pods placed on the interLink virtual node (it reports no image digest and sets the
    ``JobID`` annotation); the workspace is a hostPath on the site's shared filesystem.
    Faked: the Kubernetes API only."""
    from twinprov.dags.runner import run_workflow

    monkeypatch.setenv("AIRFLOW__TWINPROV__INTERLINK_WORKSPACE_HOST_PATH", HOST_PATH)
    fake_cluster.secrets[("dt", "dt-credentials")] = {"token": PLANTED}
    hpc = {
        "site": "vega",
        "partition": "cpu",
        "walltime": "00:10:00",
        "nodes": 1,
        "tasks": 1,
        "flags": ["--account=dt-proj"],
    }
    image = f"{STEPS_REPO}@{STEPS_DIGEST}"
    spec = _write(workflows_dir, _two_step("interlink", image, hpc=hpc))
    outcome = run_workflow(str(spec), {})
    assert outcome.state == "success"

    final = _final(outcome.dag_id, outcome.run_id)
    job_ids = set()
    for task in ("produce", "consume"):
        p = final[task]
        assert p["state"] == "success" and p["target"] == "interlink"
        assert p["image_pinned"] is True and p["image_digest"] == STEPS_DIGEST
        assert p.get("image_id") is None  # interLink reports none: the pinned digest is used
        assert p["pod"]["node"] == VIRTUAL_NODE
        h = p["hpc"]
        assert h["site"] == "vega" and h["partition"] == "cpu" and h["walltime"] == "00:10:00"
        assert h["flags"] == [
            "--partition=cpu",
            "--time=00:10:00",
            "--nodes=1",
            "--ntasks=1",
            "--account=dt-proj",
        ]
        assert h["node"] == socket.gethostname()  # where the wrapper ran (the HPC node)
        job_ids.add(h["job_id"])
    assert job_ids == {"4242001", "4242002"}
    created = {p.metadata.labels["task_id"]: p for p in fake_cluster.created}
    assert created["produce"].metadata.annotations["slurm-job.vk.io/flags"] == (
        "--partition=cpu --time=00:10:00 --nodes=1 --ntasks=1 --account=dt-proj"
    )
    (count,) = final["consume"]["manifest"]["outputs"]
    shared = fake_cluster.storage("host", HOST_PATH)
    assert json.loads(Path(shared, count["abs_path"]).read_text()) == {"chars": len(GREETING)}

    graph = _graph(outcome.dag_id, outcome.run_id)
    rows = _task_rows(graph)
    assert {rows[t]["job"] for t in ("produce", "consume")} == job_ids
    r = rows["produce"]
    assert r["digest"] == STEPS_DIGEST and r["pinned"] == "true" and r["node"] == VIRTUAL_NODE
    assert r["partition"] == "cpu" and r["walltime"] == "00:10:00"
    assert r["flags"] == "--partition=cpu --time=00:10:00 --nodes=1 --ntasks=1 --account=dt-proj"
    assert r["hpcnode"] == socket.gethostname()
    site = _select(f"""
        PREFIX prov: <http://www.w3.org/ns/prov#>
        PREFIX tp: <urn:twinprov:vocab#>
        PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>
        SELECT DISTINCT ?site ?label WHERE {{ GRAPH <{graph}> {{
          ?a a tp:TaskTry ; prov:wasAssociatedWith ?site .
          ?site a prov:Organization ; tp:role "hpc-site" ; rdfs:label ?label .
          ?env prov:actedOnBehalfOf ?site . }} }}""")
    assert [s["label"] for s in site] == ["vega"]
    _no_secret_anywhere(twinprov_home)


FAILING_CODE = "import sys; print('working'); sys.exit(3)"
OK_CODE = (
    "import sys, pathlib; print('line 1'); print('line 2'); print('line 3'); "
    "pathlib.Path(sys.argv[1]).write_text('x')"
)


def test_failed_pods_are_in_the_provenance(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
) -> None:
    """Four independent steps that each fail in a different way: a non-zero exit (manifest
    says 3), an evicted pod, a pod log without the manifest (interLink, unpinned image), and an
    image that cannot be pulled (the pod never starts). Faked: the Kubernetes API only."""
    from twinprov.dags.runner import run_workflow

    def out(path: str) -> list[dict[str, str]]:
        return [{"name": "x", "path": path, "media_type": "text/plain"}]

    spec = {
        "name": "pods_failing",
        "defaults": {"target": "kubernetes", "image": "python:3.11-slim"},
        "steps": [
            {"id": "exits_3", "command": ["python", "-c", FAILING_CODE]},
            {
                "id": "evicted",
                "command": ["python", "-c", OK_CODE, "${outputs.x}"],
                "outputs": out("a.txt"),
            },
            {
                "id": "log_cut",
                "target": "interlink",
                "image": f"{STEPS_REPO}:1.0.0",
                "resources": {"memory": "1Gi"},
                "command": ["python", "-c", OK_CODE, "${outputs.x}"],
                "outputs": out("b.txt"),
            },
            {
                "id": "no_image",
                "image": "registry.example.org/dt/missing:9.9",
                "command": ["python", "-c", "print(1)"],
            },
        ],
    }
    fake_cluster.evict.add("evicted")
    fake_cluster.truncate_log.add("log_cut")
    outcome = run_workflow(str(_write(workflows_dir, spec)), {})
    assert outcome.state == "failed"

    final = _final(outcome.dag_id, outcome.run_id)
    assert {t: final[t]["state"] for t in ("exits_3", "evicted", "log_cut", "no_image")} == {
        "exits_3": "failed",
        "evicted": "failed",
        "log_cut": "failed",
        "no_image": "failed",
    }
    assert final["exits_3"]["error"] == "step exits_3 failed: exit code 3"
    assert final["exits_3"]["manifest"]["exit_code"] == 3
    assert final["exits_3"]["image_digest"] == PYTHON_DIGEST
    ev = final["evicted"]
    assert ev["error"].startswith("step evicted: no manifest in the log of pod default/")
    assert "reason Evicted: The node was low on resource: memory" in ev["error"]
    assert ev["pod"]["phase"] == "Failed" and ev["pod"]["reason"] == "Evicted"
    cut = final["log_cut"]
    assert cut["error"].startswith("step log_cut: no manifest in the log of pod default/")
    assert "\n" not in cut["error"]
    assert cut["image_pinned"] is False and "image_digest" not in cut  # unpinned on interLink
    assert cut["hpc"]["job_id"] == "4242001" and cut["pod"]["node"] == VIRTUAL_NODE
    ni = final["no_image"]
    assert ni["error"].startswith("step no_image: pod default/")
    assert "did not start: Image cannot be pulled, unable to start: ErrImagePull" in ni["error"]
    assert ni["pod"]["name"].startswith("pods-failing-no-image-")

    rows = _task_rows(_graph(outcome.dag_id, outcome.run_id))
    for task in ("exits_3", "evicted", "log_cut", "no_image"):
        assert rows[task]["state"] == "failed"
        assert rows[task]["error"] == final[task]["error"]
        assert rows[task]["pod"] == final[task]["pod"]["name"]
    assert rows["exits_3"]["code"] == "3"
    assert rows["log_cut"]["job"] == "4242001" and rows["log_cut"]["pinned"] == "false"
    assert "digest" not in rows["log_cut"]


def test_demo_hpc_spec_through_the_fakes(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The demo HPC spec end to end, its SPI step on the interLink virtual node, at a site where
    the cluster's PVC and the HPC hostPath are the same filesystem. Faked: the Kubernetes API
    only (the step programs really run)."""
    from twinprov.dags.runner import run_workflow

    monkeypatch.setenv("AIRFLOW__TWINPROV__KUBE_WORKSPACE_CLAIM", "dt-runs")
    monkeypatch.setenv("AIRFLOW__TWINPROV__INTERLINK_WORKSPACE_HOST_PATH", HOST_PATH)
    fake_cluster.shared = {"pvc:dt-runs": "site-fs", f"host:{HOST_PATH}": "site-fs"}
    spec = workflows_dir / "drought_early_warning_hpc.yaml"  # alone in its folder
    spec.write_text((REPO / "dags" / "workflows" / spec.name).read_text())
    shutil.copytree(REPO / "dags" / "workflows" / "drought", workflows_dir / "drought")  # build:
    outcome = run_workflow(str(spec), {"seed": 7})
    assert outcome.state == "success"
    final = _final(outcome.dag_id, outcome.run_id)
    assert final["compute_spi"]["pod"]["node"] == VIRTUAL_NODE
    assert final["compute_spi"]["hpc"]["job_id"] == "4242001"
    assert final["generate_precipitation"]["pod"]["node"] == WORKER_NODE
    steps = [p for t, p in final.items() if t != "publish_provenance"]
    assert {p["image_digest"] for p in steps} == {STEPS_DIGEST}
    outputs = {o["name"] for p in steps for o in p["manifest"]["outputs"]}
    assert outputs == {"precipitation", "spi", "hazard_map", "summary"}


def test_a_tampered_step_wrapper_configmap_is_refused(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
) -> None:
    """A ConfigMap of the wrapper's name whose content was changed in the cluster (it could
    forge manifests) stops the step before any pod exists. Faked: the Kubernetes API only."""
    from kubernetes.client import models as k8s

    from twinprov.dags.pod_stepwrap import stepwrap_configmap_name
    from twinprov.dags.runner import run_workflow

    name = stepwrap_configmap_name()
    fake_cluster.configmaps[("default", name)] = k8s.V1ConfigMap(
        metadata=k8s.V1ObjectMeta(name=name, namespace="default"),
        data={"stepwrap.py": "print('TWINPROV_MANIFEST {\"exit_code\": 0}')"},
    )
    spec = {
        "name": "pods_tampered",
        "defaults": {"target": "kubernetes", "image": "python:3.11-slim"},
        "steps": [{"id": "only", "command": ["python", "-c", "print(1)"]}],
    }
    outcome = run_workflow(str(_write(workflows_dir, spec)), {})
    assert outcome.state == "failed"
    only = _final(outcome.dag_id, outcome.run_id)["only"]
    assert only["error"] == (
        f"step only: pod default/{only['pod']['name']} was not created: "
        f"ConfigMap default/{name} does not hold twinprov's step wrapper; delete it"
    )
    assert fake_cluster.created == []
