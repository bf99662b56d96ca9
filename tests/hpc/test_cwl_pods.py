"""CWL steps as pods: the image of the ``DockerRequirement``, requests from the
``ResourceRequirement``, placement from the overlay file, through a whole ``dag.test()`` run.

Only the Kubernetes API boundary is faked (:mod:`tests.hpc.fake_kube`): its kubelet runs each
pod's command (the step wrapper running the command line cwltool bound) on this machine, with the
PersistentVolumeClaim of the run workspace backed by the worker's own ``runs_dir``, the storage
both mount at one path. cwltool, the provider's ``KubernetesPodOperator``, the operator, the
listener and the publication are the real code.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hpc.conftest import PYTHON_DIGEST
from tests.hpc.fake_kube import VIRTUAL_NODE, WORKER_NODE, FakeCluster
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

POEM = "the river rises\nthe fields are dry\n"

WORKFLOW = """\
cwlVersion: v1.2
class: Workflow
inputs:
  poem: File
outputs:
  counted: {type: File, outputSource: count/counted}
  loud: {type: File, outputSource: shout/loud}
steps:
  count:
    in: {text: poem}
    out: [counted]
    run:
      class: CommandLineTool
      requirements:
        DockerRequirement: {dockerPull: "python:3.11-slim"}
        ResourceRequirement: {coresMin: 2, ramMin: 300}
        EnvVarRequirement: {envDef: {GREETING: counted}}
      baseCommand:
        - python3
        - -c
        - "import os, sys; print(os.environ['GREETING'], len(open(sys.argv[1]).read()))"
      inputs:
        text: {type: File, inputBinding: {position: 1}}
      stdout: count.txt
      outputs:
        counted: stdout
  shout:
    in: {text: poem}
    out: [loud]
    run:
      class: CommandLineTool
      requirements:
        DockerRequirement: {dockerPull: "python:3.11-slim"}
      baseCommand: [python3, -c, "import sys; print(sys.stdin.read().upper(), end='')"]
      inputs:
        text: File
      stdin: $(inputs.text.path)
      stdout: loud.txt
      outputs:
        loud: stdout
"""


def _document(folder: Path, overlay: dict[str, object]) -> Path:
    cwl = folder / "poem.cwl"
    cwl.write_text(WORKFLOW)
    cwl.with_name("poem.twinprov.yml").write_text(yaml.safe_dump(overlay))
    return cwl


def _job(folder: Path, poem: Path) -> Path:
    job = folder / "poem.job.json"
    job.write_text(json.dumps({"poem": {"class": "File", "path": str(poem)}}))
    return job


@pytest.fixture
def on_cluster(
    tmp_path: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> FakeCluster:
    monkeypatch.setenv("AIRFLOW__TWINPROV__KUBE_WORKSPACE_CLAIM", "dt-runs")
    monkeypatch.setenv("TWINPROV_CWL_DOCUMENT", "")  # run_cwl sets it; restored afterwards
    runs = Settings.load().runs_dir
    runs.mkdir(parents=True, exist_ok=True)
    fake_cluster.backing["pvc:dt-runs"] = runs
    return fake_cluster


def _latest(dag_id: str) -> tuple[str, str, str]:
    """(run id, state, every task's error) of the newest run of ``dag_id``."""
    ledger = Ledger(Settings.load().ledger_url)
    run = max((r for r in ledger.runs() if r.dag_id == dag_id), key=lambda r: r.first_seen)
    errors = " | ".join(
        str(ev.payload["error"])
        for ev in ledger.events(run.dag_id, run.run_id)
        if ev.payload.get("error")
    )
    return run.run_id, str(run.state), errors


def _final(dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
    final: dict[str, dict[str, Any]] = {}
    for ev in Ledger(Settings.load().ledger_url).events(dag_id, run_id):
        final.setdefault(ev.task_id, {}).update(
            {k: v for k, v in ev.payload.items() if v is not None}
        )
    return final


def test_cwl_steps_run_as_pods_with_their_images_resources_and_placement(
    airflow_db: None, tmp_path: Path, on_cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinprov.dags.cwl_runner import run_cwl

    overlay = {
        "defaults": {"target": "kubernetes", "kubernetes": {"namespace": "dt"}},
        "steps": {"shout": {"target": "interlink", "hpc": {"partition": "cpu"}}},
    }
    on_cluster.backing["host:/ceph/dt"] = Settings.load().runs_dir
    poem = Settings.load().runs_dir / "inputs" / "poem.txt"
    poem.parent.mkdir(parents=True)
    poem.write_text(POEM)
    cwl = _document(tmp_path, overlay)
    monkeypatch.setenv("AIRFLOW__TWINPROV__INTERLINK_WORKSPACE_HOST_PATH", "/ceph/dt")
    code, result = run_cwl(str(cwl), str(_job(tmp_path, poem)), str(tmp_path / "out"))
    assert code == 0 and result is not None
    # the commands ran in the pods: env from EnvVarRequirement, stdin/stdout redirections
    assert Path(result["counted"]["path"]).read_text() == f"counted {len(POEM)}\n"
    assert Path(result["loud"]["path"]).read_text() == POEM.upper()

    pods = {p.metadata.labels["task_id"]: p for p in on_cluster.created}
    assert set(pods) == {"count", "shout"}
    count, shout = pods["count"].spec, pods["shout"].spec
    assert count.containers[0].image == "python:3.11-slim"
    assert count.containers[0].resources.requests == {"cpu": "2", "memory": "300Mi"}
    assert {e.name: e.value for e in count.containers[0].env}["GREETING"] == "counted"
    assert pods["count"].metadata.namespace == "dt"
    assert on_cluster.pods[("dt", pods["count"].metadata.name)].node == WORKER_NODE
    assert on_cluster.pods[("dt", pods["shout"].metadata.name)].node == VIRTUAL_NODE
    annotations = pods["shout"].metadata.annotations
    assert annotations["slurm-job.vk.io/flags"] == "--partition=cpu"
    assert shout.containers[0].resources is None  # no ResourceRequirement
    # the workspace is mounted where the worker has it: cwltool's paths hold in the pod
    (mount,) = [m for m in count.containers[0].volume_mounts if m.name == "twinprov-workspace"]
    assert mount.mount_path == str(Settings.load().runs_dir)

    run_id, state, _ = _latest("cwl_poem")
    assert state == "success"
    final = _final("cwl_poem", run_id)
    facts = final["count"]
    assert facts["target"] == "kubernetes" and facts["image_digest"] == PYTHON_DIGEST
    assert facts["cwl"]["container"] == "pod"
    assert facts["manifest"]["exit_code"] == 0
    (out,) = facts["manifest"]["outputs"]
    assert out["name"] == "counted" and len(out["sha256"]) == 64
    assert final["shout"]["target"] == "interlink"
    assert final["shout"]["hpc"]["job_id"]  # the JobID annotation interLink sets


def test_an_input_the_pods_cannot_see_is_refused_by_name(
    airflow_db: None, tmp_path: Path, on_cluster: FakeCluster
) -> None:
    from twinprov.dags.cwl_runner import run_cwl

    cwl = _document(tmp_path, {"defaults": {"target": "kubernetes"}})
    poem = tmp_path / "elsewhere" / "poem.txt"  # not under runs_dir
    poem.parent.mkdir()
    poem.write_text(POEM)
    code, result = run_cwl(str(cwl), str(_job(tmp_path, poem)), str(tmp_path / "out"))
    assert code == 1 and result is None
    assert on_cluster.created == []  # no pod was submitted
    _, state, errors = _latest("cwl_poem")
    assert state == "failed"
    assert f"{poem} is outside the run workspace" in errors


def test_cwl_pods_need_a_shared_workspace(
    airflow_db: None,
    tmp_path: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twinprov.dags.cwl_runner import run_cwl

    monkeypatch.setenv("TWINPROV_CWL_DOCUMENT", "")
    cwl = _document(tmp_path, {"defaults": {"target": "kubernetes"}})
    poem = tmp_path / "poem.txt"
    poem.write_text(POEM)
    code, _ = run_cwl(str(cwl), str(_job(tmp_path, poem)), str(tmp_path / "out"))
    assert code == 1 and fake_cluster.created == []
    _, state, errors = _latest("cwl_poem")
    assert state == "failed" and "kube_workspace_claim" in errors


def test_twinprov_pods_shows_the_package_steps_on_interlink(tmp_path: Path) -> None:
    """The dry run of the example package: no cluster, no credentials."""
    from tests.conftest import REPO
    from twinprov.dags.pod_dry_run import render_cwl_pod_manifests

    docs = render_cwl_pod_manifests(
        REPO / "dags" / "workflows" / "drought_hazard_package.cwl", "interlink"
    )
    prefix = "cwl-drought-hazard-package-"
    pods = {
        d["metadata"]["name"][len(prefix) :].rsplit("-", 1)[0]: d
        for d in docs
        if d["kind"] == "Pod"
    }
    assert set(pods) == {"select", "publish"}
    select, publish = (pods[k]["spec"]["containers"][0] for k in ("select", "publish"))
    assert select["image"] == "docker.io/library/python:3.12-slim"
    # select: the package's ResourceRequirement; publish: the overlay's resources
    assert select["resources"]["requests"] == {"cpu": "1", "memory": "256Mi"}
    assert publish["resources"]["requests"] == {"cpu": "1", "memory": "512Mi"}
    flags = pods["publish"]["metadata"]["annotations"]["slurm-job.vk.io/flags"]
    assert flags == "--partition=cpu --time=00:10:00"  # the overlay's step over its defaults
    assert pods["select"]["spec"]["nodeSelector"] == {
        "virtual-node.interlink/type": "virtual-kubelet"
    }


SCATTERED = """\
cwlVersion: v1.2
class: Workflow
requirements: {ScatterFeatureRequirement: {}}
inputs:
  poems: File[]
outputs:
  sizes: {type: "File[]", outputSource: size/counted}
steps:
  size:
    scatter: text
    in: {text: poems}
    out: [counted]
    run:
      class: CommandLineTool
      requirements:
        DockerRequirement: {dockerPull: "python:3.11-slim"}
      hints:
        ToolTimeLimit: {timelimit: 600}
      baseCommand: [python3, -c, "import sys; print(len(open(sys.argv[1]).read()))"]
      inputs:
        text: {type: File, inputBinding: {position: 1}}
      stdout: size.txt
      outputs:
        counted: stdout
"""


def test_a_scattered_step_on_a_pod_target_runs_one_pod_per_element(
    airflow_db: None, tmp_path: Path, on_cluster: FakeCluster
) -> None:
    from twinprov.dags.cwl_runner import run_cwl

    cwl = tmp_path / "sizes.cwl"
    cwl.write_text(SCATTERED)
    cwl.with_name("sizes.twinprov.yml").write_text(
        yaml.safe_dump({"defaults": {"target": "kubernetes"}})
    )
    texts = ["a\n", "bb\n", "ccc\n"]
    poems = []
    for i, text in enumerate(texts):
        p = Settings.load().runs_dir / "inputs" / f"poem{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        poems.append({"class": "File", "path": str(p)})
    job = tmp_path / "sizes.job.json"
    job.write_text(json.dumps({"poems": poems}))
    code, result = run_cwl(str(cwl), str(job), str(tmp_path / "out"))
    assert code == 0 and result is not None
    assert [Path(f["path"]).read_text() for f in result["sizes"]] == [f"{len(t)}\n" for t in texts]
    # Airflow's dynamic task mapping: a split task, then one mapped task instance per
    # element, each its own pod with the tool's time limit
    assert len(on_cluster.created) == 3
    assert {p.spec.active_deadline_seconds for p in on_cluster.created} == {600}
    assert {p.metadata.labels["map_index"] for p in on_cluster.created} == {"0", "1", "2"}
    run_id, state, _ = _latest("cwl_sizes")
    assert state == "success"
    final = _final_mapped("cwl_sizes", run_id)
    assert {k for k in final if k[0] == "size"} == {("size", 0), ("size", 1), ("size", 2)}
    for k in range(3):
        facts = final[("size", k)]
        assert facts["target"] == "kubernetes" and facts["image_digest"] == PYTHON_DIGEST
        assert len(facts["pods"]) == 1 and facts["manifest"]["exit_code"] == 0
        (out,) = facts["manifest"]["outputs"]  # the element's file, by sha256
        assert out["sha256"] == sha256(f"{len(texts[k])}\n".encode()).hexdigest()


def _final_mapped(dag_id: str, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The last facts of each task instance, by (task id, map index)."""
    final: dict[tuple[str, int], dict[str, Any]] = {}
    for ev in Ledger(Settings.load().ledger_url).events(dag_id, run_id):
        final.setdefault((ev.task_id, ev.map_index), {}).update(
            {k: v for k, v in ev.payload.items() if v is not None}
        )
    return final


GROUPED = """\
cwlVersion: v1.2
class: Workflow
requirements: {SubworkflowFeatureRequirement: {}}
inputs:
  poem: File
outputs:
  loud_size: {type: File, outputSource: loud/size}
steps:
  loud:
    in: {text: poem}
    out: [size]
    run:
      class: Workflow
      inputs:
        text: File
      outputs:
        size: {type: File, outputSource: measure/counted}
      steps:
        shout:
          in: {text: text}
          out: [loud]
          run:
            class: CommandLineTool
            requirements:
              DockerRequirement: {dockerPull: "python:3.11-slim"}
            baseCommand: [python3, -c, "import sys; print(sys.stdin.read().upper(), end='')"]
            inputs:
              text: File
            stdin: $(inputs.text.path)
            stdout: loud.txt
            outputs:
              loud: stdout
        measure:
          in: {text: shout/loud}
          out: [counted]
          run:
            class: CommandLineTool
            baseCommand: [python3, -c, "import sys; print(len(open(sys.argv[1]).read()))"]
            inputs:
              text: {type: File, inputBinding: {position: 1}}
            stdout: size.txt
            outputs:
              counted: stdout
"""


def test_a_subworkflow_on_a_pod_target_is_a_task_group_of_pods(
    airflow_db: None, tmp_path: Path, on_cluster: FakeCluster
) -> None:
    """The group's steps are placed as its top-level step (the overlay names ``loud``); the one
    without a DockerRequirement runs the overlay's image."""
    from twinprov.dags.cwl_runner import run_cwl

    cwl = tmp_path / "grouped.cwl"
    cwl.write_text(GROUPED)
    overlay = {
        "defaults": {"target": "local"},
        "steps": {
            "loud": {
                "target": "kubernetes",
                "image": "python:3.11-slim",
                "kubernetes": {"namespace": "dt"},
            }
        },
    }
    cwl.with_name("grouped.twinprov.yml").write_text(yaml.safe_dump(overlay))
    poem = Settings.load().runs_dir / "inputs" / "poem.txt"
    poem.parent.mkdir(parents=True)
    poem.write_text(POEM)
    job = tmp_path / "grouped.job.json"
    job.write_text(json.dumps({"poem": {"class": "File", "path": str(poem)}}))
    code, result = run_cwl(str(cwl), str(job), str(tmp_path / "out"))
    assert code == 0 and result is not None
    assert Path(result["loud_size"]["path"]).read_text() == f"{len(POEM)}\n"
    pods = {p.metadata.labels["task_id"]: p for p in on_cluster.created}
    assert set(pods) == {"loud.shout", "loud.measure"}
    assert {p.metadata.namespace for p in pods.values()} == {"dt"}
    assert {p.spec.containers[0].image for p in pods.values()} == {"python:3.11-slim"}
    run_id, state, _ = _latest("cwl_grouped")
    assert state == "success"
    final = _final("cwl_grouped", run_id)
    # the group's input object is prepared on the worker; its steps ran as pods
    assert {"loud.cwl_inputs", "loud.shout", "loud.measure"} <= set(final)
    assert final["loud.cwl_inputs"]["target"] == "local"
    for task in ("loud.shout", "loud.measure"):
        assert final[task]["target"] == "kubernetes"
        assert final[task]["cwl"]["container"] == "pod"
        assert final[task]["image_digest"] == PYTHON_DIGEST
    (counted,) = final["loud.measure"]["manifest"]["outputs"]
    assert counted["sha256"] == sha256(f"{len(POEM)}\n".encode()).hexdigest()


def test_twinprov_pods_shows_the_steps_of_a_task_group(tmp_path: Path) -> None:
    """The dry run: each step of the group a pod, placed as the group's step."""
    from twinprov.dags.pod_dry_run import render_cwl_pod_manifests

    cwl = tmp_path / "grouped.cwl"
    cwl.write_text(GROUPED)
    overlay = {"steps": {"loud": {"image": "python:3.11-slim", "hpc": {"partition": "gpu"}}}}
    cwl.with_name("grouped.twinprov.yml").write_text(yaml.safe_dump(overlay))
    docs = render_cwl_pod_manifests(cwl, "interlink")
    pods = [d for d in docs if d["kind"] == "Pod"]
    names = sorted(p["metadata"]["name"].rsplit("-", 1)[0] for p in pods)
    assert names == ["cwl-grouped-loud-measure", "cwl-grouped-loud-shout"]
    for p in pods:
        assert p["metadata"]["annotations"]["slurm-job.vk.io/flags"] == "--partition=gpu"
        args = p["spec"]["containers"][0]["args"]
        workspace = args[args.index("--workspace") + 1]
        assert workspace.endswith(f"/cwl/loud/cwl/{p['metadata']['name'].split('-')[3]}/jobs")
