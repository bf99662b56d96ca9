"""Compute the Standardized Precipitation Index (SPI, McKee et al. 1993) on a precipitation grid.

Monthly precipitation is accumulated over ``scale`` months; for every calendar month and cell a
gamma distribution is fitted to the accumulations by maximum likelihood (Thom 1958
approximation). Zero accumulations enter through the mixed CDF H(x) = q + (1 - q) G(x), with q
the probability of zero, and H is mapped to a standard normal deviate: SPI = Phi^-1(H(x)).
Negative SPI means drier than usual for that time of year (SPI <= -1.3: severe drought).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.special import gammainc, ndtri

PRECIP_VAR = "precip"
DIMS = ("time", "lat", "lon")
SPI_CLIP = 5.0  # guard against +-inf from H == 0 or H == 1
MIN_NONZERO = 10  # minimum number of non-zero accumulations to fit a gamma distribution
MIN_YEARS = 10  # minimum record length (years) for a meaningful calibration
FAULT_MONTHS = 12  # fault "nan": months at the end of the record that get corrupted
FAULT_CELL_SHARE = 0.05  # fault "nan": approximate share of cells that get corrupted


class InputError(Exception):
    """Invalid input file or arguments; reported as a one-line message."""


def load_precip(path: Path) -> tuple[xr.DataArray, dict]:
    """Read and validate the precipitation variable (time, lat, lon) in mm.

    Returns the variable and the file's global attributes.
    """
    if not path.is_file():
        raise InputError(f"precipitation file not found: {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            ds = ds.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as NetCDF: {exc}") from exc
    if PRECIP_VAR not in ds.data_vars:
        found = ", ".join(map(str, ds.data_vars)) or "none"
        raise InputError(f"{path}: no variable {PRECIP_VAR!r} (found: {found})")
    precip = ds[PRECIP_VAR]
    if set(precip.dims) != set(DIMS):
        raise InputError(f"{path}: {PRECIP_VAR!r} has dims {precip.dims}, expected {DIMS}")
    if not np.issubdtype(precip["time"].dtype, np.datetime64):
        raise InputError(f"{path}: time coordinate is not a decodable datetime axis")
    precip = precip.transpose(*DIMS).astype(np.float64)
    if np.nanmin(precip.values) < 0:
        raise InputError(f"{path}: {PRECIP_VAR!r} contains negative precipitation")
    return precip, dict(ds.attrs)


def rolling_sum(values: np.ndarray, scale: int) -> np.ndarray:
    """Sum over the trailing ``scale`` steps along axis 0; drops the first scale-1 steps.

    A window sum is NaN only if the window contains a NaN, and all-zero windows stay exactly 0.
    """
    return np.lib.stride_tricks.sliding_window_view(values, scale, axis=0).sum(axis=-1)


def fit_gamma(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a mixed zero/gamma distribution per cell to samples of shape (n, cells).

    Returns (alpha, beta, q): gamma shape and scale from Thom's (1958) maximum-likelihood
    approximation on the non-zero samples, and the probability of zero. Cells that cannot be
    fitted (too few non-zero values, or all values equal) get NaN parameters.
    """
    finite = np.isfinite(samples)
    positive = finite & (samples > 0)
    n_valid = finite.sum(axis=0)
    n_pos = positive.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (n_valid - n_pos) / n_valid
        mean = np.where(positive, samples, 0.0).sum(axis=0) / n_pos
        mean_log = np.where(positive, np.log(np.where(positive, samples, 1.0)), 0.0).sum(axis=0)
        a_stat = np.log(mean) - mean_log / n_pos  # A = ln(mean) - mean(ln x) >= 0
        alpha = (1.0 + np.sqrt(1.0 + 4.0 * a_stat / 3.0)) / (4.0 * a_stat)
        beta = mean / alpha
    bad = (n_pos < MIN_NONZERO) | ~(a_stat > 0) | ~np.isfinite(alpha)
    alpha[bad] = np.nan
    beta[bad] = np.nan
    return alpha, beta, q


def compute_spi(precip: xr.DataArray, scale: int) -> tuple[xr.DataArray, dict[str, float]]:
    """SPI on the ``scale``-month accumulations; the first scale-1 months are dropped."""
    n_time, n_lat, n_lon = precip.shape
    if scale < 1:
        raise InputError(f"--scale must be >= 1, got {scale}")
    if n_time - scale + 1 < 12 * MIN_YEARS:
        raise InputError(
            f"record too short: {n_time} months, need >= {12 * MIN_YEARS + scale - 1} "
            f"for SPI-{scale}"
        )
    accum = rolling_sum(precip.values.reshape(n_time, -1), scale)
    time = precip["time"].values[scale - 1 :]
    month = precip["time"].dt.month.values[scale - 1 :]

    spi = np.full(accum.shape, np.nan)
    alphas, qs = [], []
    for m in range(1, 13):
        rows = month == m
        x = accum[rows]
        alpha, beta, q = fit_gamma(x)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = gammainc(alpha, np.where(x > 0, x, 0.0) / beta)
        h = q + (1.0 - q) * g  # x == 0 gives g == 0, i.e. H = q
        spi[rows] = np.clip(ndtri(h), -SPI_CLIP, SPI_CLIP)
        alphas.append(alpha)
        qs.append(q)
    alphas_arr, qs_arr = np.stack(alphas), np.stack(qs)
    stats = {
        "fitted_share": float(np.isfinite(alphas_arr).mean()),
        "alpha_median": float(np.nanmedian(alphas_arr)),
        "q_max": float(np.nanmax(qs_arr)),
    }

    out = xr.DataArray(
        spi.reshape(-1, n_lat, n_lon).astype(np.float32),
        dims=DIMS,
        coords={"time": time, "lat": precip["lat"], "lon": precip["lon"]},
        name="spi",
        attrs={
            "long_name": f"Standardized Precipitation Index ({scale}-month)",
            "units": "1",
            "spi_scale_months": np.int32(scale),
            "distribution": "gamma with point mass at zero, fitted per calendar month and cell",
            "fit_method": "maximum likelihood, Thom (1958) approximation",
            "calibration_period": f"{str(time[0])[:7]}..{str(time[-1])[:7]}",
            "valid_range": np.array([-SPI_CLIP, SPI_CLIP], dtype=np.float32),
            "comment": "time is the last month of the accumulation window",
        },
    )
    out["time"].attrs = {"standard_name": "time", "long_name": "end of accumulation window"}
    return out, stats


def inject_nan_fault(spi: xr.DataArray) -> int:
    """Simulated bug: blank a contiguous block of ~5% of the cells over the last 12 months."""
    _, n_lat, n_lon = spi.shape
    side = np.sqrt(FAULT_CELL_SHARE)
    h, w = max(1, round(side * n_lat)), max(1, round(side * n_lon))
    i0, j0 = n_lat // 2, n_lon // 3
    spi.values[-FAULT_MONTHS:, i0 : i0 + h, j0 : j0 + w] = np.nan
    return h * w


def write_netcdf(spi: xr.DataArray, source_attrs: dict, scale: int, out: Path) -> None:
    """Write with the netCDF4 engine; verified byte-identical across repeated runs."""
    ds = spi.to_dataset()
    ds.attrs = {
        "Conventions": "CF-1.8",
        "title": f"SPI-{scale} computed from {source_attrs.get('title', 'precipitation')}",
        "references": "McKee, Doesken & Kleist (1993); Thom (1958)",
        "region": str(source_attrs.get("region", "unknown")),
        # Parameters only: no paths, timestamps or host names (byte-reproducible output).
        "history": f"compute_spi.py --scale {scale}",
    }
    encoding: dict[str, dict] = {name: {"_FillValue": None} for name in DIMS}
    encoding["time"].update({"units": "days since 1900-01-01", "calendar": "proleptic_gregorian"})
    encoding["spi"] = {"zlib": True, "complevel": 4, "shuffle": True, "_FillValue": np.nan}
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out, engine="netcdf4", format="NETCDF4", encoding=encoding)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precip", type=Path, required=True, help="precipitation NetCDF")
    parser.add_argument("--scale", type=int, default=3, help="accumulation in months (3)")
    parser.add_argument(
        "--fault",
        choices=("none", "nan", "nondeterministic"),
        default="none",
        help="'nan' injects a block of missing cells (simulated bug); 'nondeterministic' is "
        "accepted so one workflow-wide fault parameter can be passed, and has no effect here",
    )
    parser.add_argument("--out", type=Path, required=True, help="output SPI NetCDF path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        precip, source_attrs = load_precip(args.precip)
        spi, stats = compute_spi(precip, args.scale)
        n_fault = inject_nan_fault(spi) if args.fault == "nan" else 0
        write_netcdf(spi, source_attrs, args.scale, args.out)
    except (InputError, OSError) as exc:
        print(f"compute_spi: error: {exc}", file=sys.stderr)
        return 1

    values = spi.values
    times = spi["time"].to_index()
    latest = values[-1]
    valid = latest[np.isfinite(latest)]
    print(
        f"input {tuple(precip.shape)} (time, lat, lon) -> SPI-{args.scale} {values.shape}, "
        f"{times[0]:%Y-%m}..{times[-1]:%Y-%m}"
    )
    print(
        f"gamma fits: {stats['fitted_share']:.1%} of (cell, calendar month) pairs fitted, "
        f"median alpha={stats['alpha_median']:.2f}, max P(zero)={stats['q_max']:.3f}"
    )
    print(
        f"SPI overall: mean={np.nanmean(values):+.3f} std={np.nanstd(values):.3f}; "
        f"latest month {times[-1]:%Y-%m}: mean={np.nanmean(latest):+.3f} "
        f"min={np.nanmin(latest):+.3f} share<=-0.8 (moderate+): {np.mean(valid <= -0.8):.1%}"
    )
    print(f"missing values: {np.count_nonzero(np.isnan(values))}")
    if n_fault:
        print(f"fault=nan: blanked {n_fault} cells x {FAULT_MONTHS} months")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
