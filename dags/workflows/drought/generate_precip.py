"""Generate a deterministic synthetic monthly precipitation grid for a mountain region.

Monthly precipitation (mm/month) is drawn from a gamma distribution whose mean combines a
seasonal cycle, an orography-like enhancement along the main ridge and spatially coherent,
month-to-month persistent (AR(1)) large-scale anomalies. A multi-year dry spell is injected
at the end of the record so the downstream SPI / drought-hazard steps have a drought to find.
Each cell is also assigned to one of a handful of named sub-regions (variable ``region``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

N_LAT = 80
N_LON = 120
FIRST_YEAR = 1985
N_YEARS = 40
GAMMA_SHAPE = 12.0  # shape of the cell-level monthly gamma noise (CV = 1/sqrt(12) ~ 0.29)
ANOMALY_SIGMA = 0.5  # std-dev of the log large-scale anomaly field
ANOMALY_PERSISTENCE = 0.4  # AR(1) coefficient of the large-scale anomalies
N_MODES = 12  # number of random Fourier modes building the large-scale anomalies
DRY_SPELL_MONTHS = 30  # length of the injected drought at the end of the record
DRY_SPELL_RAMP = 9  # months over which the drought intensifies
DRY_SPELL_DEPTH = 0.6  # maximum relative precipitation deficit
TRACE_MM = 0.1  # amounts below this are recorded as zero (dry month)
TIME_UNITS = f"days since {FIRST_YEAR}-01-01"


@dataclass(frozen=True)
class Region:
    """Bounding box, main ridge and named sub-regions (name -> seed point) of a region."""

    lat_range: tuple[float, float]
    lon_range: tuple[float, float]
    ridge: tuple[tuple[float, float], ...]  # (lat, lon) vertices of the main crest line
    subregions: dict[str, tuple[float, float]]  # Voronoi seed points (lat, lon)
    dry_corner: tuple[float, float]  # (lat, lon) where the injected drought is strongest


REGIONS: dict[str, Region] = {
    "alps": Region(
        lat_range=(43.5, 48.5),
        lon_range=(5.0, 17.0),
        ridge=(
            (44.2, 7.2),
            (45.0, 6.9),
            (45.9, 7.1),
            (46.3, 8.1),
            (46.5, 9.6),
            (46.9, 11.0),
            (47.1, 12.5),
            (47.3, 14.0),
            (47.6, 15.6),
        ),
        subregions={
            "western_alps": (45.3, 6.8),
            "central_alps": (46.5, 9.3),
            "eastern_alps": (47.2, 13.8),
            "southern_alps": (45.6, 11.2),
            "northern_prealps": (47.9, 9.8),
        },
        dry_corner=(44.0, 6.0),
    ),
    "pyrenees": Region(
        lat_range=(41.5, 43.8),
        lon_range=(-2.5, 3.5),
        ridge=((43.1, -1.9), (42.8, -0.4), (42.7, 0.8), (42.5, 2.0), (42.4, 3.1)),
        subregions={
            "western_pyrenees": (42.9, -1.6),
            "central_pyrenees": (42.7, 0.4),
            "eastern_pyrenees": (42.5, 2.4),
            "ebro_foothills": (41.9, 0.0),
            "aquitaine_foothills": (43.5, 0.3),
        },
        dry_corner=(41.5, 3.5),
    ),
    "carpathians": Region(
        lat_range=(44.5, 50.0),
        lon_range=(17.5, 27.0),
        ridge=(
            (48.6, 18.6),
            (49.2, 20.0),
            (49.2, 22.0),
            (48.5, 23.6),
            (47.5, 25.0),
            (46.3, 25.9),
            (45.6, 25.0),
            (45.4, 23.2),
            (45.0, 22.2),
        ),
        subregions={
            "western_carpathians": (48.9, 19.5),
            "eastern_carpathians": (47.6, 25.0),
            "southern_carpathians": (45.5, 24.0),
            "apuseni_mountains": (46.5, 22.8),
            "pannonian_basin": (47.2, 19.8),
        },
        dry_corner=(44.5, 27.0),
    ),
}


class InputError(Exception):
    """Invalid command-line input; reported as a one-line message."""


def grid_axes(region: Region) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre latitudes (north to south) and longitudes of the region's bounding box."""
    (lat0, lat1), (lon0, lon1) = region.lat_range, region.lon_range
    dlat, dlon = (lat1 - lat0) / N_LAT, (lon1 - lon0) / N_LON
    lat = lat1 - dlat * (np.arange(N_LAT) + 0.5)
    lon = lon0 + dlon * (np.arange(N_LON) + 0.5)
    return lat, lon


def km_offsets(
    lat2d: np.ndarray, lon2d: np.ndarray, lat0: float, lon0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Local equirectangular (east, north) offsets in km from the point (lat0, lon0)."""
    east = (lon2d - lon0) * 111.32 * np.cos(np.deg2rad(0.5 * (lat2d + lat0)))
    north = (lat2d - lat0) * 110.57
    return east, north


def ridge_elevation(region: Region, lat2d: np.ndarray, lon2d: np.ndarray) -> np.ndarray:
    """Orography proxy in [0, 1]: Gaussian profile of the distance to the crest polyline."""
    dist = np.full(lat2d.shape, np.inf)
    for (la0, lo0), (la1, lo1) in zip(region.ridge[:-1], region.ridge[1:], strict=True):
        px, py = km_offsets(lat2d, lon2d, la0, lo0)
        sx, sy = km_offsets(np.array(la1), np.array(lo1), la0, lo0)
        t = np.clip((px * sx + py * sy) / (sx * sx + sy * sy), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(px - t * sx, py - t * sy))
    return np.exp(-0.5 * (dist / 70.0) ** 2)


def assign_subregions(region: Region, lat2d: np.ndarray, lon2d: np.ndarray) -> np.ndarray:
    """Index of the nearest sub-region seed point (Voronoi partition) for every cell."""
    dists = []
    for lat0, lon0 in region.subregions.values():
        east, north = km_offsets(lat2d, lon2d, lat0, lon0)
        dists.append(np.hypot(east, north))
    return np.argmin(np.stack(dists), axis=0).astype(np.int8)


def large_scale_anomalies(
    rng: np.random.Generator, n_time: int, lat2d: np.ndarray, lon2d: np.ndarray
) -> np.ndarray:
    """Smooth, unit-variance, AR(1)-persistent random fields of shape (time, lat, lon)."""
    y = (lat2d - lat2d.min()) / np.ptp(lat2d)
    x = (lon2d - lon2d.min()) / np.ptp(lon2d)
    kx = rng.uniform(-2.5, 2.5, N_MODES) * np.pi
    ky = rng.uniform(-2.5, 2.5, N_MODES) * np.pi
    phase = rng.uniform(0.0, 2.0 * np.pi, N_MODES)
    basis = np.cos(kx[:, None] * x.ravel() + ky[:, None] * y.ravel() + phase[:, None])
    basis *= np.sqrt(2.0 / N_MODES)  # each cos has variance 1/2 over random phases
    innovations = rng.standard_normal((n_time, N_MODES)) @ basis
    fields = np.empty_like(innovations)
    fields[0] = innovations[0]
    scale = np.sqrt(1.0 - ANOMALY_PERSISTENCE**2)
    for t in range(1, n_time):
        fields[t] = ANOMALY_PERSISTENCE * fields[t - 1] + scale * innovations[t]
    return fields.reshape(n_time, *lat2d.shape)


def dry_spell_factor(
    region: Region, n_time: int, lat2d: np.ndarray, lon2d: np.ndarray
) -> np.ndarray:
    """Multiplicative precipitation factor (time, lat, lon) with a drought at the end."""
    ramp = np.zeros(n_time)
    start = n_time - DRY_SPELL_MONTHS
    ramp[start:] = np.minimum(1.0, (np.arange(DRY_SPELL_MONTHS) + 1) / DRY_SPELL_RAMP)
    east, north = km_offsets(lat2d, lon2d, *region.dry_corner)
    dist = np.hypot(east, north)
    intensity = 1.0 - 0.8 * dist / dist.max()  # 1 at the dry corner, 0.2 farthest away
    return 1.0 - DRY_SPELL_DEPTH * ramp[:, None, None] * intensity[None, :, :]


def generate(seed: int, region_name: str) -> xr.Dataset:
    """Build the synthetic precipitation dataset for ``region_name``."""
    region = REGIONS[region_name]
    rng = np.random.default_rng(seed)
    lat, lon = grid_axes(region)
    lon2d, lat2d = np.meshgrid(lon, lat)
    time = pd.date_range(f"{FIRST_YEAR}-01-01", periods=12 * N_YEARS, freq="MS")
    n_time = time.size

    # Climatological mean: wetter over the ridge, wetter towards the north-west.
    elevation = ridge_elevation(region, lat2d, lon2d)
    y_norm = (lat2d - lat2d.min()) / np.ptp(lat2d)  # 0 south .. 1 north
    x_norm = (lon2d - lon2d.min()) / np.ptp(lon2d)  # 0 west .. 1 east
    annual_mean = 55.0 + 95.0 * elevation + 15.0 * y_norm - 10.0 * x_norm  # mm/month

    # Seasonal cycle: summer (convective) maximum in the north, autumn maximum in the south.
    peak_month = 10.0 - 3.0 * y_norm  # month number 1..12 of maximum precipitation
    month = time.month.to_numpy(dtype=float)
    seasonal = 1.0 + 0.35 * np.cos(2.0 * np.pi * (month[:, None, None] - peak_month) / 12.0)

    anomalies = large_scale_anomalies(rng, n_time, lat2d, lon2d)
    anomaly_factor = np.exp(ANOMALY_SIGMA * anomalies - 0.5 * ANOMALY_SIGMA**2)
    mean = annual_mean * seasonal * anomaly_factor
    mean *= dry_spell_factor(region, n_time, lat2d, lon2d)

    precip = rng.gamma(GAMMA_SHAPE, mean / GAMMA_SHAPE)
    precip[precip < TRACE_MM] = 0.0

    names = list(region.subregions)
    return xr.Dataset(
        data_vars={
            "precip": (
                ("time", "lat", "lon"),
                precip.astype(np.float32),
                {
                    "standard_name": "lwe_thickness_of_precipitation_amount",
                    "long_name": "monthly total precipitation",
                    "units": "mm",
                    "cell_methods": "time: sum",
                },
            ),
            "region": (
                ("lat", "lon"),
                assign_subregions(region, lat2d, lon2d),
                {
                    "long_name": f"sub-region of the {region_name} domain",
                    "flag_values": np.arange(len(names), dtype=np.int8),
                    "flag_meanings": " ".join(names),
                },
            ),
        },
        coords={
            "time": ("time", time, {"standard_name": "time", "long_name": "month start"}),
            "lat": (
                "lat",
                lat,
                {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"},
            ),
            "lon": (
                "lon",
                lon,
                {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"},
            ),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": f"Synthetic monthly precipitation, {region_name}",
            "source": "synthetic: seasonal cycle x orography x AR(1) anomalies, gamma noise",
            "comment": (
                f"dry spell injected over the last {DRY_SPELL_MONTHS} months "
                f"(max deficit {DRY_SPELL_DEPTH:.0%})"
            ),
            "region": region_name,
            "seed": seed,
            # Parameters only: no paths, timestamps or host names (byte-reproducible output).
            "history": f"generate_precip.py --seed {seed} --region {region_name}",
        },
    )


def write_netcdf(ds: xr.Dataset, out: Path) -> None:
    """Write with the netCDF4 engine; verified byte-identical across repeated runs."""
    encoding: dict[str, dict] = {name: {"_FillValue": None} for name in ("time", "lat", "lon")}
    encoding["time"].update({"units": TIME_UNITS, "calendar": "proleptic_gregorian"})
    encoding["precip"] = {"zlib": True, "complevel": 4, "shuffle": True, "_FillValue": np.nan}
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out, engine="netcdf4", format="NETCDF4", encoding=encoding)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True, help="random seed (int)")
    parser.add_argument("--region", required=True, help=f"one of: {', '.join(REGIONS)}")
    parser.add_argument("--out", type=Path, required=True, help="output NetCDF path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.region not in REGIONS:
            choices = ", ".join(REGIONS)
            raise InputError(f"unknown region {args.region!r} (expected one of: {choices})")
        if args.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {args.seed}")
        ds = generate(args.seed, args.region)
        write_netcdf(ds, args.out)
    except (InputError, OSError) as exc:
        print(f"generate_precip: error: {exc}", file=sys.stderr)
        return 1

    precip = ds["precip"].values
    names = ds["region"].attrs["flag_meanings"].split()
    counts = np.bincount(ds["region"].values.ravel(), minlength=len(names))
    times = ds["time"].to_index()
    n_dry = DRY_SPELL_MONTHS
    print(
        f"region={args.region} seed={args.seed} grid={ds.sizes['lat']}x{ds.sizes['lon']} "
        f"months={ds.sizes['time']} ({times[0]:%Y-%m}..{times[-1]:%Y-%m})"
    )
    print(
        f"lat {ds.lat.values.min():.3f}..{ds.lat.values.max():.3f}N, "
        f"lon {ds.lon.values.min():.3f}..{ds.lon.values.max():.3f}E"
    )
    print(
        f"precip mm/month: mean={precip.mean():.2f} min={precip.min():.2f} "
        f"max={precip.max():.2f} zero-months={np.count_nonzero(precip == 0)}"
    )
    print(
        f"domain-mean precip: last {n_dry} months {precip[-n_dry:].mean():.2f} vs "
        f"earlier {precip[:-n_dry].mean():.2f} mm/month (injected dry spell)"
    )
    print("sub-regions: " + ", ".join(f"{n}={c}" for n, c in zip(names, counts, strict=True)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
