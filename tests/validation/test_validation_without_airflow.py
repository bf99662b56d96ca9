"""The validation core runs with Airflow hidden, and its package exports its public API."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_without_airflow
from twinprov import validation


def test_validates_with_airflow_hidden(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,x\n2,\n", encoding="utf-8")
    proc = run_without_airflow(
        f"""
        from pathlib import Path
        from twinprov.validation import load_suite, render_html, validate_file
        suite = load_suite(
            inline=[{{"type": "expect_column_values_to_not_be_null", "kwargs": {{"column": "b"}}}}],
            name="s",
        )
        record = validate_file(Path({str(csv)!r}), output="t", media_type="text/csv",
                               suite=suite, expected_sha256=None)
        render_html([record], title="t")
        print("ok", record.failed_expectations)
        """
    )
    assert proc.stdout.strip() == "ok ('expect_column_values_to_not_be_null(b)',)"
    assert "Calculating Metrics" not in proc.stderr  # GX progress bars are off


def test_package_exports() -> None:
    for name in validation.__all__:
        assert getattr(validation, name) is not None
    assert validation.validate_file.__module__ == "twinprov.validation.run"
