"""Graded verdicts per output on real NetCDF, CSV and Parquet files, and the likely cause of a
first divergence from two recorded environments (no Airflow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from twinprov.app import rerun
from twinprov.app.compare import compare_run, grade_numeric
from twinprov.app.rerun import RecordedOutput, RecordedRun
from twinprov.provenance.env_facts import comparable_facts
from twinprov.provenance.hashing import sha256_file
from twinprov.provenance.spec import parse_spec

NC = "application/x-netcdf"


def _nc(path: Path, values: np.ndarray, **extra: np.ndarray) -> Path:
    data = {"v": (("y", "x"), values), **{k: (("y", "x"), a) for k, a in extra.items()}}
    xr.Dataset(data, coords={"y": [0, 1, 2], "x": [0, 1, 2, 3]}).to_netcdf(path)
    return path


def test_netcdf_grades(tmp_path: Path) -> None:
    base = np.arange(12.0).reshape(3, 4) + 1.0
    a = _nc(tmp_path / "a.nc", base)
    tiny = base.copy()
    tiny[0, 0] += 1e-9
    b = _nc(tmp_path / "b.nc", tiny)
    grade, summary = grade_numeric(a, b, NC, 0.0, 1e-6) or ("", {})
    assert grade == "within_tolerance"
    assert summary["differing_cells"] == 1 and summary["max_abs_diff"] == pytest.approx(1e-9)

    large = base.copy()
    large[1, :] *= 1.5  # 4 of 12 values (and none of the 7 coordinates)
    c = _nc(tmp_path / "c.nc", large)
    grade, summary = grade_numeric(a, c, NC) or ("", {})
    assert grade == "values_differ"
    assert summary["cells"] == 12 + 7 and summary["differing_cells"] == 4
    assert summary["share_differing"] == pytest.approx(4 / 19, abs=1e-6)
    assert summary["max_abs_diff"] == pytest.approx(4.0) and summary["max_rel_diff"] == 0.5

    d = _nc(tmp_path / "d.nc", base, w=base)
    grade, summary = grade_numeric(a, d, NC) or ("", {})
    assert grade == "structure_differs" and summary["detail"] == "variables only in the rerun: w"

    e = tmp_path / "e.nc"
    xr.Dataset({"v": (("y", "x"), base)}, coords={"y": [0, 1, 2], "x": [0, 1, 2, 3]}).assign_attrs(
        history="rerun"
    ).to_netcdf(e)
    assert (grade_numeric(a, e, NC) or ("",))[0] == "values_equal"
    assert grade_numeric(a, e, "image/png") is None


def test_csv_and_parquet_grades(tmp_path: Path) -> None:
    frame = pd.DataFrame({"station": ["a", "b", "c", "d"], "t": [1.0, 2.0, 3.0, 4.0]})
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    frame.to_csv(a, index=False)
    frame.assign(t=[1.0, 2.0, 3.0, 4.4]).to_csv(b, index=False)
    frame.assign(extra=1).to_csv(c, index=False)
    grade, summary = grade_numeric(a, b, "text/csv") or ("", {})
    assert grade == "values_differ" and summary["share_differing"] == pytest.approx(1 / 8)
    assert summary["max_rel_diff"] == pytest.approx(0.1)
    assert (grade_numeric(a, b, "text/csv", 0.2, 0.0) or ("",))[0] == "within_tolerance"
    grade, summary = grade_numeric(a, c, "text/csv") or ("", {})
    assert grade == "structure_differs" and "extra" in summary["detail"]
    pa, pb = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame.to_parquet(pa)
    frame.iloc[:3].to_parquet(pb)
    grade, summary = grade_numeric(pa, pb, "application/vnd.apache.parquet") or ("", {})
    assert grade == "structure_differs" and summary["detail"] == "4 rows → 3 rows"


SPEC = """
name: two
steps:
  - id: prep
    command: [python, prep.py]
    outputs: [{name: grid, path: grid.nc, media_type: application/x-netcdf}]
  - id: spi
    command: [python, spi.py]
    inputs: [{name: grid, from: prep.grid}]
    outputs: [{name: spi, path: spi.nc, media_type: application/x-netcdf}]
"""


def _facts(numpy: str) -> dict[str, object]:
    return comparable_facts(
        {
            "target": "local",
            "environment": {"kind": "python", "packages": [f"numpy=={numpy}", "xarray==1"]},
        }
    )


def test_compare_run_names_the_package_on_the_first_divergent_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = np.arange(12.0).reshape(3, 4)
    grid = _nc(tmp_path / "grid.nc", base)
    orig_spi = _nc(tmp_path / "spi-a.nc", base * 2)
    new_spi = _nc(tmp_path / "spi-b.nc", base * 2 + 0.5)
    sha = {p: sha256_file(p)[0] for p in (grid, orig_spi, new_spi)}
    original = RecordedRun(
        crate=tmp_path,
        dag_id="two",
        run_id="r1",
        run_iri="urn:twinprov:run/two/r1",
        spec_file=tmp_path / "two.yaml",
        spec_sha256="x",
        params={},
        outputs={
            ("prep", "grid"): RecordedOutput("prep", "grid", sha[grid], NC, grid),
            ("spi", "spi"): RecordedOutput("spi", "spi", sha[orig_spi], NC, orig_spi),
        },
        step_inputs={"prep": {}, "spi": {"grid": sha[grid]}},
        facts={"prep": _facts("2.1.3"), "spi": _facts("2.1.3")},
    )
    spec = parse_spec(SPEC)
    outputs = {("prep", "grid"): (sha[grid], grid), ("spi", "spi"): (sha[new_spi], new_spi)}
    inputs = {"prep": {}, "spi": {"grid": sha[grid]}}
    rerun_facts = {"prep": _facts("2.1.3"), "spi": _facts("2.2.0")}
    v = compare_run(original, spec, outputs, inputs, rerun_state="success", rerun_facts=rerun_facts)
    assert v.status == "differs" and v.first_divergent_step == "spi" and v.likely_cause == "spi"
    assert [c.text for c in v.changes] == ["spi: numpy 2.1.3 → 2.2.0"]
    spi = next(o for o in v.outputs if o.step == "spi")
    assert spi.grade == "values_differ" and spi.summary["max_abs_diff"] == pytest.approx(0.5)

    # the same rerun with the comparison switched off: bytes only
    monkeypatch.setenv(rerun.EXPLAIN_ENV, "off")
    plain = compare_run(
        original, spec, outputs, inputs, rerun_state="success", rerun_facts=rerun_facts
    )
    assert plain.changes == () and plain.likely_cause is None
    assert next(o for o in plain.outputs if o.step == "spi").grade == "bytes_differ"

    # the same environment everywhere: the divergence is unexplained, and the verdict says so
    monkeypatch.delenv(rerun.EXPLAIN_ENV)
    same = compare_run(
        original,
        spec,
        outputs,
        inputs,
        rerun_state="success",
        rerun_facts={"prep": _facts("2.1.3"), "spi": _facts("2.1.3")},
    )
    assert same.likely_cause is None and any("non-determinism" in n for n in same.notes)
