"""A rerun names the image digest change of a pod step in its "what changed" list.

Only the Kubernetes API boundary is faked (:mod:`tests.hpc.fake_kube`); the provider's
``KubernetesPodOperator``, twinprov's operator and listener, the ledger, the crate and the
rerun's comparison are the real code, through real Airflow ``dag.test()``. The digest each step
ran in comes from the pod status (``status.containerStatuses[].imageID``) the fake kubelet
reports for the image's tag, which the fake registry moves to a new digest between the runs
(a new image pushed under the same tag).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.hpc.conftest import PYTHON_DIGEST
from tests.hpc.fake_kube import FakeCluster
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.record import Verdict

REPUSHED = "sha256:" + "b2" * 32
WRITE = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
SPEC = {
    "name": "pod_digest",
    "defaults": {
        "target": "kubernetes",
        "image": "python:3.11-slim",  # unpinned: the digest is whatever the tag names today
        "kubernetes": {"namespace": "dt"},
    },
    "steps": [
        {
            "id": "first",
            "command": ["python", "-c", WRITE, "${outputs.a}", "same bytes"],
            "outputs": [{"name": "a", "path": "a.txt", "media_type": "text/plain"}],
        },
    ],
}


def test_rerun_names_the_image_digest_change_of_a_pod_step(
    airflow_db: None,
    workflows_dir: Path,
    twinprov_home: Path,
    fake_cluster: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from twinprov.dags.runner import run_workflow

    monkeypatch.setenv("AIRFLOW__TWINPROV__KUBE_WORKSPACE_CLAIM", "dt-runs")
    spec = workflows_dir / "pod_digest.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    first = run_workflow(str(spec), {})
    assert first.state == "success"

    fake_cluster.registry["docker.io/library/python"] = REPUSHED
    again = run_workflow(str(spec), {"rerun_of": f"{first.dag_id}/{first.run_id}"})
    assert again.state == "success"

    rec = Ledger(Settings.load().ledger_url).run(again.dag_id, again.run_id)
    assert rec is not None
    verdict = Verdict.from_dict(rec.publication["verdict"])
    assert verdict.status == "reproduced"  # same bytes: the new image changed nothing here
    (change,) = verdict.changes
    assert change.step == "first"
    (image,) = [c for c in change.changes if c.startswith("image ")]
    old, new = image.removeprefix("image ").split(" → ")
    assert PYTHON_DIGEST.startswith(old.rstrip("…")) and len(old) > len("sha256:"), image
    assert REPUSHED.startswith(new.rstrip("…")) and len(new) > len("sha256:"), image
    assert verdict.likely_cause is None  # nothing diverged
