"""STAC publication (pystac): geospatial outputs of a run become Items of a static catalog.

One self-contained Catalog under ``TWINPROV_HOME/stac/``, one Collection per workflow, one Item
per geospatial output of a run: bbox/geometry and time range read from the file, the data asset
with ``file:checksum`` (multihash sha2-256) and ``file:size``, the ``processing`` extension
(lineage, software, datetime), ``derived_from`` links to the Items of the step's inputs, a
``describedby`` link to the run's RO-Crate, and a PNG quicklook as the ``thumbnail`` asset.
Republishing a run replaces its Items (idempotent); publishing one run leaves every other run's
files as they were (Item JSON, quicklook). Updates are serialized with a file lock and written
to a temporary folder that is renamed into place.
"""

from __future__ import annotations

__all__ = ["PROCESSING_SCHEMA", "StacOutput", "geospatial_extent", "publish_items", "multihash"]

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
from pystac.extensions.file import FileExtension

from twinprov.provenance.files import file_lock
from twinprov.ro_crates.errors import CrateError

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
_NETCDF = {"application/x-netcdf", "application/netcdf"}
_LAT = ("lat", "latitude", "y")
_LON = ("lon", "longitude", "x")


class StacError(CrateError):
    """An output cannot be described as a STAC Item (e.g. declared geospatial, but no lat/lon)."""


@dataclass(frozen=True)
class StacOutput:
    """One output of one task try, as the STAC builder needs it."""

    name: str
    step: str
    path: Path
    sha256: str
    size: int
    media_type: str
    input_sha256s: tuple[str, ...] = ()
    geospatial: bool | None = None
    """``True``: must be geospatial; ``None``: publish if the file has lat/lon coordinates."""


@dataclass(frozen=True)
class Extent:
    """Where and when a gridded output (or the items of a STAC catalog output) is."""

    bbox: tuple[float, float, float, float] | None
    start: datetime | None
    end: datetime | None
    quicklook_var: str | None = None
    catalog: Path | None = None
    """A ``Directory`` output that is a STAC catalog: its root document."""


@dataclass(frozen=True)
class StacResult:
    """What :func:`publish_items` wrote."""

    catalog: Path
    items: dict[str, Path] = field(default_factory=dict)
    """Output name → Item JSON path."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Output name → why it is not an Item."""


def multihash(sha256_hex: str) -> str:
    """A sha256 as a multihash string (``1220`` + hex), as ``file:checksum`` wants it."""
    return "1220" + sha256_hex


def geospatial_extent(path: Path, media_type: str) -> Extent | None:
    """The bbox and time range of a NetCDF file with lat/lon coordinates; ``None`` otherwise."""
    if media_type not in _NETCDF:
        return None
    import numpy as np
    import xarray as xr

    try:
        with xr.open_dataset(path) as ds:
            lat = next((ds[n] for n in _LAT if n in ds.coords), None)
            lon = next((ds[n] for n in _LON if n in ds.coords), None)
            if lat is None or lon is None:
                return None
            bbox = (
                float(lon.min()),
                float(lat.min()),
                float(lon.max()),
                float(lat.max()),
            )
            start = end = None
            if "time" in ds.coords and ds["time"].size:
                times = np.asarray(ds["time"].values).ravel()
                if np.issubdtype(times.dtype, np.datetime64):
                    start = _to_dt(times.min())
                    end = _to_dt(times.max())
            grid = [
                v
                for v in ds.data_vars
                if {lat.name, lon.name} <= set(ds[v].dims) and ds[v].dtype.kind in "iuf"
            ]
            return Extent(bbox, start, end, str(grid[0]) if grid else None)
    except (OSError, ValueError) as e:
        raise StacError(f"cannot read {path} for its extent: {e}") from e


def stac_catalog_extent(path: Path) -> Extent | None:
    """A folder that is a STAC catalog (``catalog.json`` or ``collection.json`` read by pystac):
    the union of its items' bboxes and datetimes; ``None`` for any other folder."""
    root = next(
        (path / n for n in ("catalog.json", "collection.json") if (path / n).is_file()), None
    )
    if root is None:
        return None
    try:
        catalog = pystac.read_file(str(root))
        if not isinstance(catalog, pystac.Catalog):
            return None
        items = list(catalog.get_items(recursive=True))
    except Exception:  # noqa: BLE001 - a folder with a catalog.json that is not STAC: not one
        return None
    boxes = [i.bbox for i in items if i.bbox and len(i.bbox) == 4]
    bbox = (
        (
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        )
        if boxes
        else None
    )
    times = [t for i in items for t in (i.datetime, *_item_range(i)) if t is not None]
    return Extent(bbox, min(times, default=None), max(times, default=None), catalog=root)


def _item_range(item: pystac.Item) -> tuple[datetime | None, datetime | None]:
    common = item.common_metadata
    return common.start_datetime, common.end_datetime


def _to_dt(value: Any) -> datetime:
    import numpy as np

    seconds = (np.datetime64(value, "s") - np.datetime64(0, "s")) // np.timedelta64(1, "s")
    return datetime.fromtimestamp(int(seconds), tz=UTC)


def _quicklook(path: Path, var: str, dest: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    with xr.open_dataset(path) as ds:
        da = ds[var]
        while da.ndim > 2:
            da = da.isel({da.dims[0]: -1})
        fig, ax = plt.subplots(figsize=(4, 3), dpi=80)
        da.plot(ax=ax)  # type: ignore[call-arg]
        ax.set_title(var)
        fig.tight_layout()
        fig.savefig(dest, format="png", metadata={"Software": None})
        plt.close(fig)
    return True


def _asset_path(out: StacOutput, ext: Extent) -> Path:
    """The file an Item's data asset names: the output, or a STAC catalog output's root."""
    return (ext.catalog or out.path).resolve()


def _item_id(run_slug: str, output: str) -> str:
    return f"{run_slug}__{output}"


def _keep_other_runs_files(old_root: Path, new_root: Path, dag_id: str, own: set[str]) -> None:
    """Put every file of the old catalog that is not this run's back, byte for byte.

    Saving writes only JSON, and pystac re-serializes the Items it read (their asset hrefs made
    relative to the new folder): the other runs' Item folders (JSON, ``thumbnail.png``) and the
    other workflows' collections are copied over from the old catalog instead. Only the root
    catalog, this workflow's ``collection.json`` and this run's Item folders are new.
    """
    if not old_root.is_dir():
        return
    for src in old_root.rglob("*"):
        rel = src.relative_to(old_root)
        parts = rel.parts
        if not src.is_file() or parts == ("catalog.json",) or parts == (dag_id, "collection.json"):
            continue
        if len(parts) > 2 and parts[0] == dag_id and parts[1] in own:
            continue  # this run's Items: just written
        target = new_root / rel
        if target.parent.is_dir():  # still in the catalog (a replaced Item's folder is gone)
            shutil.copy2(src, target)


def publish_items(
    stac_root: Path,
    *,
    dag_id: str,
    run_id: str,
    run_slug: str,
    run_iri: str,
    outputs: Sequence[StacOutput],
    software: Mapping[str, str],
    processed_at: datetime,
    crate_metadata: Path | None = None,
    description: str = "",
) -> StacResult:
    """Add (or replace) the run's Items in the catalog at ``stac_root``.

    Raises :class:`StacError` for an output declared geospatial that has no lat/lon.
    """
    extents: dict[str, Extent] = {}
    skipped: dict[str, str] = {}
    for out in outputs:
        if out.path.is_dir():  # a Directory (CWL): linked when it is a STAC catalog
            ext = stac_catalog_extent(out.path)
            if ext is None:
                skipped[out.name] = "a folder, not a STAC catalog"
            else:
                extents[out.name] = ext
            continue
        ext = geospatial_extent(out.path, out.media_type) if out.path.is_file() else None
        if ext is None:
            if out.geospatial:
                raise StacError(
                    f"output '{out.name}' is declared geospatial but {out.path} has no "
                    "lat/lon coordinates"
                )
            skipped[out.name] = "not geospatial" if out.path.is_file() else "file missing"
            continue
        if out.geospatial is False:
            skipped[out.name] = "declared not geospatial"
            continue
        extents[out.name] = ext

    if not extents:  # nothing geospatial: leave the catalog as it is
        return StacResult(catalog=stac_root / "catalog.json", items={}, skipped=skipped)
    with file_lock(stac_root.parent / ".stac.lock"):
        catalog_file = stac_root / "catalog.json"
        if catalog_file.is_file():
            catalog = pystac.Catalog.from_file(str(catalog_file))
        else:
            catalog = pystac.Catalog(
                id="twinprov",
                description="Outputs of digital-twin workflow runs recorded by twinprov",
                title="twinprov runs",
            )
        collection = catalog.get_child(dag_id)
        if collection is None:
            collection = pystac.Collection(
                id=dag_id,
                description=description or f"Outputs of workflow {dag_id}",
                extent=pystac.Extent(
                    pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                    pystac.TemporalExtent([[processed_at, None]]),
                ),
                license="other",
            )
            catalog.add_child(collection)
        assert isinstance(collection, pystac.Collection)
        for out in outputs:  # replace this run's items: republishing is idempotent
            existing = collection.get_item(_item_id(run_slug, out.name))
            if existing is not None:
                collection.remove_item(existing.id)

        tmp_root = Path(tempfile.mkdtemp(prefix=".stac-", dir=stac_root.parent))
        thumbs: dict[str, Path] = {}
        by_sha: dict[str, pystac.Item] = {}
        items: dict[str, pystac.Item] = {}
        for out in outputs:
            if out.name not in extents:
                continue
            ext = extents[out.name]
            geometry = None
            if ext.bbox is not None:
                west, south, east, north = ext.bbox
                geometry = {
                    "type": "Polygon",
                    "coordinates": [
                        [[west, south], [east, south], [east, north], [west, north], [west, south]]
                    ],
                }
            props: dict[str, Any] = {
                "title": f"{out.name} of {dag_id} run {run_id}",
                "processing:lineage": (
                    f"Generated by step '{out.step}' of twinprov workflow '{dag_id}', run "
                    f"'{run_id}' (W3C PROV: {run_iri})"
                ),
                "processing:software": dict(software),
                "processing:datetime": processed_at.isoformat(),
                "twinprov:run": run_iri,
            }
            if ext.start and ext.end:
                props["start_datetime"] = ext.start.isoformat()
                props["end_datetime"] = ext.end.isoformat()
            if ext.catalog is not None:  # content: the sha256 of the folder's file manifest
                props["twinprov:directory_sha256"] = out.sha256
            item = pystac.Item(
                id=_item_id(run_slug, out.name),
                geometry=geometry,
                bbox=list(ext.bbox) if ext.bbox is not None else None,
                datetime=None if ext.start and ext.end else processed_at,
                properties=props,
                stac_extensions=[PROCESSING_SCHEMA],
            )
            asset = pystac.Asset(
                href=str(_asset_path(out, ext)),
                media_type=out.media_type if ext.catalog is None else pystac.MediaType.JSON,
                roles=["data"] if ext.catalog is None else ["data", "catalog"],
                title=out.name,
            )
            item.add_asset("data", asset)
            if ext.catalog is None:
                fe = FileExtension.ext(asset, add_if_missing=True)
                fe.checksum = multihash(out.sha256)
                fe.size = out.size
            else:  # the run's own STAC catalog, linked from ours
                item.add_link(
                    pystac.Link(
                        rel="related",
                        target=str(ext.catalog.resolve()),
                        media_type=pystac.MediaType.JSON,
                        title=f"STAC catalog {out.name} written by step {out.step}",
                    )
                )
            if crate_metadata is not None:
                item.add_link(
                    pystac.Link(
                        rel="describedby",
                        target=str(crate_metadata.resolve()),
                        media_type="application/ld+json",
                        title="RO-Crate (Provenance Run Crate) of the run",
                    )
                )
            collection.add_item(item)
            items[out.name] = item
            by_sha[out.sha256] = item
            if ext.quicklook_var:
                thumbs[out.name] = out.path
        for out in outputs:
            derived = items.get(out.name)
            if derived is None:
                continue
            for sha in out.input_sha256s:
                src = by_sha.get(sha)
                if src is not None and src is not derived:
                    derived.add_link(pystac.Link(rel="derived_from", target=src))
        collection.update_extent_from_items()
        catalog.normalize_hrefs(str(tmp_root))
        for name, data_path in thumbs.items():
            item = items[name]
            item_dir = Path(item.get_self_href() or "").parent
            item_dir.mkdir(parents=True, exist_ok=True)
            png = item_dir / "thumbnail.png"
            _quicklook(data_path, extents[name].quicklook_var or "", png)
            item.add_asset(
                "thumbnail",
                pystac.Asset(href=str(png), media_type=pystac.MediaType.PNG, roles=["thumbnail"]),
            )
        catalog.make_all_asset_hrefs_relative()
        for item in items.values():  # data assets stay absolute (they live in the run folder)
            item.assets["data"].href = str(
                next(
                    _asset_path(o, extents[o.name])
                    for o in outputs
                    if _item_id(run_slug, o.name) == item.id
                )
            )
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        own = {_item_id(run_slug, o.name) for o in outputs}
        _keep_other_runs_files(stac_root, tmp_root, dag_id, own)
        old = stac_root.with_name(stac_root.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if stac_root.exists():
            os.replace(stac_root, old)
        os.replace(tmp_root, stac_root)
        shutil.rmtree(old, ignore_errors=True)
        paths = {
            name: stac_root / Path(item.get_self_href() or "").relative_to(tmp_root)
            for name, item in items.items()
        }
    return StacResult(catalog=stac_root / "catalog.json", items=paths, skipped=skipped)
