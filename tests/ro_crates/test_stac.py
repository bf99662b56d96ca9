"""The STAC catalog across runs: publishing one run never changes another run's files."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr

from twinprov.ro_crates.stac import StacOutput, publish_items


def _grid(path: Path, seed: int) -> StacOutput:
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {"spi": (("time", "lat", "lon"), rng.normal(size=(2, 4, 5)))},
        coords={
            "time": np.array(["2026-01-01", "2026-02-01"], dtype="datetime64[ns]"),
            "lat": np.linspace(40.0, 43.0, 4),
            "lon": np.linspace(10.0, 14.0, 5),
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    data = path.read_bytes()
    return StacOutput(
        name="spi",
        step="compute",
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        media_type="application/x-netcdf",
        geospatial=True,
    )


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _thumbnail_of(item_json: Path) -> Path:
    doc = json.loads(item_json.read_text(encoding="utf-8"))
    return (item_json.parent / doc["assets"]["thumbnail"]["href"]).resolve()


def test_each_run_keeps_its_items_and_quicklooks(tmp_path: Path) -> None:
    stac_root = tmp_path / "home" / "stac"
    items: dict[str, Path] = {}
    before: dict[str, bytes] = {}
    for n in range(3):
        slug = f"run{n}"
        result = publish_items(
            stac_root,
            dag_id="geo",
            run_id=f"manual__run{n}",
            run_slug=slug,
            run_iri=f"urn:twinprov:run/geo/run{n}",
            outputs=[_grid(tmp_path / "runs" / slug / "spi.nc", n)],
            software={"twinprov": "test"},
            processed_at=datetime(2026, 3, 1 + n, tzinfo=UTC),
        )
        items[slug] = result.items["spi"]
        now = _files(stac_root)
        # every earlier run's files are still there, byte for byte, except the catalog's JSON
        # (collection links and extent) that lists the new run
        for rel, data in before.items():
            if f"/{slug}__" in f"/{rel}" or rel.endswith(("catalog.json", "collection.json")):
                continue
            assert now.get(rel) == data, f"run {slug} changed or removed {rel}"
        before = now
        # and every Item so far links to a quicklook that exists
        for earlier, item_json in items.items():
            assert item_json.is_file(), earlier
            png = _thumbnail_of(item_json)
            assert png.is_file(), f"{earlier}: {png} is gone after publishing {slug}"
            assert png.read_bytes().startswith(b"\x89PNG")
    # republishing a run replaces its Items and keeps the others'
    publish_items(
        stac_root,
        dag_id="geo",
        run_id="manual__run1",
        run_slug="run1",
        run_iri="urn:twinprov:run/geo/run1",
        outputs=[_grid(tmp_path / "runs" / "run1" / "spi.nc", 1)],
        software={"twinprov": "test"},
        processed_at=datetime(2026, 3, 2, tzinfo=UTC),
    )
    for item_json in items.values():
        assert _thumbnail_of(item_json).is_file()


def _folder(root: Path, catalog: bool) -> StacOutput:
    """A CWL Directory output: a small STAC catalog (two items with bboxes) or a plain folder."""
    import pystac

    root.mkdir(parents=True)
    if catalog:
        cat = pystac.Catalog(id="hazard", description="hazard maps")
        for n, (west, south) in enumerate([(10.0, 40.0), (12.0, 45.0)]):
            bbox = [west, south, west + 1, south + 1]
            geometry = {"type": "Point", "coordinates": [west, south]}
            when = datetime(2026, 1 + n, 1, tzinfo=UTC)
            cat.add_item(pystac.Item(f"map{n}", geometry, bbox, when, {}))
        cat.normalize_and_save(str(root), pystac.CatalogType.SELF_CONTAINED)
    else:
        (root / "notes.txt").write_text("not STAC")
    return StacOutput(
        name="catalog",
        step="publish",
        path=root,
        sha256=hashlib.sha256(root.name.encode()).hexdigest(),
        size=1,
        media_type="inode/directory",
    )


def test_a_stac_catalog_folder_output_is_linked(tmp_path: Path) -> None:
    """A Directory output that is a STAC catalog becomes an Item of ours whose data asset and
    `related` link name its catalog.json, with the union of its items' bbox and times; any
    other folder is left out."""
    out = _folder(tmp_path / "run" / "hazard-catalog", catalog=True)
    plain = _folder(tmp_path / "run" / "other", catalog=False)
    plain = StacOutput(**{**plain.__dict__, "name": "other"})
    result = publish_items(
        tmp_path / "stac",
        dag_id="cwl_pkg",
        run_id="manual__1",
        run_slug="r1",
        run_iri="urn:twinprov:run/cwl_pkg/r1",
        outputs=[out, plain],
        software={"twinprov": "test"},
        processed_at=datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert result.skipped == {"other": "a folder, not a STAC catalog"}
    item = json.loads(result.items["catalog"].read_text(encoding="utf-8"))
    root = str((out.path / "catalog.json").resolve())
    assert item["assets"]["data"]["href"] == root
    assert {"rel": "related", "href": root}.items() <= next(
        link for link in item["links"] if link["rel"] == "related"
    ).items()
    assert item["bbox"] == [10.0, 40.0, 13.0, 46.0]
    assert item["properties"]["start_datetime"].startswith("2026-01-01")
    assert item["properties"]["end_datetime"].startswith("2026-02-01")
    assert item["properties"]["twinprov:directory_sha256"] == out.sha256
