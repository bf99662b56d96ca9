"""The crate builder imports with Airflow hidden (the core must not need it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def test_ro_crates_import_without_airflow() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class HideAirflow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ModuleNotFoundError(f"airflow is hidden ({name})")
                return None

        sys.meta_path.insert(0, HideAirflow())
        import ro_crates.assemble, ro_crates.conformance, ro_crates.crate, ro_crates.model
        import ro_crates.hashing
        assert "airflow" not in {m.split(".")[0] for m in sys.modules}, "airflow got imported"
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
