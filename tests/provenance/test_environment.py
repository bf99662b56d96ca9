"""The recorded Python environment: cached in memory and on disk, listed anew when it changes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from twinprov.provenance import environment


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(environment.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(environment, "_memo", {})
    return tmp_path


def test_cached_listing_is_the_listing(fresh: Path) -> None:
    first = environment.python_environment()
    assert first == environment._listing()
    assert len(list((fresh / "cache").glob("python-environment-*.json"))) == 1
    environment._memo.clear()  # a new process: read back from the file
    assert environment.python_environment() == first


def test_a_new_distribution_is_seen(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = environment.python_environment()
    site = fresh / "site"
    dist = site / "twinprov_probe-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: twinprov-probe\nVersion: 1.0\n")
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    after = environment.python_environment()
    assert after["package_count"] == before["package_count"] + 1
    assert after["digest"] != before["digest"]


def test_unwritable_cache_still_lists(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = fresh / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(environment.CACHE_ENV, str(blocker / "cache"))
    assert environment.python_environment() == environment._listing()
