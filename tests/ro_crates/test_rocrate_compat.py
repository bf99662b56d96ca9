"""The rocrate internals the crate writer relies on (``twinprov.ro_crates._rocrate_compat``)
still exist and behave as the writer assumes. Fails by name on a rocrate upgrade that changes
one: update ``ro_crates/_rocrate_compat.py`` (and check the crates it writes) before upgrading."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import rocrate
from rocrate.model.file import File
from rocrate.model.metadata import Metadata
from rocrate.model.preview import Preview
from rocrate.rocrate import ROCrate

from twinprov.ro_crates._rocrate_compat import (
    PINNED,
    PRETTY_MAX_ENTITIES,
    PREVIEW_TEMPLATE,
    CachedPreview,
    FastCrate,
    FastMetadata,
    PlacedFile,
    add_entity,
    add_placed_file,
    new_crate,
)

_FIX = "rocrate changed: {}; update twinprov/ro_crates/_rocrate_compat.py"


def _holder(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _crate_with_entities() -> ROCrate:
    crate = new_crate("https://example.org/context")
    add_entity(crate, "#a", "CreativeWork", {"name": "A", "about": {"@id": "./"}})
    add_entity(crate, "#p", "Person", {"name": "Ada", "email": None, "knows": []})
    add_placed_file(crate, "placed/x.txt", "placed/x.txt", {"name": "x", "contentSize": "3"})
    add_placed_file(crate, "file:///elsewhere/y.bin", None, {"name": "y", "description": ""})
    return crate


@pytest.mark.parametrize(("holder", "name"), [(h, n) for h, ns in PINNED.items() for n in ns])
def test_pinned_internal_exists(holder: str, name: str) -> None:
    cls = _holder(holder)
    assert callable(getattr(cls, name, None)) or isinstance(
        inspect.getattr_static(cls, name, None), property
    ), _FIX.format(f"{holder}.{name} is gone")


def test_overridden_methods_keep_their_signatures() -> None:
    for ours, theirs, name in (
        (PlacedFile, File, "write"),
        (FastMetadata, Metadata, "stream"),
        (CachedPreview, Preview, "generate_html"),
        (FastCrate, ROCrate, "resolve_id"),
    ):
        mine = list(inspect.signature(getattr(ours, name)).parameters)
        base = list(inspect.signature(getattr(theirs, name)).parameters)
        assert mine == base, _FIX.format(f"{theirs.__name__}.{name}{base}, we override {mine}")


def test_properties_is_the_live_jsonld() -> None:
    crate = _crate_with_entities()
    entity = crate.dereference("#a")
    assert entity.properties() is entity._jsonld, _FIX.format("Entity.properties() is a copy")
    assert entity.as_jsonld() == {
        "@id": "#a",
        "@type": "CreativeWork",
        "name": "A",
        "about": {"@id": "./"},
    }
    assert crate.dereference("#p").as_jsonld() == {"@id": "#p", "@type": "Person", "name": "Ada"}
    graph = json.loads(b"".join(chunk for _, chunk in crate.metadata.stream()))["@graph"]
    assert {"@id": "#a", "@type": "CreativeWork", "name": "A", "about": {"@id": "./"}} in graph


def test_new_crate_replaces_metadata_and_preview_in_place() -> None:
    crate = _crate_with_entities()
    assert isinstance(crate, FastCrate)
    assert type(crate.metadata) is FastMetadata, _FIX.format("add(Metadata) no longer replaces it")
    assert type(crate.preview) is CachedPreview, _FIX.format("crate.preview is not the preview")
    assert crate.metadata.extra_contexts == ["https://example.org/context"]
    ids = [e.id for e in crate.get_entities()]
    assert ids[:3] == ["ro-crate-preview.html", "./", "ro-crate-metadata.json"], ids
    assert ids.count("ro-crate-metadata.json") == 1
    assert crate.metadata.properties()["about"] == {"@id": "./"}
    data = {e.id for e in crate.data_entities}
    assert data == {"placed/x.txt", "file:///elsewhere/y.bin"}, _FIX.format("data_entities")
    assert {e.id for e in crate.contextual_entities} == {"#a", "#p"}
    has_part = crate.root_dataset.properties()["hasPart"]
    assert has_part == [{"@id": "placed/x.txt"}, {"@id": "file:///elsewhere/y.bin"}]


def test_write_writes_no_placed_file_and_streams_metadata_and_preview(tmp_path: Path) -> None:
    crate = _crate_with_entities()
    crate.write(tmp_path)  # the placed file's source does not exist: rocrate must not copy it
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ro-crate-metadata.json",
        "ro-crate-preview.html",
    ], _FIX.format("ROCrate.write no longer writes through File.write / Metadata.stream")
    doc = json.loads((tmp_path / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    assert doc["@context"] == [
        "https://w3id.org/ro/crate/1.1/context",
        "https://example.org/context",
    ]


def test_small_graphs_are_serialized_exactly_as_rocrate_does() -> None:
    crate = _crate_with_entities()
    ours = b"".join(chunk for _, chunk in crate.metadata.stream())
    theirs = b"".join(chunk for _, chunk in Metadata.stream(crate.metadata))
    assert ours == theirs, _FIX.format("Metadata.stream serializes differently")


def test_large_graphs_are_one_entity_per_line() -> None:
    crate = new_crate()
    for i in range(PRETTY_MAX_ENTITIES):
        add_entity(crate, f"#e{i}", "Thing", {"name": str(i)})
    text = b"".join(chunk for _, chunk in crate.metadata.stream()).decode("utf-8")
    lines = text.splitlines()
    assert len(lines) == 2 + len(crate.metadata.generate()["@graph"]) + 1
    assert json.loads(text) == json.loads(
        b"".join(chunk for _, chunk in Metadata.stream(crate.metadata))
    )


def test_cached_preview_renders_as_rocrate_does() -> None:
    assert Path(rocrate.__file__).parent.joinpath(*PREVIEW_TEMPLATE).is_file(), _FIX.format(
        "the preview template moved"
    )
    crate = _crate_with_entities()
    ours = crate.preview.generate_html()
    theirs = Preview.generate_html(crate.preview)
    assert ours == theirs, _FIX.format("Preview.generate_html renders differently")


@pytest.mark.parametrize(
    "ident",
    [
        "#x",
        "#a/b/",
        "#a/../b",
        "./",
        "workspace/data%20dir/r%C3%A9%23sult%201.txt",
        "workspace/x/",
        "a/./b",
        "a/../b",
        "../up",
        "a;b/c",
        "a?q=1",
        "file:///tmp/a%20b",
        "https://example.org/x/",
        "urn:twinprov:data/sha256-1",
    ],
)
def test_fast_identifier_resolution_matches_rocrate(ident: str) -> None:
    fast, reference = FastCrate(version="1.1"), ROCrate(version="1.1")
    reference.arcp_base_uri = fast.arcp_base_uri
    assert fast.resolve_id(ident) == reference.resolve_id(ident), _FIX.format("resolve_id")
