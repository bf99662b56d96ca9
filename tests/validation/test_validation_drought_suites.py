"""The drought demo's suites on the real outputs of its step programs (fault none and nan)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from twinprov.validation.run import ValidationRecord, validate_file
from twinprov.validation.suites import load_suite

DROUGHT = Path(__file__).resolve().parents[2] / "dags" / "workflows" / "drought"
OUTPUTS = {  # output name -> (file, media type, suite)
    "precipitation": ("precip.nc", "application/x-netcdf", "precipitation"),
    "spi": ("spi.nc", "application/x-netcdf", "spi"),
    "hazard_map": ("hazard_map.nc", "application/x-netcdf", "hazard_map"),
    "summary": ("region_summary.csv", "text/csv", "region_summary"),
}


def _run(*args: str | Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The workflow's steps run as the spec runs them, once per fault, in parallel."""
    root = tmp_path_factory.mktemp("drought")
    _wait(
        _run(
            DROUGHT / "generate_precip.py",
            "--seed",
            "42",
            "--region",
            "alps",
            "--out",
            "precip.nc",
            cwd=root,
        )
    )
    dirs = {fault: root / fault for fault in ("none", "nan")}
    for d in dirs.values():
        d.mkdir()
        (d / "precip.nc").symlink_to(root / "precip.nc")
    spi = [
        _run(
            DROUGHT / "compute_spi.py",
            "--precip",
            "precip.nc",
            "--scale",
            "3",
            "--fault",
            fault,
            "--out",
            "spi.nc",
            cwd=d,
        )
        for fault, d in dirs.items()
    ]
    for p in spi:
        _wait(p)
    hazard = [
        _run(
            DROUGHT / "classify_hazard.py",
            "--spi",
            "spi.nc",
            "--precip",
            "precip.nc",
            "--fault",
            fault,
            "--hazard-out",
            "hazard_map.nc",
            "--summary-out",
            "region_summary.csv",
            cwd=d,
        )
        for fault, d in dirs.items()
    ]
    for p in hazard:
        _wait(p)
    return dirs


def _validate(run_dir: Path) -> dict[str, ValidationRecord]:
    records = {}
    for output, (file, media_type, suite_name) in OUTPUTS.items():
        suite = load_suite(
            suite_file=DROUGHT / "suites" / "alps" / f"{suite_name}.json", name=suite_name
        )
        records[output] = validate_file(
            run_dir / file, output=output, media_type=media_type, suite=suite, expected_sha256=None
        )
    return records


def test_clean_run_passes_every_suite(runs: dict[str, Path]) -> None:
    records = _validate(runs["none"])
    for output, record in records.items():
        assert record.success, (output, record.failed_expectations, record.error)
        assert record.evaluated == record.successful > 0


def test_nan_fault_fails_spi_hazard_map_and_summary(runs: dict[str, Path]) -> None:
    records = _validate(runs["nan"])
    assert records["precipitation"].success  # the fault is injected after it
    assert records["spi"].failed_expectations == ("expect_column_values_to_not_be_null(spi)",)
    spi_null = records["spi"].result["results"][0]["result"]
    assert spi_null["unexpected_count"] == 486 * 12  # the blanked block: 486 cells x 12 months
    assert records["hazard_map"].failed_expectations == (
        "expect_column_values_to_not_be_null(hazard_class)",
    )
    assert records["summary"].failed_expectations == (
        "expect_column_values_to_not_be_null(mean_spi)",
    )
    for record in records.values():
        assert record.error is None
