"""The stack tests' deployment: PostgreSQL, Oxigraph server, MLflow server and Airflow's scheduler,
dag-processor and api-server, native on 127.0.0.1, started once per session on first use, stopped
at the end (see :mod:`tests.stack.services`). Whatever cannot be installed or started fails the
tests with the reason; nothing is skipped silently.

The deployment carries planted secrets for the secrets test: an Airflow connection defined in the
environment (its password logs into a PostgreSQL role the steps use), a variable marked sensitive
(``[core] sensitive_var_conn_names``), and the stack's own database passwords.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.stack.services import ServiceError, Stack, ensure_installed
from tests.stack.workflows import write_workflows


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stack: needs the native production stack (PostgreSQL, Oxigraph server, MLflow server, "
        "Airflow scheduler + dag-processor + api-server); started by tests/stack/conftest.py",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/stack/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.stack)


@dataclass(frozen=True)
class Planted:
    """Secret values the deployment holds, which no provenance artifact may contain."""

    conn_password: str
    variable: str
    kube_secret: str

    def all(self, stack: Stack) -> dict[str, str]:
        """Every secret to look for, by a name for the report."""
        return {
            "connection password": self.conn_password,
            "sensitive variable": self.variable,
            "kubernetes secret": self.kube_secret,
            "ledger db password": stack.passwords["twinprov"],
            "airflow db password": stack.passwords["airflow"],
            "mlflow db password": stack.passwords["mlflow"],
            "airflow jwt secret": stack.passwords["jwt"],
            "fernet key": stack.passwords["fernet"],
        }


@pytest.fixture(scope="session")
def planted() -> Planted:
    return Planted(
        conn_password="connpw" + secrets.token_hex(10),
        variable="varkey" + secrets.token_hex(10),
        kube_secret="kubesec" + secrets.token_hex(10),
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, planted: Planted) -> Iterator[Stack]:
    """The running deployment (started on first use in the session)."""
    try:
        ensure_installed()
    except ServiceError as e:
        pytest.fail(f"the stack's programs could not be installed: {e}", pytrace=False)
    root = tmp_path_factory.mktemp("stack")
    st = Stack.create(root)
    write_workflows(st.workflows)
    st.setup_sql = [
        f"CREATE ROLE stackreader LOGIN PASSWORD '{planted.conn_password}'",
        "GRANT CONNECT ON DATABASE mlflow TO stackreader",
    ]
    st.extra_env = {
        "AIRFLOW_CONN_STACK_SECRET_DB": (
            f"postgresql://stackreader:{planted.conn_password}@127.0.0.1:{st.pg.port}/mlflow"
        ),
        "AIRFLOW_VAR_STACK_REGION_KEY": planted.variable,
        "AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES": "stack_region_key",
    }
    try:
        st.start()
    except BaseException as e:
        st.stop(remove_database=False)
        if isinstance(e, ServiceError):
            pytest.fail(f"the stack did not start: {e}", pytrace=False)
        raise
    print(f"\nstack started in {st.started_in:.0f} s under {root}")
    try:
        for dag_id in ("stack_fan8", "stack_pair", "stack_kill", "stack_secrets"):
            st.wait_dag(dag_id, timeout=180)
        yield st
    finally:
        st.stop()
        print(f"\nstack under {root} stopped (logs in {root / 'logs'})")
