"""Fixtures for end-to-end tests: a real Airflow metadata DB (SQLite), migrated once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def dags_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Airflow's DAGs folder (and its ``dags-folder`` bundle) for one test: the spec DAG file,
    and the hand-written DAGs the test adds (:func:`add_dag_file`)."""
    folder = tmp_path / "dags"
    folder.mkdir()
    src = REPO / "dags" / "twinprov_workflows.py"
    (folder / src.name).write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
    bundle = {"name": "dags-folder", "kwargs": {"path": str(folder)}}
    bundle["classpath"] = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([bundle]))
    return folder


def add_dag_file(folder: Path, name: str, text: str) -> None:
    """Add a DAG file to the folder and register its DAGs, unpaused (as a user would in the UI:
    a paused DAG gets no asset-triggered runs)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import update

    (folder / name).write_text(text, encoding="utf-8")
    DagBundlesManager().sync_bundles_to_db()
    bag = BundleDagBag(dag_folder=folder / name, bundle_path=folder, bundle_name="dags-folder")
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.execute(
            update(DagModel).where(DagModel.dag_id.in_(list(bag.dags))).values(is_paused=False)
        )


def asset_events(source_run_id: str) -> dict[str, list[dict[str, Any]]]:
    """The asset events a DAG run emitted, from Airflow's metadata DB: asset URI → their
    extras, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, list[dict[str, Any]]] = {}
    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_run_id == source_run_id)
            .order_by(AssetEvent.id)
        )
        for uri, extra in rows:
            out.setdefault(uri, []).append(dict(extra or {}))
    return out
