"""Inputs and outputs of hand-written DAGs from their Assets, and the ``capture`` setting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from twinprov.provenance.assets import NOT_READ, AssetRef, asset_entries, file_of
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import ConfigError


def test_file_uris_are_hashed_other_schemes_recorded_by_uri(tmp_path: Path) -> None:
    data = tmp_path / "depths.csv"
    data.write_text("day,depth\n1,2\n")
    refs = [
        AssetRef(data.as_uri(), "depths", "inlet"),
        AssetRef((tmp_path / "out.json").as_uri(), "", "outlet", {"rows": 3}),
        AssetRef("s3://bucket/key.parquet", "remote", "outlet"),
    ]
    (tmp_path / "out.json").write_text("{}")
    manifest, assets = asset_entries(refs, hash_files=True)
    assert [i["name"] for i in manifest["inputs"]] == ["depths"]
    i = manifest["inputs"][0]
    assert i["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert i["size"] == data.stat().st_size and i["media_type"] == "text/csv"
    assert manifest["outputs"][0]["name"] == "out.json"  # unnamed asset: the file's name
    remote = next(a for a in assets if a["uri"].startswith("s3:"))
    assert remote["content"] == NOT_READ and "sha256" not in remote
    assert next(a for a in assets if a["name"] == "out.json")["extra"] == {"rows": 3}


def test_an_outlet_the_try_did_not_write_says_so(tmp_path: Path) -> None:
    manifest, assets = asset_entries(
        [AssetRef((tmp_path / "never.txt").as_uri(), "never")], hash_files=True
    )
    assert "sha256" not in manifest["outputs"][0]
    assert assets[0]["content"].startswith("not read")


def test_only_local_file_uris_name_files() -> None:
    assert file_of("file:///tmp/a%20b.txt") == Path("/tmp/a b.txt")
    assert file_of("file://localhost/tmp/x") == Path("/tmp/x")
    assert file_of("file://otherhost/tmp/x") is None
    assert file_of("postgres://db/table") is None


@pytest.mark.parametrize(
    ("value", "tags", "captured"),
    [
        (None, ["twinprov"], True),  # default: tagged
        (None, ["other"], False),
        (None, [], False),
        ("specs", ["twinprov"], False),
        ("all", [], True),
        ("TAGGED", ["twinprov", "x"], True),
    ],
)
def test_capture_setting(
    monkeypatch: pytest.MonkeyPatch, value: str | None, tags: list[str], captured: bool
) -> None:
    if value is None:
        monkeypatch.delenv("AIRFLOW__TWINPROV__CAPTURE", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", value)
    assert Settings.load().captures(tags) is captured


def test_capture_setting_refuses_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "some")
    with pytest.raises(ConfigError, match="capture.*specs, tagged, all"):
        Settings.load()
