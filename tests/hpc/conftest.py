"""Fixtures of the Kubernetes / interLink tests.

``fake_cluster`` replaces only the Kubernetes API boundary (the HTTP-calling methods of
``kubernetes.client.CoreV1Api``, see :mod:`tests.hpc.fake_kube`); the Airflow connection
``kubernetes_default`` points the real ``KubernetesHook`` at a kubeconfig for that fake server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.hpc.fake_kube import FAKE_KUBECONFIG, FakeCluster

STEPS_REPO = "registry.example.org/dt/drought-steps"
STEPS_DIGEST = "sha256:" + "5e" * 32
PYTHON_DIGEST = "sha256:" + "a1" * 32


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs a real Kubernetes cluster (KUBECONFIG)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath).replace(os.sep, "/")
        if "tests/hpc/test_dag_runs" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def kube_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``kubernetes_default`` → a kubeconfig naming the fake API server (never contacted)."""
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(FAKE_KUBECONFIG)
    conn = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(cfg)}}
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
    return cfg


@pytest.fixture
def fake_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kube_connection: Path
) -> Iterator[FakeCluster]:
    """A fake API server; the step images hold the repo's ``dags/workflows`` folder."""
    cluster = FakeCluster(
        root=tmp_path / "cluster",
        workflow_dir=REPO / "dags" / "workflows",
        registry={STEPS_REPO: STEPS_DIGEST, "docker.io/library/python": PYTHON_DIGEST},
    )
    cluster.root.mkdir()
    cluster.install(monkeypatch)
    yield cluster
