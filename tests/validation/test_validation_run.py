"""validate_file on real files with real GX: verdicts, the sha256 binding, and every failure mode.

A record is always returned; these tests check that each problem becomes the right failed (or
skipped) record, and that chunked validation reaches the same verdict as validation in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.validation.conftest import (
    CSV,
    NETCDF,
    PARQUET,
    TableWriter,
    sha256_of,
    spi_dataset,
    suite_of,
    table,
    write_csv,
    write_nc,
    write_parquet,
)
from twinprov.validation import _gx
from twinprov.validation.run import ValidationRecord, gx_version, validate_file
from twinprov.validation.suites import SuiteSpec


def _result_of(record: ValidationRecord, label_type: str, column: str) -> dict[str, Any]:
    for doc in record.result["results"]:
        config = doc["expectation_config"]
        if config["type"] == label_type and config["kwargs"].get("column") == column:
            return dict(doc)
    raise AssertionError(f"no result for {label_type}({column})")


# --- verdicts ---------------------------------------------------------------------------------


def test_clean_netcdf_passes_and_is_bound_to_its_sha256(
    tmp_path: Path, spi_suite: SuiteSpec
) -> None:
    path = write_nc(spi_dataset(), tmp_path / "spi.nc")
    digest = sha256_of(path)
    record = validate_file(
        path, output="spi", media_type=NETCDF, suite=spi_suite, expected_sha256=digest
    )
    assert record.success, record.error
    assert (record.sha256, record.expected_sha256) == (digest, digest)
    assert (record.evaluated, record.successful, record.failed) == (4, 4, 0)
    assert record.failed_expectations == ()
    assert record.error is None and not record.skipped
    assert record.gx_version == gx_version() and record.gx_version.startswith("1.")
    assert record.suite == "spi"
    assert record.result["success"] is True
    assert [d["expectation_config"]["type"] for d in record.result["results"]] == [
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_between",
    ]  # suite order, although GX returns them in its own order
    json.dumps(record.to_dict(), allow_nan=False)  # strict JSON for the ledger


def test_nan_cells_fail_naming_the_not_null_expectation(
    tmp_path: Path, spi_suite: SuiteSpec
) -> None:
    path = write_nc(spi_dataset(nan_cells=17), tmp_path / "spi.nc")
    record = validate_file(
        path, output="spi", media_type=NETCDF, suite=spi_suite, expected_sha256=sha256_of(path)
    )
    assert not record.success
    assert record.failed_expectations == ("expect_column_values_to_not_be_null(spi)",)
    assert (record.evaluated, record.successful, record.failed) == (4, 3, 1)
    assert record.error is None
    not_null = _result_of(record, "expect_column_values_to_not_be_null", "spi")
    assert not_null["result"]["unexpected_count"] == 17
    assert not_null["result"]["element_count"] == 24 * 6 * 8
    json.dumps(record.to_dict(), allow_nan=False)


def test_coordinate_expectations_run_on_the_coordinate_itself(tmp_path: Path) -> None:
    # 'lat' has 6 distinct values; broadcast over the (time, lat, lon) grid it repeats 192
    # times, so uniqueness only holds if the check runs on the coordinate's own values.
    path = write_nc(spi_dataset(), tmp_path / "spi.nc")
    suite = suite_of(
        ("expect_column_values_to_be_unique", {"column": "lat"}),
        ("expect_column_values_to_be_increasing", {"column": "time", "strictly": True}),
        (
            "expect_column_pair_values_a_to_be_greater_than_b",
            {"column_A": "lat", "column_B": "spi"},
        ),
    )
    record = validate_file(path, output="spi", media_type=NETCDF, suite=suite, expected_sha256=None)
    assert record.success, (record.failed_expectations, record.error)
    frames = {f["frame"]: f for f in record.result["meta"]["twinprov"]["frames"]}
    assert frames["(lat)"]["rows"] == 6
    assert frames["(time)"]["rows"] == 24
    assert frames["(time, lat, lon)"]["loaded_columns"] == ["lat", "spi"]
    assert frames["(time, lat, lon)"]["rows"] == 24 * 6 * 8


@pytest.mark.parametrize(("writer", "media_type"), [(write_csv, CSV), (write_parquet, PARQUET)])
def test_tables_pass_and_fail(tmp_path: Path, writer: TableWriter, media_type: str) -> None:
    df = pd.DataFrame({"region": ["a", "b", "c"], "share": [0.1, 0.5, np.nan]})
    path = writer(df, tmp_path / "t")
    ok = suite_of(
        ("expect_column_values_to_be_between", {"column": "share", "min_value": 0, "max_value": 1}),
        (
            "expect_column_distinct_values_to_equal_set",
            {"column": "region", "value_set": list("abc")},
        ),
        ("expect_table_row_count_to_equal", {"value": 3}),
    )
    record = validate_file(path, output="t", media_type=media_type, suite=ok, expected_sha256=None)
    assert record.success, record.error
    bad = suite_of(("expect_column_values_to_not_be_null", {"column": "share"}))
    record = validate_file(path, output="t", media_type=media_type, suite=bad, expected_sha256=None)
    assert record.failed_expectations == ("expect_column_values_to_not_be_null(share)",)


def test_an_expectation_that_raises_fails_the_record_with_its_message(tmp_path: Path) -> None:
    path = write_csv(pd.DataFrame({"name": ["x", "y"]}), tmp_path / "t.csv")
    suite = suite_of(
        ("expect_column_values_to_be_between", {"column": "name", "min_value": 0, "max_value": 1})
    )
    record = validate_file(path, output="t", media_type=CSV, suite=suite, expected_sha256=None)
    assert not record.success
    assert record.failed_expectations == ("expect_column_values_to_be_between(name)",)
    assert record.error is not None
    assert record.error.startswith("expectation(s) raised an error: ")
    assert "expect_column_values_to_be_between(name)" in record.error


def test_the_documented_gx_path_gives_the_same_results(
    tmp_path: Path, spi_suite: SuiteSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_nc(spi_dataset(nan_cells=5), tmp_path / "spi.nc")

    def run() -> list[Any]:
        r = validate_file(
            path, output="s", media_type=NETCDF, suite=spi_suite, expected_sha256=None
        )
        return [(d["success"], d["result"]) for d in r.result["results"]]

    direct = run()
    monkeypatch.setattr(_gx, "USE_VALIDATOR_DIRECTLY", False)
    assert run() == direct


# --- the sha256 binding ------------------------------------------------------------------------


def test_checksum_mismatch_fails_without_running_gx(tmp_path: Path, spi_suite: SuiteSpec) -> None:
    path = write_nc(spi_dataset(), tmp_path / "spi.nc")
    produced = sha256_of(path)
    write_nc(spi_dataset(seed=1), tmp_path / "other.nc").replace(path)  # changed afterwards
    record = validate_file(
        path, output="spi", media_type=NETCDF, suite=spi_suite, expected_sha256=produced
    )
    assert not record.success and not record.skipped
    assert record.expected_sha256 == produced
    assert record.sha256 == sha256_of(path) != produced
    assert record.error is not None
    assert record.error.startswith("output changed after it was produced: sha256 ")
    assert produced in record.error and record.sha256 in record.error
    assert (record.evaluated, record.result) == (0, {})  # GX did not run


def test_a_changed_file_is_caught_even_when_its_data_is_fine(tmp_path: Path) -> None:
    path = write_csv(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.csv")
    produced = sha256_of(path)
    path.write_text("a\n1\n3\n", encoding="utf-8")
    suite = suite_of(("expect_column_values_to_not_be_null", {"column": "a"}))
    record = validate_file(path, output="t", media_type=CSV, suite=suite, expected_sha256=produced)
    assert not record.success
    assert record.error is not None and "output changed after it was produced" in record.error


# --- failure modes ----------------------------------------------------------------------------


def test_missing_columns_are_all_named_before_gx(tmp_path: Path) -> None:
    path = write_nc(spi_dataset(), tmp_path / "spi.nc")
    suite = suite_of(
        ("expect_column_values_to_not_be_null", {"column": "spi"}),
        ("expect_column_values_to_not_be_null", {"column": "precip"}),
        ("expect_column_pair_values_to_be_equal", {"column_A": "spi", "column_B": "spei"}),
    )
    record = validate_file(path, output="spi", media_type=NETCDF, suite=suite, expected_sha256=None)
    assert not record.success
    assert record.error is not None
    assert "names columns 'precip', 'spei' that the output lacks" in record.error
    assert "(it has: lat, lon, spi, time)" in record.error
    assert record.evaluated == 0 and record.result == {}


def test_expect_column_to_exist_is_left_to_gx(tmp_path: Path) -> None:
    path = write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    suite = suite_of(("expect_column_to_exist", {"column": "b"}))
    record = validate_file(path, output="t", media_type=CSV, suite=suite, expected_sha256=None)
    assert record.failed_expectations == ("expect_column_to_exist(b)",)
    assert record.error is None


@pytest.mark.parametrize("media_type", [CSV, PARQUET])
def test_empty_table(tmp_path: Path, media_type: str) -> None:
    empty = pd.DataFrame({"a": pd.Series([], dtype="float64"), "b": pd.Series([], dtype="str")})
    writer = write_csv if media_type == CSV else write_parquet
    path = writer(empty, tmp_path / "empty")
    suite = suite_of(("expect_column_values_to_not_be_null", {"column": "a"}))
    record = validate_file(
        path, output="e", media_type=media_type, suite=suite, expected_sha256=None
    )
    assert not record.success
    assert record.error is not None and record.error.startswith("output table is empty")


def test_empty_file_and_empty_grid(tmp_path: Path) -> None:
    blank = tmp_path / "blank.csv"
    blank.write_bytes(b"")
    suite = suite_of(("expect_column_values_to_not_be_null", {"column": "spi"}))
    record = validate_file(blank, output="b", media_type=CSV, suite=suite, expected_sha256=None)
    assert record.error == f"output table is empty: {blank}: the file has no header and no rows"
    grid = write_nc(spi_dataset(n_time=0), tmp_path / "empty.nc")
    record = validate_file(grid, output="g", media_type=NETCDF, suite=suite, expected_sha256=None)
    assert record.error is not None and record.error.startswith("output table is empty")
    assert "(time, lat, lon)" in record.error


def test_truncated_netcdf_names_the_file(tmp_path: Path, spi_suite: SuiteSpec) -> None:
    path = write_nc(spi_dataset(n_time=120), tmp_path / "spi.nc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut by a crashed writer or a full disk
    record = validate_file(
        path, output="spi", media_type=NETCDF, suite=spi_suite, expected_sha256=sha256_of(path)
    )
    assert not record.success
    assert record.error is not None
    assert record.error.startswith(f"cannot read {path}: not a readable NetCDF file")
    assert record.sha256 == sha256_of(path)


def test_truncated_parquet_and_garbage_csv(tmp_path: Path) -> None:
    path = write_parquet(table(200), tmp_path / "t.parquet")
    path.write_bytes(path.read_bytes()[:300])
    suite = suite_of(("expect_column_values_to_not_be_null", {"column": "id"}))
    record = validate_file(path, output="t", media_type=PARQUET, suite=suite, expected_sha256=None)
    assert record.error is not None and record.error.startswith(f"cannot read {path}")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 20)
    record = validate_file(binary, output="b", media_type=CSV, suite=suite, expected_sha256=None)
    assert not record.success and record.error is not None


def test_missing_file_and_unknown_media_type(tmp_path: Path, spi_suite: SuiteSpec) -> None:
    gone = tmp_path / "gone.nc"
    record = validate_file(
        gone, output="g", media_type=NETCDF, suite=spi_suite, expected_sha256=None
    )
    assert (record.success, record.sha256) == (False, None)
    assert record.error == f"cannot read {gone}: file not found"

    tif = tmp_path / "map.tif"
    tif.write_bytes(b"II*\x00 not really a tiff")
    record = validate_file(
        tif, output="m", media_type="image/tiff", suite=spi_suite, expected_sha256=None
    )
    assert record.skipped and not record.success
    assert (
        record.skip_reason is not None
        and "no reader for media type 'image/tiff'" in record.skip_reason
    )
    assert record.sha256 == sha256_of(tif)  # still bound to the bytes it could not read


# --- chunked validation ----------------------------------------------------------------------

ROW_LOCAL_SUITE = (
    ("expect_column_values_to_not_be_null", {"column": "value"}),
    ("expect_column_values_to_be_between", {"column": "value", "min_value": 0, "max_value": 1}),
    # 5 of 993 non-null values are out of range: passes with mostly=0.99 over the whole table,
    # while a 100-row chunk holding one of them (1%) might not -- the combination must use sums.
    (
        "expect_column_values_to_be_between",
        {"column": "value", "min_value": 0, "max_value": 1, "mostly": 0.99},
    ),
    ("expect_column_values_to_be_in_set", {"column": "cat", "value_set": ["a", "b", "c"]}),
    ("expect_column_values_to_match_regex", {"column": "code", "regex": r"^R\d{4}$"}),
    (
        "expect_column_pair_values_a_to_be_greater_than_b",
        {"column_A": "value", "column_B": "low", "ignore_row_if": "either_value_is_missing"},
    ),
    ("expect_table_columns_to_match_set", {"column_set": ["id", "value", "cat", "code", "low"]}),
)


def _counts(record: ValidationRecord) -> list[tuple[Any, ...]]:
    out = []
    for doc in record.result["results"]:
        r = doc["result"]
        out.append(
            (
                doc["success"],
                r.get("element_count"),
                r.get("unexpected_count"),
                r.get("missing_count"),
                r.get("observed_value"),
            )
        )
    return out


@pytest.mark.parametrize(("writer", "media_type"), [(write_csv, CSV), (write_parquet, PARQUET)])
def test_chunked_tables_reach_the_in_memory_verdict(
    tmp_path: Path, writer: TableWriter, media_type: str
) -> None:
    path = writer(table(1000), tmp_path / "t")
    suite = suite_of(*ROW_LOCAL_SUITE, name="rows")
    whole = validate_file(
        path, output="t", media_type=media_type, suite=suite, expected_sha256=None
    )
    chunked = validate_file(
        path,
        output="t",
        media_type=media_type,
        suite=suite,
        expected_sha256=None,
        max_cells_in_memory=500,
    )
    frames = chunked.result["meta"]["twinprov"]["frames"]
    assert frames[0]["chunks"] == 10  # 5 columns -> 100 rows a chunk
    assert whole.result["meta"]["twinprov"]["frames"][0]["chunks"] == 1
    assert not whole.success
    assert (
        chunked.failed_expectations
        == whole.failed_expectations
        == (
            "expect_column_values_to_not_be_null(value)",
            "expect_column_values_to_be_between(value)",
            "expect_column_values_to_be_in_set(cat)",
            "expect_column_values_to_match_regex(code)",
        )
    )
    assert _counts(chunked) == _counts(whole)
    mostly = chunked.result["results"][2]
    assert mostly["success"] and mostly["result"]["unexpected_count"] == 5
    # ...although some 100-row chunk on its own fails mostly=0.99 (so "fails if any chunk
    # fails" would be wrong for mostly < 1):
    values = table(1000)["value"]
    chunk_rates = [
        (part > 1).sum() / part.notna().sum()
        for part in (values[i : i + 100] for i in range(0, 1000, 100))
    ]
    assert max(chunk_rates) > 0.01
    assert mostly["meta"]["twinprov"] == {"chunks": 10, "combined": True}
    # unexpected rows are numbered in the whole table, not in their chunk
    in_set = chunked.result["results"][3]["result"]
    assert sorted(in_set["partial_unexpected_index_list"]) == sorted(
        whole.result["results"][3]["result"]["partial_unexpected_index_list"]
    )


def test_chunked_netcdf_reaches_the_in_memory_verdict(tmp_path: Path, spi_suite: SuiteSpec) -> None:
    path = write_nc(spi_dataset(n_time=40, nan_cells=30), tmp_path / "spi.nc")
    whole = validate_file(
        path, output="s", media_type=NETCDF, suite=spi_suite, expected_sha256=None
    )
    chunked = validate_file(
        path,
        output="s",
        media_type=NETCDF,
        suite=spi_suite,
        expected_sha256=None,
        max_cells_in_memory=200,  # 48 cells a time slice -> 4 slices a chunk
    )
    frames = {f["frame"]: f for f in chunked.result["meta"]["twinprov"]["frames"]}
    assert frames["(time, lat, lon)"]["chunks"] == 10
    assert (
        chunked.failed_expectations
        == whole.failed_expectations
        == ("expect_column_values_to_not_be_null(spi)",)
    )
    assert _counts(chunked) == _counts(whole)


def test_chunks_keep_text_columns_text(tmp_path: Path) -> None:
    # The first 100 codes are digits only, later ones are not: pandas alone would read the first
    # chunk as integers and the regex check would raise on it.
    codes = [f"{i:05d}" for i in range(100)] + [f"X{i:04d}" for i in range(100)]
    path = write_csv(pd.DataFrame({"code": codes, "empty": [None] * 200}), tmp_path / "c.csv")
    suite = suite_of(
        ("expect_column_values_to_match_regex", {"column": "code", "regex": r"^[0-9X]\d{4}$"}),
        ("expect_column_values_to_match_regex", {"column": "empty", "regex": "^x$"}),
    )
    whole = validate_file(path, output="c", media_type=CSV, suite=suite, expected_sha256=None)
    chunked = validate_file(
        path, output="c", media_type=CSV, suite=suite, expected_sha256=None, max_cells_in_memory=50
    )
    assert whole.success, whole.error
    assert chunked.success, chunked.error


def test_checks_that_need_the_whole_column_skip_a_large_output(tmp_path: Path) -> None:
    path = write_csv(table(1000), tmp_path / "t.csv")
    suite = suite_of(
        ("expect_column_values_to_not_be_null", {"column": "value"}),
        ("expect_column_values_to_be_unique", {"column": "id"}),
        ("expect_table_row_count_to_equal", {"value": 1000}),
    )
    in_memory = validate_file(path, output="t", media_type=CSV, suite=suite, expected_sha256=None)
    assert in_memory.failed_expectations == ("expect_column_values_to_not_be_null(value)",)
    record = validate_file(
        path, output="t", media_type=CSV, suite=suite, expected_sha256=None, max_cells_in_memory=500
    )
    assert record.skipped and not record.success
    assert record.skip_reason is not None
    assert "expect_column_values_to_be_unique(id)" in record.skip_reason
    assert "expect_table_row_count_to_equal" in record.skip_reason
    assert "max_cells_in_memory=500" in record.skip_reason
    assert record.sha256 == sha256_of(path)


# --- records ----------------------------------------------------------------------------------


def test_gx_keeps_no_reference_to_the_validated_frame() -> None:
    import gc
    import weakref

    frame = pd.DataFrame({"x": np.arange(1000.0)})
    ref = weakref.ref(frame)
    results = _gx.run_expectations(
        frame,
        [
            (
                0,
                {
                    "type": "expect_column_values_to_not_be_null",
                    "kwargs": {"column": "x"},
                    "meta": {},
                },
            )
        ],
        "s",
    )
    assert results[0]["success"] and results[0]["expectation_config"]["meta"] == {}
    del frame
    gc.collect()
    assert ref() is None, "a large output would stay in memory after validation"


def test_records_round_trip_through_json(tmp_path: Path, spi_suite: SuiteSpec) -> None:
    path = write_nc(spi_dataset(nan_cells=3), tmp_path / "spi.nc")
    record = validate_file(
        path, output="spi", media_type=NETCDF, suite=spi_suite, expected_sha256=None
    )
    text = json.dumps(record.to_dict(), allow_nan=False)
    again = ValidationRecord.from_dict(json.loads(text))
    assert again == record
    assert isinstance(again.failed_expectations, tuple)
    with pytest.raises(KeyError, match="sha256"):
        ValidationRecord.from_dict({k: v for k, v in record.to_dict().items() if k != "sha256"})


def test_bad_data_never_raises(tmp_path: Path, spi_suite: SuiteSpec) -> None:
    directory = tmp_path / "a-directory.nc"
    directory.mkdir()
    record = validate_file(
        directory, output="d", media_type=NETCDF, suite=spi_suite, expected_sha256=None
    )
    assert record.error == f"cannot read {directory}: is not a regular file"
    ds = xr.Dataset({"spi": ("x", np.array(["a", "b"], dtype=object))})
    path = tmp_path / "strings.nc"
    ds.to_netcdf(path, engine="netcdf4")
    record = validate_file(
        path, output="s", media_type=NETCDF, suite=spi_suite, expected_sha256=None
    )
    assert not record.success and record.error is not None
