"""docker-compose.yaml: ``docker-compose config`` accepts it (with ``.env.example``), every
service twinprov's settings name is a service of the file, on the port that service listens on,
and each long-running service has a health check. No Docker engine needed (``docker-compose
config`` only reads files); the Debian package ``docker-compose`` is installed if missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
PORTS = {"postgres": 5432, "oxigraph": 7878, "mlflow": 5000, "airflow-apiserver": 8080}


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("`docker-compose` is missing: apt-get install docker-compose", pytrace=False)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "docker-compose"],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}", pytrace=False)
    found = shutil.which("docker-compose")
    assert found, "apt-get installed docker-compose but it is not on PATH"
    return found


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as ``docker-compose config`` resolves it with the example settings."""
    proc = subprocess.run(
        [_docker_compose(), "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(yaml.safe_load(proc.stdout))


def test_compose_config_passes(config: dict[str, Any]) -> None:
    services = config["services"]
    expected = {"postgres", "oxigraph", "mlflow", "airflow-init", *AIRFLOW_SERVICES}
    assert expected <= set(services), sorted(services)
    for name in expected - {"airflow-init"}:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert services[name].get("restart") == "always", name
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
        assert svc["build"]["target"] == "airflow"
        mounts = [str(v.get("target") if isinstance(v, dict) else v) for v in svc["volumes"]]
        assert any("/opt/airflow/dags" in m for m in mounts), f"{name}: DAGs folder not mounted"
        deps = svc["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
    assert "oxigraph serve" in " ".join(["oxigraph", *services["oxigraph"]["command"]])
    assert "--union-default-graph" in services["oxigraph"]["command"]
    assert "ports" not in services["oxigraph"], "the read-write graph store must stay internal"
    assert "ports" not in services["postgres"]
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri postgresql" in mlflow and "--artifacts-destination" in mlflow
    print(f"\ndocker-compose config: {len(services)} services, each with a health check")


def _endpoints(env: dict[str, str]) -> dict[str, tuple[str, int]]:
    """Host and port of every service a setting names."""
    from twinprov.provenance.config import Settings

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        s = Settings.load()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    urls = {
        "[twinprov] ledger_url": s.ledger_url,
        "[twinprov] sparql_url": s.sparql_url,
        "[twinprov] sparql_gsp_url": s.sparql_gsp_url,
        "[twinprov] mlflow_tracking_uri": s.mlflow_tracking_uri,
        "[database] sql_alchemy_conn": env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "[core] execution_api_server_url": env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"],
    }
    out = {}
    for key, url in urls.items():
        parts = urlsplit(url)
        assert parts.hostname and parts.port, f"{key} = {url!r} names no host:port"
        out[key] = (parts.hostname, parts.port)
    return out


def test_every_service_the_settings_name_exists(config: dict[str, Any]) -> None:
    services = config["services"]
    checked = 0
    for name in AIRFLOW_SERVICES:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert env["TWINPROV_HOME"].startswith("/opt/airflow/twinprov")
        for key, (host, port) in _endpoints(env).items():
            assert host in services, f"{name}: {key} names '{host}', not a service of the file"
            assert port == PORTS[host], (
                f"{name}: {key} uses port {port}, {host} listens on {PORTS[host]}"
            )
            checked += 1
    # and the services listen where the settings point
    assert "0.0.0.0:7878" in services["oxigraph"]["command"]
    assert "5000" in services["mlflow"]["command"]
    print(f"\ncompose settings: {checked} service references checked, all resolve")


def test_dockerfile_builds_on_the_official_airflow_image() -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    assert "FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS airflow" in text
    assert "ARG AIRFLOW_VERSION=3.3." in text
    assert '"apache-airflow==${AIRFLOW_VERSION}" /opt/twinprov' in text
    for target in ("oxigraph", "mlflow", "airflow"):
        assert f" AS {target}" in text
    assert Path(REPO / "docker" / "postgres-init.sh").stat().st_mode & 0o111


def test_celery_workers_scale_each_with_its_own_home(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Celery setup: Redis broker, `worker` replicas (`--scale worker=N`) each with an
    anonymous volume of its own as TWINPROV_HOME and the one shared folder for run folders,
    Flower only under its profile; the Celery config named is twinprov's and imports."""
    import importlib

    services = config["services"]
    assert "redis-cli" in " ".join(services["redis"]["healthcheck"]["test"])
    assert "ports" not in services["redis"]
    worker = services["worker"]
    assert "container_name" not in worker, "a named container cannot scale"
    cmd = worker["command"]
    assert (" ".join(cmd) if isinstance(cmd, list) else cmd) == "celery worker"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["flower"]["profiles"] == ["flower"]

    def mounts(svc: dict[str, Any]) -> dict[str, str]:
        """container path -> source ('' for an anonymous volume)."""
        out = {}
        for v in svc["volumes"]:
            if isinstance(v, dict):
                out[str(v["target"])] = str(v.get("source") or "")
            else:
                parts = str(v).split(":")
                out[parts[1] if len(parts) > 1 else parts[0]] = parts[0] if len(parts) > 1 else ""
        return out

    env = {k: str(v) for k, v in worker["environment"].items()}
    home, shared = env["TWINPROV_HOME"], env["AIRFLOW__TWINPROV__SHARED_DIR"]
    assert mounts(worker)[home] == "", "each worker replica needs a twinprov home of its own"
    for name in (*AIRFLOW_SERVICES, "worker"):
        svc = services[name]
        e = {k: str(v) for k, v in svc["environment"].items()}
        assert e["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert e["AIRFLOW__TWINPROV__SHARED_DIR"] == shared, name
        assert mounts(svc)[shared] == "twinprov-shared", f"{name}: run folders not shared"
        module, _, attr = e["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"].rpartition(".")
    monkeypatch.setenv("AIRFLOW__TWINPROV__SHARED_DIR", shared)  # checked at import
    assert isinstance(getattr(importlib.import_module(module), attr), dict)
