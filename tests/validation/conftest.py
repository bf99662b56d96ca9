"""Fixtures for the validation tests: small real outputs written to tmp_path, no network."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from twinprov.validation.suites import SuiteSpec, load_suite

NETCDF = "application/x-netcdf"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Validation must not reach the network (GX analytics, version checks): any connect fails."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def sha256_of(path: Path) -> str:
    """Digest of a file, as the step wrapper records it."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def suite_of(*expectations: tuple[str, dict[str, Any]], name: str = "test") -> SuiteSpec:
    """An inline suite from (type, kwargs) pairs."""
    return load_suite(inline=[{"type": t, "kwargs": k} for t, k in expectations], name=name)


def spi_dataset(
    n_time: int = 24, n_lat: int = 6, n_lon: int = 8, *, nan_cells: int = 0, seed: int = 0
) -> xr.Dataset:
    """A small SPI-like grid (time, lat, lon) inside the Alps box, optionally with NaN cells."""
    rng = np.random.default_rng(seed)
    spi = rng.normal(size=(n_time, n_lat, n_lon)).clip(-5, 5).astype(np.float32)
    if nan_cells:
        spi.reshape(-1)[-nan_cells:] = np.nan
    return xr.Dataset(
        {"spi": (("time", "lat", "lon"), spi, {"units": "1"})},
        coords={
            "time": pd.date_range("2000-01-01", periods=n_time, freq="MS"),
            "lat": np.linspace(48.4, 43.6, n_lat),
            "lon": np.linspace(5.1, 16.9, n_lon),
        },
    )


def write_nc(ds: xr.Dataset, path: Path) -> Path:
    """Write a dataset as NetCDF-4 with the netCDF4 engine (as the step programs do)."""
    encoding = {v: {"_FillValue": np.nan} for v in ds.data_vars if ds[v].dtype.kind == "f"}
    ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=encoding)
    return path


SPI_SUITE = (
    ("expect_column_values_to_not_be_null", {"column": "spi"}),
    ("expect_column_values_to_be_between", {"column": "spi", "min_value": -5, "max_value": 5}),
    ("expect_column_values_to_be_between", {"column": "lat", "min_value": 43.5, "max_value": 48.5}),
    ("expect_column_values_to_be_between", {"column": "lon", "min_value": 5.0, "max_value": 17.0}),
)


@pytest.fixture
def spi_suite() -> SuiteSpec:
    """Not-null and range checks on the SPI grid and its coordinates."""
    return suite_of(*SPI_SUITE, name="spi")


def table(n: int = 1000, seed: int = 1) -> pd.DataFrame:
    """A mixed table: ids, a bounded float with a few NaNs and outliers, a category, a code."""
    rng = np.random.default_rng(seed)
    value = rng.uniform(0, 1, n)
    value[rng.choice(n, 7, replace=False)] = np.nan
    value[rng.choice(n, 5, replace=False)] = 3.5  # out of [0, 1]
    cat = rng.choice(["a", "b", "c"], n).astype(object)
    cat[rng.choice(n, 4, replace=False)] = "zz"
    code = np.array([f"R{i:04d}" for i in range(n)], dtype=object)
    code[rng.choice(n, 3, replace=False)] = "bad code"
    low = rng.uniform(-1, 0, n)
    return pd.DataFrame({"id": np.arange(n), "value": value, "cat": cat, "code": code, "low": low})


TableWriter = Callable[[pd.DataFrame, Path], Path]


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def write_parquet(df: pd.DataFrame, path: Path) -> Path:
    df.to_parquet(path, index=False)
    return path
