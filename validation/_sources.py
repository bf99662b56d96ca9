"""Reading outputs as pandas frames, hashing the very bytes that are validated.

An output is read either **in memory** (the file's bytes are read once, hashed, and parsed from
that same buffer, so the verdict is bound to exactly the hashed bytes) or **streamed** (when it
would exceed the cell budget: hashed in one pass, then read chunk by chunk; the file's size and
modification time are checked again afterwards).

Frames:

* CSV and Parquet outputs are one frame, ``table``.
* A NetCDF output is one frame per distinct dimension tuple among its variables; the frame of
  dims ``D`` has one row per grid point of ``D`` and one column per variable (coordinate or
  data variable) whose dims are a subset of ``D``, broadcast — the layout of
  ``xarray.Dataset.to_dataframe()``, with the coordinates as ordinary columns. A 1-D
  coordinate therefore also has a frame of its own holding just its values (``(lat)``), which is
  where an expectation naming only that coordinate runs (see :mod:`twinprov.validation.run`).
"""

from __future__ import annotations

__all__ = [
    "CSV",
    "NETCDF",
    "PARQUET",
    "SUPPORTED_MEDIA_TYPES",
    "EmptyOutput",
    "Frame",
    "Hashed",
    "Source",
    "hash_file",
    "kind_of",
    "open_csv",
    "open_netcdf",
    "open_parquet",
    "probe_netcdf",
    "probe_parquet",
]

import csv
import hashlib
import io
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinprov.validation.errors import OutputReadError

CSV = "csv"
PARQUET = "parquet"
NETCDF = "netcdf"
_KINDS = {
    "text/csv": CSV,
    "application/vnd.apache.parquet": PARQUET,
    "application/x-parquet": PARQUET,
    "application/x-netcdf": NETCDF,
    "application/netcdf": NETCDF,
}
SUPPORTED_MEDIA_TYPES = tuple(_KINDS)
_BLOCK = 1 << 20


def kind_of(media_type: str) -> str | None:
    """The reader for a media type (parameters such as ``; charset=utf-8`` ignored)."""
    return _KINDS.get(media_type.split(";", 1)[0].strip().lower())


@dataclass
class Hashed:
    """One pass over a file: its digest, size, and (if kept) its bytes.

    When the bytes are kept, the digest is computed in a background thread (hashlib releases
    the GIL) so that parsing the same bytes can overlap it; :attr:`sha256` waits for it.
    """

    digest: str | Future[str]
    size: int
    stat: tuple[int, int]  # (size, mtime_ns) when hashed; re-checked after streaming
    data: bytes | None
    newlines: int = 0
    header_columns: int = 0
    ends_with_newline: bool = True

    @property
    def sha256(self) -> str:
        """The file's sha256 (hex), waiting for the background hash if there is one."""
        if isinstance(self.digest, Future):
            self.digest = self.digest.result()
        return self.digest

    def csv_rows_estimate(self) -> int:
        """Data rows of a CSV, from its line count (quoted newlines make it an overestimate)."""
        lines = self.newlines + (0 if self.ends_with_newline or self.size == 0 else 1)
        return max(lines - 1, 0)


def hash_file(path: Path, *, keep: bool, csv_cell_budget: int | None = None) -> Hashed:
    """sha256 of a file, optionally keeping its bytes.

    With ``csv_cell_budget`` (a CSV), the bytes are kept only while ``rows x columns`` stays
    within the budget. A file of at most that many bytes is within it (every cell takes at least
    one byte, its delimiter or line end) and is read in one piece; a larger one is read in
    1 MiB blocks, counting lines and header columns on the way.

    Raises:
        OutputReadError: The file cannot be opened or read.
    """
    h = hashlib.sha256()
    blocks: list[bytes] = []
    size = newlines = ncols = 0
    header = b""
    last = b"\n"
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if keep and (csv_cell_budget is None or st.st_size <= csv_cell_budget):
                data = f.read()
                return Hashed(_sha256_soon(data), len(data), (st.st_size, st.st_mtime_ns), data)
            while block := f.read(_BLOCK):
                h.update(block)
                size += len(block)
                last = block[-1:]
                if csv_cell_budget is not None:
                    newlines += block.count(b"\n")
                    if not ncols:
                        header += block
                        if b"\n" in header:
                            ncols = _csv_columns(header.split(b"\n", 1)[0])
                    if keep and newlines * max(ncols, 1) > csv_cell_budget:
                        keep, blocks = False, []
                if keep:
                    blocks.append(block)
    except OSError as e:
        raise OutputReadError(path, e.strerror or str(e)) from e
    if csv_cell_budget is not None and not ncols and header:
        ncols = _csv_columns(header)
    return Hashed(
        digest=h.hexdigest(),
        size=size,
        stat=(st.st_size, st.st_mtime_ns),
        data=b"".join(blocks) if keep else None,
        newlines=newlines,
        header_columns=ncols,
        ends_with_newline=last == b"\n",
    )


def _sha256_soon(data: bytes) -> Future[str]:
    future: Future[str] = Future()

    def work() -> None:
        try:
            future.set_result(hashlib.sha256(data).hexdigest())
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits for the digest
            future.set_exception(e)

    threading.Thread(target=work, name="twinprov-sha256", daemon=True).start()
    return future


def _csv_columns(line: bytes) -> int:
    try:
        return len(next(csv.reader([line.decode("utf-8", "replace").rstrip("\r")])))
    except (StopIteration, csv.Error):
        return 1


@dataclass
class Frame:
    """One table the suite's expectations can run on.

    Attributes:
        name: ``"table"``, or the NetCDF dims it spans, e.g. ``"(time, lat, lon)"``.
        columns: Its column names.
        rows: Its row count (for a streamed CSV an estimate from the line count).
        load: Reads the given columns of the whole frame into memory.
        chunks: Reads the given columns in pieces of about this many rows; each piece keeps the
            global row numbers as its index, so GX's unexpected indices point into the output.
    """

    name: str
    columns: tuple[str, ...]
    rows: int
    load: Callable[[tuple[str, ...]], pd.DataFrame]
    chunks: Callable[[int, tuple[str, ...]], Iterator[pd.DataFrame]]


@dataclass
class Source:
    """An opened output: its frames, and how to release it."""

    frames: list[Frame]
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Release open files (idempotent)."""
        for close in self.closers:
            close()
        self.closers.clear()


# --- CSV ------------------------------------------------------------------------------------


_NOT_TEXT = frozenset({"empty", "integer", "floating", "mixed-integer-float", "boolean"})


class EmptyOutput(OutputReadError):
    """The file holds no table at all (a 0-byte CSV): reported as an empty table."""


def _csv_error(path: Path, e: Exception) -> OutputReadError:
    if isinstance(e, pd.errors.EmptyDataError):
        return EmptyOutput(path, "the file has no header and no rows")
    return OutputReadError(path, f"not a readable CSV file: {type(e).__name__}: {e}")


def _normalise_csv(df: pd.DataFrame) -> pd.DataFrame:
    """Columns that hold no value at all become object columns of nulls.

    pandas types an all-empty column float64 whatever it holds elsewhere, which would make a
    string check (regex, set membership) raise on that chunk but not on the whole file. As
    object nulls every column expectation treats them as missing, in memory and in chunks alike.
    """
    for name in df.columns[df.isna().all(axis=0).to_numpy()]:
        df[name] = pd.Series([None] * len(df), index=df.index, dtype=object)
    return df


def open_csv(path: Path, hashed: Hashed) -> Source:
    """A CSV output as one frame; parsed from ``hashed.data`` when the bytes were kept."""
    if hashed.data is not None:
        data = hashed.data
        try:
            df = _normalise_csv(pd.read_csv(io.BytesIO(data)))
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise _csv_error(path, e) from e
        return Source([_memory_frame("table", df)])

    try:
        header = pd.read_csv(path, nrows=0)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise _csv_error(path, e) from e
    columns = tuple(str(c) for c in header.columns)

    def chunks(rows_per_chunk: int, wanted: tuple[str, ...]) -> Iterator[pd.DataFrame]:
        step = max(rows_per_chunk, 1)
        usecols = list(wanted)
        offset = 0
        try:
            # pandas infers a type per chunk: a chunk of digits in a text column would turn
            # numeric ("00042" -> 42). A first pass finds the columns that are text anywhere in
            # the file, as pandas would type them reading it whole; they are read as text.
            text: set[str] = set()
            with pd.read_csv(path, chunksize=step, usecols=usecols) as reader:
                for chunk in reader:
                    text.update(
                        str(c)
                        for c in chunk.columns
                        if pd.api.types.infer_dtype(chunk[c], skipna=True) not in _NOT_TEXT
                    )
            pinned: dict[Any, Any] = {c: "str" for c in text}
            reader = pd.read_csv(path, chunksize=step, usecols=usecols, dtype=pinned or None)
            with reader:
                for chunk in reader:
                    chunk = _normalise_csv(chunk)
                    chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                    offset += len(chunk)
                    yield chunk
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise _csv_error(path, e) from e

    def load(wanted: tuple[str, ...]) -> pd.DataFrame:  # the needed columns fit in memory
        try:
            return _normalise_csv(pd.read_csv(path, usecols=list(wanted)))
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise _csv_error(path, e) from e

    return Source([Frame("table", columns, hashed.csv_rows_estimate(), load, chunks)])


def _memory_frame(name: str, df: pd.DataFrame) -> Frame:
    df.columns = [str(c) for c in df.columns]

    def load(wanted: tuple[str, ...]) -> pd.DataFrame:
        return df if tuple(df.columns) == wanted else df[list(wanted)]

    def chunks(rows_per_chunk: int, wanted: tuple[str, ...]) -> Iterator[pd.DataFrame]:
        step = max(rows_per_chunk, 1)
        whole = load(wanted)
        for start in range(0, len(whole), step):
            yield whole.iloc[start : start + step]

    return Frame(name, tuple(df.columns), len(df), load, chunks)


# --- Parquet --------------------------------------------------------------------------------


def probe_parquet(path: Path) -> int:
    """Cells (rows x top-level columns) of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        return int(pf.metadata.num_rows) * max(len(pf.schema_arrow.names), 1)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise OutputReadError(path, f"not a readable Parquet file: {e}") from e


def open_parquet(path: Path, hashed: Hashed) -> Source:
    """A Parquet output as one frame (columns as stored; a pandas index is an ordinary column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if hashed.data is not None:
            table = pq.read_table(pa.BufferReader(hashed.data))
            return Source([_memory_frame("table", table.to_pandas(ignore_metadata=True))])
        pf = pq.ParquetFile(path)
        columns = tuple(pf.schema_arrow.names)
        rows = int(pf.metadata.num_rows)
    except Exception as e:  # noqa: BLE001
        raise OutputReadError(path, f"not a readable Parquet file: {e}") from e

    def chunks(rows_per_chunk: int, wanted: tuple[str, ...]) -> Iterator[pd.DataFrame]:
        offset = 0
        try:
            for batch in pf.iter_batches(batch_size=max(rows_per_chunk, 1), columns=list(wanted)):
                df = batch.to_pandas(ignore_metadata=True)
                df.index = pd.RangeIndex(offset, offset + len(df))
                offset += len(df)
                yield df
        except Exception as e:  # noqa: BLE001
            raise OutputReadError(path, f"not a readable Parquet file: {e}") from e

    def load(wanted: tuple[str, ...]) -> pd.DataFrame:
        try:
            return pq.read_table(path, columns=list(wanted)).to_pandas(ignore_metadata=True)
        except Exception as e:  # noqa: BLE001
            raise OutputReadError(path, f"not a readable Parquet file: {e}") from e

    return Source([Frame("table", columns, rows, load, chunks)], [pf.close])


# --- NetCDF ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    dims: tuple[str, ...]
    members: tuple[str, ...]  # coordinates first, then data variables
    rows: int

    @property
    def name(self) -> str:
        return "(" + ", ".join(self.dims) + ")"


def _grids(ds: Any) -> list[_Grid]:
    dim_tuples: dict[tuple[str, ...], None] = {}
    for var in list(ds.data_vars.values()) + list(ds.coords.values()):
        dim_tuples.setdefault(tuple(str(d) for d in var.dims), None)
    coords = [str(c) for c in ds.coords]
    order = {d: i for i, d in enumerate(str(d) for d in ds.dims)}
    coords.sort(key=lambda c: order.get(c, len(order)))  # dimension coordinates first
    names = coords + [str(v) for v in ds.data_vars]
    grids = []
    for dims in dim_tuples:
        members = tuple(n for n in names if set(map(str, ds[n].dims)) <= set(dims))
        rows = math.prod(int(ds.sizes[d]) for d in dims)
        grids.append(_Grid(dims, members, rows))
    return grids


def _nc_error(path: Path, e: Exception) -> OutputReadError:
    return OutputReadError(path, f"not a readable NetCDF file: {type(e).__name__}: {e}")


def _open_dataset(path: Path, data: bytes | None) -> Any:
    import xarray as xr

    if data is None:
        return xr.open_dataset(path, engine="netcdf4")
    import netCDF4

    nc = netCDF4.Dataset(str(path), mode="r", memory=data)
    try:
        return xr.open_dataset(xr.backends.NetCDF4DataStore(nc))  # type: ignore[no-untyped-call]
    except Exception:
        nc.close()
        raise


def probe_netcdf(path: Path) -> int:
    """Cells of the largest frame of a NetCDF file, from its metadata (no data is read)."""
    try:
        ds = _open_dataset(path, None)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, KeyError from backends
        raise _nc_error(path, e) from e
    try:
        return max((g.rows * max(len(g.members), 1) for g in _grids(ds)), default=0)
    finally:
        ds.close()


def _grid_frame(
    ds: Any, grid: _Grid, wanted: tuple[str, ...], start: int, stop: int | None
) -> pd.DataFrame:
    """Rows of ``grid`` for ``start <= index along its first dim < stop``, as a DataFrame."""
    sub = ds.isel({grid.dims[0]: slice(start, stop)}) if grid.dims else ds
    shape = tuple(int(sub.sizes[d]) for d in grid.dims)
    inner = math.prod(shape[1:]) if grid.dims else 1
    n = math.prod(shape)
    cols: dict[str, np.ndarray] = {}
    for name in wanted:
        var = sub[name]
        vdims = [d for d in grid.dims if d in var.dims]
        values = np.asarray(var.transpose(*vdims).values)
        expand = tuple(slice(None) if d in var.dims else None for d in grid.dims)
        cols[name] = np.broadcast_to(values[expand], shape).reshape(-1)
    return pd.DataFrame(cols, index=pd.RangeIndex(start * inner, start * inner + n), copy=False)


def open_netcdf(path: Path, hashed: Hashed) -> Source:
    """A NetCDF output as one frame per dimension tuple (see the module docstring)."""
    try:
        ds = _open_dataset(path, hashed.data)
    except Exception as e:  # noqa: BLE001
        raise _nc_error(path, e) from e
    try:
        grids = _grids(ds)
    except Exception as e:  # noqa: BLE001
        ds.close()
        raise _nc_error(path, e) from e

    def frame(grid: _Grid) -> Frame:
        def load(wanted: tuple[str, ...]) -> pd.DataFrame:
            try:
                return _grid_frame(ds, grid, wanted, 0, None)
            except Exception as e:  # noqa: BLE001 - truncated data surfaces when read
                raise _nc_error(path, e) from e

        def chunks(rows_per_chunk: int, wanted: tuple[str, ...]) -> Iterator[pd.DataFrame]:
            if not grid.dims:
                yield load(wanted)
                return
            n0 = int(ds.sizes[grid.dims[0]])
            inner = max(grid.rows // n0, 1) if n0 else 1
            step = max(rows_per_chunk // inner, 1)
            for start in range(0, n0, step):
                try:
                    piece = _grid_frame(ds, grid, wanted, start, start + step)
                except Exception as e:  # noqa: BLE001
                    raise _nc_error(path, e) from e
                yield piece

        return Frame(grid.name, grid.members, grid.rows, load, chunks)

    return Source([frame(g) for g in grids], [ds.close])
