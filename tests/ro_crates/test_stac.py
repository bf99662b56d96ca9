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
