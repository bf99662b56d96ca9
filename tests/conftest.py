"""Test-wide setup: every test runs against throw-away homes, never the user's.

Airflow reads its configuration when first imported, so its home is fixed here, before any test
module imports it; each test that runs workflows gets its own TWINPROV_HOME (the ledger, store
and run folders), read afresh by twinprov at every call.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinprov.provenance.config import Settings

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="twinprov-tests-"))
os.environ["AIRFLOW_HOME"] = str(_SESSION_ROOT / "airflow")
os.environ["TWINPROV_HOME"] = str(_SESSION_ROOT / "home")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.pop("TWINPROV_WORKFLOWS_DIR", None)
os.environ.pop("TWINPROV_CAPTURE", None)

REPO = Path(__file__).resolve().parents[1]
# The embedded default's Airflow settings (DAGs folder = dags/), set before any test module
# imports Airflow: Airflow fixes its DAGs folder when first imported, and `dag.test()` finds the
# DAG it runs through that folder's bundle.
from twinprov.dags.runner import prepare_environment  # noqa: E402

prepare_environment()
DEMO_SPEC = REPO / "dags" / "workflows" / "drought_early_warning.yaml"


@pytest.fixture
def twinprov_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh TWINPROV_HOME for one test."""
    home = tmp_path / "twinprov-home"
    monkeypatch.setenv("TWINPROV_HOME", str(home))
    yield home


_HIDE_AIRFLOW = """
import importlib.abc, sys

class HideAirflow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ModuleNotFoundError(f"airflow is hidden ({name})")
        return None

sys.meta_path.insert(0, HideAirflow())
"""
_CHECK_NOT_IMPORTED = """
assert "airflow" not in {m.split(".")[0] for m in sys.modules}, "airflow got imported"
"""


def run_without_airflow(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python where importing Airflow fails, then check that nothing
    imported it; the finished process (the test fails with its stderr if it failed)."""
    import sys
    import textwrap

    program = _HIDE_AIRFLOW + textwrap.dedent(code) + _CHECK_NOT_IMPORTED
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def fresh_settings(tmp_path: Path, sparql_base: str = "") -> Settings:
    """Settings of a fresh twinprov home under ``tmp_path`` (SQLite ledger, embedded store, or
    the SPARQL server at ``sparql_base``: its ``/query`` and ``/store`` endpoints)."""
    home = tmp_path / "home"
    return Settings(
        home=home,
        ledger_url=f"sqlite:///{home / 'ledger.sqlite'}",
        store_path=home / "graph-store",
        base_iri="urn:twinprov:",
        sparql_url=f"{sparql_base}/query" if sparql_base else "",
        sparql_gsp_url=f"{sparql_base}/store" if sparql_base else "",
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of a fresh twinprov home under ``tmp_path``."""
    return fresh_settings(tmp_path)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the session's throw-away Airflow DB (real ``airflow db migrate`` code path)."""
    from twinprov.dags.runner import ensure_database, prepare_environment

    prepare_environment()
    ensure_database()


@pytest.fixture
def workflows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for test workflow specs, which the DAG file will load."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    monkeypatch.setenv("TWINPROV_WORKFLOWS_DIR", str(folder))
    return folder
