"""The demo HPC workflow on a real Kubernetes cluster (nothing faked). Skipped unless
``KUBECONFIG`` is set; docs/hpc.md says how to get one with kind and a local registry.

Environment:
  KUBECONFIG               the cluster (the hook's default kubeconfig lookup)
  TWINPROV_TEST_IMAGE      the drought steps image, pinned: ``repo@sha256:…`` (built from
                           dags/workflows/drought/Dockerfile and pushed where the nodes pull)
  TWINPROV_TEST_NAMESPACE  an existing namespace (default ``twinprov``)
  TWINPROV_TEST_CLAIM      a PVC in it for the run workspaces (default ``twinprov-runs``)
  TWINPROV_TEST_INTERLINK  ``1`` to keep the SPI step on an interLink virtual node (the cluster
                           must have one); otherwise every step runs on ordinary nodes
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.e2e,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="needs KUBECONFIG (a cluster)"),
]


def test_demo_hpc_workflow_on_a_real_cluster(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real cluster, real pods: the digests come from the kubelet, the manifests from logs."""
    from twinprov.dags.runner import run_workflow

    image = os.environ.get("TWINPROV_TEST_IMAGE", "")
    if "@sha256:" not in image:
        pytest.skip("set TWINPROV_TEST_IMAGE to the pushed drought steps image, repo@sha256:…")
    namespace = os.environ.get("TWINPROV_TEST_NAMESPACE", "twinprov")
    monkeypatch.setenv(
        "AIRFLOW__TWINPROV__KUBE_WORKSPACE_CLAIM",
        os.environ.get("TWINPROV_TEST_CLAIM", "twinprov-runs"),
    )
    monkeypatch.delenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", raising=False)
    spec = yaml.safe_load((REPO / "dags/workflows/drought_early_warning_hpc.yaml").read_text())
    spec["defaults"]["image"] = image
    spec["defaults"]["kubernetes"] = {"namespace": namespace, "image_pull_policy": "IfNotPresent"}
    if os.environ.get("TWINPROV_TEST_INTERLINK") != "1":
        for step in spec["steps"]:
            step.pop("target", None)
    path = workflows_dir / "drought_early_warning_hpc.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    outcome = run_workflow(str(path), {"seed": 11})
    assert outcome.state == "success"
    events = Ledger(Settings.load().ledger_url).events(outcome.dag_id, outcome.run_id)
    done = {e.task_id: e.payload for e in events if e.state == "success"}
    digest = "sha256:" + image.split("@sha256:", 1)[1]
    for task in ("generate_precipitation", "compute_spi", "classify_hazard"):
        p = done[task]
        assert p["image_digest"] == digest and p["image_pinned"] is True
        assert p["pod"]["namespace"] == namespace and p["pod"]["node"]
        assert p["manifest"]["exit_code"] == 0
        assert all(o["sha256"] for o in p["manifest"]["outputs"])
