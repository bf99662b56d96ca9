"""Classify the latest SPI map into drought hazard classes and summarise them per sub-region.

The most recent SPI month (for SPI-3 it already integrates three months) is binned with the
U.S. Drought Monitor SPI thresholds (see THRESHOLDS): no_drought > -0.5 >= abnormally_dry >
-0.8 >= moderate > -1.3 >= severe > -1.6 >= extreme > -2.0 >= exceptional. Cells of class
moderate or worse count as "in drought". Outputs a CF hazard map and a per-sub-region CSV.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

CLASS_NAMES = ("no_drought", "abnormally_dry", "moderate", "severe", "extreme", "exceptional")
# Upper (inclusive) SPI bound of classes 1..5; class k <=> THRESHOLDS[k] < SPI <= THRESHOLDS[k-1].
THRESHOLDS = (-0.5, -0.8, -1.3, -1.6, -2.0)
DROUGHT_FROM = CLASS_NAMES.index("moderate")
MISSING_CLASS = -1
SUMMARY_COLUMNS = ["region", "cells", "mean_spi", "min_spi", "share_in_drought", "dominant_class"]
FAULT_SPI_NOISE = 0.02  # fault "nondeterministic": std-dev of unseeded noise added to the SPI
FAULT_SUMMARY_NOISE = 1e-4  # ... and to the summary numbers


class InputError(Exception):
    """Invalid input file or arguments; reported as a one-line message."""


def open_variable(path: Path, variable: str, what: str, last_time: bool = False) -> xr.DataArray:
    """Read one variable (optionally only its last time step) from a NetCDF file."""
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        with xr.open_dataset(path, engine="netcdf4") as ds:
            if variable not in ds.data_vars:
                found = ", ".join(map(str, ds.data_vars)) or "none"
                raise InputError(f"{path}: no variable {variable!r} (found: {found})")
            var = ds[variable]
            if last_time:
                if set(var.dims) != {"time", "lat", "lon"} or var.sizes["time"] == 0:
                    dims = dict(var.sizes)
                    raise InputError(
                        f"{path}: {variable!r} has dims {dims}, expected (time, lat, lon)"
                    )
                var = var.isel(time=-1)
            return var.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path} as NetCDF: {exc}") from exc


def load_inputs(
    spi_path: Path, precip_path: Path
) -> tuple[xr.DataArray, np.ndarray, list[tuple[int, str]]]:
    """Latest SPI map (lat, lon), sub-region index map (lat, lon) and (code, name) pairs."""
    latest = open_variable(spi_path, "spi", "SPI", last_time=True).transpose("lat", "lon")
    region = open_variable(precip_path, "region", "precipitation")
    if set(region.dims) != {"lat", "lon"}:
        raise InputError(f"{precip_path}: 'region' has dims {region.dims}, expected (lat, lon)")
    meanings = str(region.attrs.get("flag_meanings", "")).split()
    values = np.atleast_1d(region.attrs.get("flag_values", []))
    if not meanings or len(values) != len(meanings):
        raise InputError(f"{precip_path}: 'region' lacks consistent flag_values/flag_meanings")
    for axis in ("lat", "lon"):
        a, b = latest[axis].values, region[axis].values
        if a.shape != b.shape or not np.allclose(a, b):
            raise InputError(f"{axis} grids of {spi_path} and {precip_path} do not match")
    codes = region.transpose("lat", "lon").values.astype(np.int64)
    names = [(int(v), name) for v, name in zip(values, meanings, strict=True)]
    return latest.astype(np.float64), codes, names


def classify(spi: np.ndarray) -> np.ndarray:
    """Hazard class index 0..5 per cell (MISSING_CLASS where the SPI is NaN)."""
    classes = np.zeros(spi.shape, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        for bound in THRESHOLDS:
            classes += (spi <= bound).astype(np.int8)
    classes[np.isnan(spi)] = MISSING_CLASS
    return classes


def summarise(
    spi: np.ndarray, classes: np.ndarray, codes: np.ndarray, names: list[tuple[int, str]]
) -> pd.DataFrame:
    """One row per sub-region (all sub-regions listed in the region map's flags).

    Missing SPI is not hidden: NaN propagates into mean_spi / min_spi. share_in_drought is
    the number of cells classified moderate or worse over all cells of the sub-region, and
    dominant_class is the most frequent class among the classified cells.
    """
    rows = []
    for code, name in names:
        mask = codes == code
        cells = int(mask.sum())
        sub_spi, sub_cls = spi[mask], classes[mask]
        valid = sub_cls[sub_cls != MISSING_CLASS]
        counts = np.bincount(valid, minlength=len(CLASS_NAMES))
        in_drought = int((sub_cls >= DROUGHT_FROM).sum())
        rows.append(
            {
                "region": name,
                "cells": cells,
                "mean_spi": float(sub_spi.mean()) if cells else np.nan,
                "min_spi": float(sub_spi.min()) if cells else np.nan,
                "share_in_drought": in_drought / cells if cells else 0.0,
                "dominant_class": CLASS_NAMES[int(counts.argmax())] if valid.size else "no_data",
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def hazard_dataset(latest: xr.DataArray, classes: np.ndarray, spi_attrs: dict) -> xr.Dataset:
    """CF hazard map: ``hazard_class`` (int8 flags) and ``spi_latest``."""
    coords = {"lat": latest["lat"], "lon": latest["lon"]}
    when = str(latest["time"].values)[:7]
    return xr.Dataset(
        data_vars={
            "hazard_class": (
                ("lat", "lon"),
                classes,
                {
                    "long_name": "drought hazard class from SPI",
                    "flag_values": np.arange(len(CLASS_NAMES), dtype=np.int8),
                    "flag_meanings": " ".join(CLASS_NAMES),
                    "spi_thresholds": np.array(THRESHOLDS, dtype=np.float32),
                    "threshold_rule": (
                        "class k (k >= 1) if spi_thresholds[k] < SPI <= spi_thresholds[k-1]; "
                        "class 0 if SPI > spi_thresholds[0]; class 5 if SPI <= -2.0"
                    ),
                    "drought_classes": " ".join(CLASS_NAMES[DROUGHT_FROM:]),
                },
            ),
            "spi_latest": (
                ("lat", "lon"),
                latest.values.astype(np.float32),
                {"long_name": f"{spi_attrs.get('long_name', 'SPI')}, {when}", "units": "1"},
            ),
        },
        coords=coords,
        attrs={
            "Conventions": "CF-1.8",
            "title": "Drought hazard classes from the latest SPI",
            "spi_month": when,
            "classification": "U.S. Drought Monitor SPI thresholds",
            # Parameters only: no paths, timestamps or host names (byte-reproducible output).
            "history": "classify_hazard.py",
        },
    )


def write_outputs(hazard: xr.Dataset, summary: pd.DataFrame, nc: Path, csv: Path) -> None:
    """NetCDF via the netCDF4 engine (verified byte-identical across runs); CSV fixed format."""
    encoding = {
        "lat": {"_FillValue": None},
        "lon": {"_FillValue": None},
        "hazard_class": {"dtype": "int8", "_FillValue": np.int8(MISSING_CLASS), "zlib": True},
        "spi_latest": {"_FillValue": np.nan, "zlib": True},
    }
    for path in (nc, csv):
        path.parent.mkdir(parents=True, exist_ok=True)
    hazard.to_netcdf(nc, engine="netcdf4", format="NETCDF4", encoding=encoding)
    summary.to_csv(csv, index=False, float_format="%.6f", na_rep="NaN", lineterminator="\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spi", type=Path, required=True, help="SPI NetCDF (variable 'spi')")
    parser.add_argument(
        "--precip", type=Path, required=True, help="precipitation NetCDF (variable 'region')"
    )
    parser.add_argument(
        "--fault",
        choices=("none", "nan", "nondeterministic"),
        default="none",
        help="'nondeterministic' adds unseeded noise (simulated bug); 'nan' is accepted so one "
        "workflow-wide fault parameter can be passed, and has no effect here",
    )
    parser.add_argument("--hazard-out", type=Path, required=True, help="hazard map NetCDF path")
    parser.add_argument("--summary-out", type=Path, required=True, help="summary CSV path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        latest, codes, names = load_inputs(args.spi, args.precip)
        spi = latest.values.copy()
        noise = np.random.default_rng() if args.fault == "nondeterministic" else None
        if noise is not None:  # simulated bug: unseeded randomness
            spi += noise.normal(0.0, FAULT_SPI_NOISE, spi.shape)
            latest = latest.copy(data=spi)
        classes = classify(spi)
        summary = summarise(spi, classes, codes, names)
        if noise is not None:
            for col in ("mean_spi", "min_spi", "share_in_drought"):
                summary[col] += noise.normal(0.0, FAULT_SUMMARY_NOISE, len(summary))
            summary["share_in_drought"] = summary["share_in_drought"].clip(0.0, 1.0)
        hazard = hazard_dataset(latest, classes, dict(latest.attrs))
        write_outputs(hazard, summary, args.hazard_out, args.summary_out)
    except (InputError, OSError) as exc:
        print(f"classify_hazard: error: {exc}", file=sys.stderr)
        return 1

    n_missing = int((classes == MISSING_CLASS).sum())
    counts = np.bincount(classes[classes != MISSING_CLASS], minlength=len(CLASS_NAMES))
    share = (classes >= DROUGHT_FROM).mean()
    print(
        f"SPI month {hazard.attrs['spi_month']}, grid {classes.shape[0]}x{classes.shape[1]}, "
        f"{len(names)} sub-regions; {share:.1%} of cells in drought (moderate or worse)"
    )
    print(
        "class counts: " + ", ".join(f"{n}={c}" for n, c in zip(CLASS_NAMES, counts, strict=True))
    )
    if n_missing:
        print(f"classify_hazard: warning: {n_missing} cells have missing SPI", file=sys.stderr)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.hazard_out} and {args.summary_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
