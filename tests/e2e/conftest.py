"""Fixtures for end-to-end tests: a real Airflow metadata DB (SQLite), migrated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def workflows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for test workflow specs, which the DAG file will load."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    monkeypatch.setenv("TWINPROV_WORKFLOWS_DIR", str(folder))
    return folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
