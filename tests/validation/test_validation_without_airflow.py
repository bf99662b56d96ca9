"""The validation core runs with Airflow hidden, and its package exports its public API."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import validation

REPO = Path(__file__).resolve().parents[2]


def test_validates_with_airflow_hidden(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n1,x\n2,\n", encoding="utf-8")
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        from pathlib import Path

        class HideAirflow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ModuleNotFoundError(f"airflow is hidden ({{name}})")
                return None

        sys.meta_path.insert(0, HideAirflow())
        from validation import load_suite, render_html, validate_file
        suite = load_suite(
            inline=[{{"type": "expect_column_values_to_not_be_null", "kwargs": {{"column": "b"}}}}],
            name="s",
        )
        record = validate_file(Path({str(csv)!r}), output="t", media_type="text/csv",
                               suite=suite, expected_sha256=None)
        render_html([record], title="t")
        assert "airflow" not in {{m.split(".")[0] for m in sys.modules}}, "airflow got imported"
        print("ok", record.failed_expectations)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok ('expect_column_values_to_not_be_null(b)',)"
    assert "Calculating Metrics" not in proc.stderr  # GX progress bars are off


def test_package_exports() -> None:
    for name in validation.__all__:
        assert getattr(validation, name) is not None
    assert validation.validate_file.__module__ == "validation.run"
