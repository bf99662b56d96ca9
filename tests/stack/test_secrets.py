"""Secrets never reach provenance: a run whose steps use an Airflow connection's password (to log
into PostgreSQL), a variable marked sensitive (an HMAC key) and MLflow — one step even prints
them in an error on its first try, where the task log must show them masked; steps declare them
under ``secrets:`` and inherit nothing else of the scheduler's environment — and the Kubernetes
form of the same workflow, whose pods take a Secret. The bytes of the ledger database, the graph
store, every file twinprov wrote (PROV files, crates, STAC, run folders, spool) and the MLflow
database and artifacts are searched for each planted value (and the stack's own passwords)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.secret_sweep import files_under, find_secrets
from tests.stack import checks
from tests.stack.conftest import Planted
from tests.stack.services import Stack
from tests.stack.workflows import KUBE_SECRETS
from twinprov.provenance.workspace import workspace_dir


def test_no_secret_in_any_artifact(stack: Stack, planted: Planted) -> None:
    run_id = stack.trigger("stack_secrets")
    states = stack.wait_runs("stack_secrets", [run_id], timeout=300)
    assert states[run_id] == "success", states
    rec = checks.run_record(stack, "stack_secrets", run_id)
    assert rec.published_digest == rec.stored_digest
    tries = checks.tries_in(checks.store_triples(stack, rec.publication["graph"]))
    assert tries[("noisy", 2)] == 1  # the first try failed, printing the secrets, and was retried
    mlflow_runs = rec.publication.get("mlflow_runs") or []
    assert len(mlflow_runs) == 1, rec.publication
    # the step really used them: it logged into PostgreSQL with the connection's password
    task_log = next(
        (stack.airflow_home / "logs" / "dag_id=stack_secrets").rglob("task_id=noisy/attempt=1.log")
    ).read_text()
    assert "cannot use" in task_log
    # declared as secrets, the values are masked where the program printed them
    assert planted.conn_password not in task_log and planted.variable not in task_log
    assert "***" in task_log
    # and the step saw none of the task process's own environment (AIRFLOW_CONN_*, DB URLs)
    ws = workspace_dir(stack.twinprov_home / "runs", "stack_secrets", run_id)
    for name in ("quiet", "noisy", "tracked"):
        line = (ws / f"{name}.txt").read_text()
        assert line.rstrip().endswith("inherited="), line

    blobs: dict[str, bytes] = {
        "ledger database (pg_dump twinprov)": stack.pg_dump("twinprov"),
        "mlflow database (pg_dump mlflow)": stack.pg_dump("mlflow"),
    }
    dump = httpx.get(stack.sparql_gsp_url, headers={"Accept": "application/n-quads"}, timeout=120)
    assert dump.status_code == 200 and dump.content
    blobs["graph store (every quad)"] = dump.content
    blobs.update(files_under(stack.twinprov_home))
    blobs.update(files_under(stack.root / "mlartifacts"))
    secrets = planted.all(stack)
    hits = find_secrets(blobs, secrets)
    kinds = {
        "PROV files": sum(1 for k in blobs if "/prov/" in k),
        "crate files": sum(1 for k in blobs if "/crate/" in k),
        "STAC files": sum(1 for k in blobs if "/stac/" in k),
        "MLflow artifacts": sum(1 for k in blobs if "mlartifacts" in k),
    }
    size = sum(len(b) for b in blobs.values())
    print(
        f"\nsecrets: {len(secrets)} planted values x 3 encodings (raw, URL, base64) searched "
        f"in {len(blobs)} blobs ({size / 1e6:.1f} MB: ledger and MLflow databases, every quad of "
        f"the graph store, {kinds}); found: {len(hits)}"
    )
    assert hits == []


def test_kubernetes_secret_stays_a_reference(
    stack: Stack, planted: Planted, tmp_path: Path
) -> None:
    try:
        from twinprov.dags.pod_dry_run import render_pod_manifests
    except ImportError as e:
        pytest.skip(
            "the Kubernetes target (twinprov.dags.pod_dry_run.render_pod_manifests) "
            f"is not there yet: {e}"
        )
    spec = tmp_path / "stack_kube_secrets.yaml"
    spec.write_text(KUBE_SECRETS)
    # the Secret the cluster would hold; only its name and keys may reach the pod spec
    secret_object = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "stack-secrets"},
        "stringData": {"region-key": planted.kube_secret, "db-password": planted.conn_password},
    }
    docs = render_pod_manifests(spec, None, {}, run_id="secret-run")
    text = json.dumps(docs, default=str)
    assert planted.kube_secret not in text and planted.conn_password not in text
    pods = [d for d in docs if d.get("kind") == "Pod"]
    assert len(pods) == 1, [d.get("kind") for d in docs]
    env = {e["name"]: e for c in pods[0]["spec"]["containers"] for e in c.get("env") or []}
    for name, key in (("REGION_KEY", "region-key"), ("DB_PASSWORD", "db-password")):
        assert "value" not in env[name] or env[name]["value"] is None, env[name]
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == ("stack-secrets", key)
    # writing the value into the spec instead is refused
    from twinprov.provenance.errors import SpecError
    from twinprov.provenance.spec import load_spec

    inline = tmp_path / "inline.yaml"
    inline.write_text(
        KUBE_SECRETS.replace(
            "    secrets:", f"    env: {{DB_PASSWORD: {planted.conn_password}}}\n    secrets:"
        )
    )
    with pytest.raises(SpecError, match="looks like a secret written inline"):
        load_spec(inline)
    print(
        f"\nkubernetes: {len(docs)} objects rendered; the Secret's values "
        f"({len(secret_object['stringData'])}) appear in none, the pod takes them by "
        "secretKeyRef; an inline secret env in the spec is refused"
    )
