"""Validating one output file against a suite, with the verdict bound to the file's sha256.

:func:`validate_file` never raises for bad data: every problem (a changed file, an unreadable
one, a missing column, an empty table, a failing expectation) becomes a failed
:class:`ValidationRecord` whose ``error`` says what happened, so provenance can always record
the attempt. The steps, in order:

1. **Hash.** The file's sha256 is recomputed and compared with the one recorded when it was
   produced; a mismatch fails the record and GX does not run. When the output fits the cell
   budget its bytes are read once, hashed (in a background thread) and parsed from that same
   buffer while the hash runs, so the verdict is about exactly the hashed bytes; a larger output
   is hashed in 1 MiB blocks, then streamed from disk, and its size and modification time are
   checked again at the end ("output changed during validation").
2. **Read** by media type (``text/csv``; ``application/vnd.apache.parquet`` /
   ``application/x-parquet``; ``application/x-netcdf`` / ``application/netcdf``). Other media
   types are *skipped* (``skipped=True``, ``success=False``) — not validated, not failed.
   CSV is read by pandas with its defaults (``NA``, ``NaN``, ``null``, empty... are missing).
3. **Frames** (see ``twinprov.validation._sources``): a table is one frame; a NetCDF file has one
   frame
   per distinct dimension tuple, with coordinates as columns. Each expectation runs on one
   frame: the smallest frame holding every column it names — so an expectation on ``lat``
   alone sees the 80 latitudes once each, one on ``spi`` sees every (time, lat, lon) cell, and a
   pair such as (``spi``, ``lat``) sees ``lat`` broadcast next to ``spi``. An expectation naming
   no column (row count, column set) runs on the largest frame.
4. **Checks before GX**: a column the suite names but no frame has fails the record (all such
   columns named); a frame with no rows fails it ("output table is empty").
5. **GX**: one run per frame in memory; or, for a frame of more than ``max_cells_in_memory``
   cells (rows x the columns its expectations need: column checks read only their columns,
   table-level checks read all), one run per chunk (rows of a table, slices of the first dimension
   of a NetCDF grid) whose results are combined where that is sound
   (``twinprov.validation._combine``);
   if the frame has an expectation that cannot be combined, the record is skipped with the
   reason.

The record's ``result`` has the shape of GX's ``ExpectationSuiteValidationResult.to_json_dict()``
(``success``, ``results`` in suite order, ``statistics``, ``suite_name``, ``meta``), strict JSON
(NaN and infinities written as strings); ``meta.twinprov`` adds the frames, chunking and timings.
"""

from __future__ import annotations

__all__ = [
    "ValidationRecord",
    "gx_version",
    "validate_file",
]

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twinprov.validation import _combine, _sources
from twinprov.validation._gx import gx_version as _gx_version
from twinprov.validation.errors import OutputReadError
from twinprov.validation.suites import SuiteSpec

_COLUMN_KEYS = ("column", "column_A", "column_B")
_COLUMN_LIST_KEYS = ("column_list",)
# Naming a column the output lacks is what this one checks, so it is left to GX.
_ASSERTS_PRESENCE = frozenset({"expect_column_to_exist"})
# Expectations about a column's dtype: their columns keep the dtype they were read with.
_TYPE_CHECKS = frozenset(
    {"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"}
    | {"expect_column_type_to_be"}
)


def gx_version() -> str:
    """Version of the Great Expectations library that produces the verdicts."""
    return _gx_version()


@dataclass(frozen=True)
class ValidationRecord:
    """The outcome of validating one output: what provenance stores, bound to its sha256.

    Attributes:
        output: The output's name in the workflow spec.
        path: The file validated.
        media_type: Its declared media type.
        expected_sha256: The digest recorded when the output was produced (None if unknown).
        sha256: The digest recomputed just before validating (None if unreadable).
        success: True only if every expectation ran and passed. False for a skipped record.
        evaluated: Expectations evaluated.
        successful: Expectations that passed.
        failed: Expectations that failed.
        failed_expectations: Each failed expectation as ``type(column, ...)``, suite order.
        gx_version: Great Expectations version.
        suite: The suite's name.
        result: GX's result as a JSON-able dict (``{}`` when GX did not run).
        error: Why the record failed without (or besides) failing expectations, if it did.
        skipped: True when the output was not validated (unknown media type, too large for a
            check that needs it whole); ``skip_reason`` says why.
        skip_reason: Why it was skipped.
    """

    output: str
    path: str
    media_type: str
    expected_sha256: str | None
    sha256: str | None
    success: bool
    evaluated: int
    successful: int
    failed: int
    failed_expectations: tuple[str, ...]
    gx_version: str
    suite: str
    result: dict[str, Any]
    error: str | None
    skipped: bool = False
    skip_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (``failed_expectations`` as a list)."""
        d = dataclasses.asdict(self)
        d["failed_expectations"] = list(self.failed_expectations)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValidationRecord:
        """The record :meth:`to_dict` produced (unknown keys are ignored, for newer writers).

        Raises:
            KeyError: A required field is missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["failed_expectations"] = tuple(values.get("failed_expectations") or ())
        values["result"] = dict(values.get("result") or {})
        values.setdefault("skipped", False)
        values.setdefault("skip_reason", None)
        missing = names - set(values)
        if missing:
            raise KeyError(f"validation record lacks {', '.join(sorted(missing))}")
        return cls(**values)


def validate_file(
    path: Path,
    *,
    output: str,
    media_type: str,
    suite: SuiteSpec,
    expected_sha256: str | None,
    max_cells_in_memory: int = 50_000_000,
) -> ValidationRecord:
    """Validate one output file against a suite. Never raises for bad data.

    Args:
        path: The output file.
        output: The output's name (recorded).
        media_type: The output's media type; picks the reader.
        suite: The checked suite (:func:`twinprov.validation.suites.load_suite`).
        expected_sha256: The digest recorded when the output was produced; a different digest
            now fails the record without running GX. None: no comparison (digest still recorded).
        max_cells_in_memory: Largest frame (rows x columns) validated in one piece; larger
            frames are validated in chunks, or skipped if the suite needs them whole.

    Returns:
        The record, failed (with ``error``) or skipped (with ``skip_reason``) when it could not
        be validated.
    """
    run = _Run(Path(path), output, media_type, suite, expected_sha256, max_cells_in_memory)
    try:
        return run.go()
    except Exception as e:  # noqa: BLE001 - provenance must get a record, whatever happened
        return run.record(error=f"validation failed unexpectedly: {type(e).__name__}: {e}")


def _label(expectation: Mapping[str, Any]) -> str:
    cols = _named_columns(expectation)
    return f"{expectation['type']}({', '.join(cols)})" if cols else str(expectation["type"])


def _named_columns(expectation: Mapping[str, Any]) -> list[str]:
    kwargs = expectation.get("kwargs") or {}
    cols = [str(kwargs[k]) for k in _COLUMN_KEYS if isinstance(kwargs.get(k), str)]
    for k in _COLUMN_LIST_KEYS:
        if isinstance(kwargs.get(k), list):
            cols.extend(str(c) for c in kwargs[k])
    return cols


def _wanted_columns(frame: _sources.Frame, expectations: list[dict[str, Any]]) -> tuple[str, ...]:
    """The columns of ``frame`` that its expectations need (all, if any looks at the table).

    Column expectations compute on their own columns only, so the others are not read: this
    saves memory and time (GX filters and fingerprints every column of the frame it is given).
    Table-level expectations, ``expect_column_to_exist`` and any ``row_condition`` (which may
    name other columns) need the whole frame.
    """
    named: set[str] = set()
    for e in expectations:
        cols = _named_columns(e)
        if not cols or e["type"] in _ASSERTS_PRESENCE or e["kwargs"].get("row_condition"):
            return frame.columns
        named.update(cols)
    return tuple(c for c in frame.columns if c in named)


def _widen(df: pd.DataFrame, keep: set[str]) -> pd.DataFrame:
    """Widen narrow numeric columns (float16/32, int8..int32, uint8..uint32) to float64 / int64.

    GX's pandas ``column_values.between`` is vectorised only for int64 and float64 columns and
    calls a Python function per value otherwise (about 10x slower on a NetCDF float32 grid).
    The widening is exact, so no verdict changes; columns in ``keep`` (named by a dtype check)
    are left alone.
    """
    out = None
    for name in df.columns:
        dtype = df[name].dtype
        if name in keep or not isinstance(dtype, np.dtype) or dtype.itemsize >= 8:
            continue
        if dtype.kind == "f":
            target: np.dtype[Any] = np.dtype(np.float64)
        elif dtype.kind in "iu":
            target = np.dtype(np.int64)
        else:
            continue
        if out is None:
            out = df.copy(deep=False)
        out[name] = df[name].astype(target)
    return df if out is None else out


def _json_safe(value: Any) -> Any:
    """Strict JSON: non-finite floats as strings, tuples as lists, unknown objects as str."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, np.generic):  # numpy scalars GX did not convert
        return _json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _exception_message(doc: Mapping[str, Any]) -> str | None:
    info = doc.get("exception_info") or {}
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return str(v.get("exception_message"))
    return None


class _Run:
    """The state of one validate_file call."""

    def __init__(
        self,
        path: Path,
        output: str,
        media_type: str,
        suite: SuiteSpec,
        expected_sha256: str | None,
        max_cells: int,
    ) -> None:
        self.path = path
        self.output = output
        self.media_type = media_type
        self.suite = suite
        self.expected = expected_sha256.lower() if expected_sha256 else None
        self.max_cells = max(int(max_cells), 1)
        self.sha256: str | None = None
        self.timings = {"hash_s": 0.0, "read_s": 0.0, "gx_s": 0.0}
        self.frames_meta: list[dict[str, Any]] = []

    def record(
        self,
        *,
        error: str | None = None,
        skip_reason: str | None = None,
        results: dict[int, dict[str, Any]] | None = None,
    ) -> ValidationRecord:
        """The record for what is known so far."""
        ordered: list[dict[str, Any]] = []
        failed: list[str] = []
        raised: list[str] = []
        if results is not None:
            for index, expectation in enumerate(self.suite.expectations):
                doc = results.get(index)
                if doc is None:  # defensive: GX returned no result for it
                    doc = {
                        "success": False,
                        "expectation_config": dict(expectation),
                        "result": {},
                        "meta": {},
                        "exception_info": {
                            "raised_exception": True,
                            "exception_message": "Great Expectations returned no result",
                            "exception_traceback": None,
                        },
                    }
                ordered.append(doc)
                if not doc.get("success"):
                    failed.append(_label(expectation))
                    message = _exception_message(doc)
                    if message:
                        raised.append(f"{_label(expectation)}: {message}")
        if raised and error is None:
            error = "expectation(s) raised an error: " + "; ".join(raised)
        evaluated = len(ordered)
        successful = evaluated - len(failed)
        result: dict[str, Any] = {}
        if results is not None:
            result = {
                "success": evaluated > 0 and not failed,
                "results": ordered,
                "suite_name": self.suite.name,
                "suite_parameters": {},
                "statistics": {
                    "evaluated_expectations": evaluated,
                    "successful_expectations": successful,
                    "unsuccessful_expectations": len(failed),
                    "success_percent": successful / evaluated * 100 if evaluated else None,
                },
                "meta": {
                    "great_expectations_version": gx_version(),
                    "twinprov": {
                        "suite_digest": self.suite.digest,
                        "frames": self.frames_meta,
                        "timings": {k: round(v, 6) for k, v in self.timings.items()},
                    },
                },
            }
        skipped = skip_reason is not None
        return ValidationRecord(
            output=self.output,
            path=str(self.path),
            media_type=self.media_type,
            expected_sha256=self.expected,
            sha256=self.sha256,
            success=bool(result.get("success")) and error is None and not skipped,
            evaluated=evaluated,
            successful=successful,
            failed=len(failed),
            failed_expectations=tuple(failed),
            gx_version=gx_version(),
            suite=self.suite.name,
            result=_json_safe(result),
            error=error,
            skipped=skipped,
            skip_reason=skip_reason,
        )

    # -- the steps -------------------------------------------------------------------------

    def go(self) -> ValidationRecord:
        kind = _sources.kind_of(self.media_type)
        if not self.path.is_file():
            what = "is not a regular file" if self.path.exists() else "file not found"
            return self.record(error=f"cannot read {self.path}: {what}")

        probe_error: OutputReadError | None = None
        keep = True
        t0 = time.perf_counter()
        try:
            if kind == _sources.PARQUET:
                keep = _sources.probe_parquet(self.path) <= self.max_cells
            elif kind == _sources.NETCDF:
                keep = _sources.probe_netcdf(self.path) <= self.max_cells
        except OutputReadError as e:
            probe_error, keep = e, False
        t1 = time.perf_counter()
        try:
            hashed = _sources.hash_file(
                self.path,
                keep=keep and kind is not None,
                csv_cell_budget=self.max_cells if kind == _sources.CSV else None,
            )
        except OutputReadError as e:
            return self.record(error=str(e))
        t2 = time.perf_counter()
        self.timings["read_s"] = t1 - t0

        opener = {
            _sources.CSV: _sources.open_csv,
            _sources.PARQUET: _sources.open_parquet,
            _sources.NETCDF: _sources.open_netcdf,
        }.get(kind or "")
        source: _sources.Source | None = None
        open_error: OutputReadError | None = probe_error
        if opener is not None and hashed.data is not None and probe_error is None:
            # Parse the kept bytes while their digest is computed; nothing reaches GX before
            # the digest is checked, and the bytes parsed are exactly the bytes hashed.
            try:
                source = opener(self.path, hashed)
            except OutputReadError as e:
                open_error = e
        t3 = time.perf_counter()
        self.sha256 = hashed.sha256
        self.timings["read_s"] += t3 - t2
        self.timings["hash_s"] = (t2 - t1) + (time.perf_counter() - t3)

        def stop(record: ValidationRecord) -> ValidationRecord:
            if source is not None:
                source.close()
            return record

        if self.expected is not None and self.sha256 != self.expected:
            return stop(
                self.record(
                    error=f"output changed after it was produced: sha256 {self.sha256} != "
                    f"{self.expected} recorded when it was produced"
                )
            )
        if opener is None:
            supported = ", ".join(_sources.SUPPORTED_MEDIA_TYPES)
            return stop(
                self.record(
                    skip_reason=f"no reader for media type {self.media_type!r} "
                    f"(supported: {supported})"
                )
            )
        if isinstance(open_error, _sources.EmptyOutput):
            return stop(
                self.record(error=f"output table is empty: {self.path}: {open_error.reason}")
            )
        if open_error is not None:
            return stop(self.record(error=str(open_error)))
        if source is None:  # streamed: open from disk now
            t4 = time.perf_counter()
            try:
                source = opener(self.path, hashed)
            except OutputReadError as e:
                return self.record(error=str(e))
            finally:
                self.timings["read_s"] += time.perf_counter() - t4
        from_disk = hashed.data is None
        hashed.data = None  # parsed; let the bytes go
        try:
            outcome = self._validate(source)
        finally:
            source.close()
        if from_disk and not outcome.skipped and outcome.error is None:
            try:
                st = os.stat(self.path)
                if (st.st_size, st.st_mtime_ns) != hashed.stat:
                    return self.record(
                        error="output changed during validation (size or modification time "
                        "differs from when it was hashed)"
                    )
            except OSError as e:
                return self.record(error=f"cannot read {self.path}: {e}")
        return outcome

    def _validate(self, source: _sources.Source) -> ValidationRecord:
        frames = source.frames
        expectations = self.suite.expectations

        # Columns the suite names that the output lacks: fail before GX, naming them all.
        available = {c for f in frames for c in f.columns}
        missing: list[str] = []
        for e in expectations:
            if e["type"] in _ASSERTS_PRESENCE:
                continue
            missing.extend(c for c in _named_columns(e) if c not in available and c not in missing)
        if missing:
            names = ", ".join(repr(c) for c in missing)
            have = ", ".join(sorted(available)) or "none"
            noun = "column" if len(missing) == 1 else "columns"
            return self.record(
                error=f"suite {self.suite.name!r} names {noun} {names} that the output lacks "
                f"(it has: {have})"
            )

        routes = self._route(frames)
        if isinstance(routes, str):
            return self.record(error=routes)

        results: dict[int, dict[str, Any]] = {}
        for frame, indices in routes:
            outcome = self._run_frame(frame, indices, results)
            if outcome is not None:
                return outcome
        return self.record(results=results)

    def _route(self, frames: list[_sources.Frame]) -> list[tuple[_sources.Frame, list[int]]] | str:
        """Each expectation's frame: the smallest holding all the columns it names."""
        largest = max(frames, key=lambda f: (f.rows * len(f.columns), len(f.columns)))
        by_frame: dict[int, list[int]] = {}
        for index, e in enumerate(self.suite.expectations):
            cols = [c for c in _named_columns(e) if e["type"] not in _ASSERTS_PRESENCE]
            if not cols:
                target = largest
            else:
                holding = [f for f in frames if set(cols) <= set(f.columns)]
                if not holding:
                    return (
                        f"{_label(e)} names columns on different grids "
                        f"({', '.join(sorted(set(cols)))}); no frame holds them all"
                    )
                target = min(holding, key=lambda f: (f.rows, len(f.columns)))
            by_frame.setdefault(id(target), []).append(index)
        return [(f, by_frame[id(f)]) for f in frames if id(f) in by_frame]

    def _run_frame(
        self, frame: _sources.Frame, indices: list[int], results: dict[int, dict[str, Any]]
    ) -> ValidationRecord | None:
        """Validate one frame into ``results``; a record if the whole validation ends here."""
        from twinprov.validation._gx import run_expectations

        pairs = [(i, self.suite.expectations[i]) for i in indices]
        typed = {c for _, e in pairs if e["type"] in _TYPE_CHECKS for c in _named_columns(e)}
        wanted = _wanted_columns(frame, [e for _, e in pairs])
        cells = frame.rows * max(len(wanted), 1)
        meta: dict[str, Any] = {
            "frame": frame.name,
            "rows": frame.rows,
            "columns": list(frame.columns),
            "loaded_columns": list(wanted),
            "expectations": [_label(e) for _, e in pairs],
            "chunks": 1,
        }
        self.frames_meta.append(meta)

        if cells <= self.max_cells:
            t = time.perf_counter()
            df = frame.load(wanted)
            self.timings["read_s"] += time.perf_counter() - t
            if len(df) == 0:
                return self.record(error=self._empty(frame))
            t = time.perf_counter()
            results.update(run_expectations(_widen(df, typed), pairs, self.suite.name))
            self.timings["gx_s"] += time.perf_counter() - t
            return None

        whole = [e for _, e in pairs if not _combine.combinable(e["type"])]
        if whole:
            labels = ", ".join(_label(e) for e in whole)
            return self.record(
                skip_reason=f"frame {frame.name} of {self.output!r} has {cells:,} cells "
                f"(> max_cells_in_memory={self.max_cells:,}) and {labels} cannot be combined "
                "across chunks (needs the whole column at once); raise max_cells_in_memory or "
                "drop those expectations to validate it"
            )
        rows_per_chunk = max(self.max_cells // max(len(wanted), 1), 1)
        per_chunk: dict[int, list[dict[str, Any]]] = {i: [] for i in indices}
        rows = chunks = 0
        t = time.perf_counter()
        for chunk in frame.chunks(rows_per_chunk, wanted):
            self.timings["read_s"] += time.perf_counter() - t
            if len(chunk):
                t = time.perf_counter()
                found = run_expectations(_widen(chunk, typed), pairs, self.suite.name)
                for i, doc in found.items():
                    per_chunk[i].append(doc)
                self.timings["gx_s"] += time.perf_counter() - t
                rows += len(chunk)
                chunks += 1
            t = time.perf_counter()
        self.timings["read_s"] += time.perf_counter() - t
        meta.update(rows=rows, chunks=chunks)
        if rows == 0:
            return self.record(error=self._empty(frame))
        for i, e in pairs:
            if per_chunk[i]:
                results[i] = _combine.combine(e["type"], e["kwargs"], per_chunk[i])
        return None

    def _empty(self, frame: _sources.Frame) -> str:
        if frame.name == "table":
            return f"output table is empty: {self.path} has no data rows"
        return (
            f"output table is empty: the NetCDF grid {frame.name} of {self.path} has no cells "
            f"(variables: {', '.join(frame.columns)})"
        )
