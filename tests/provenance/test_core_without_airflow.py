"""Every module of the core packages imports, and builds provenance, with Airflow hidden."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO


def test_core_imports_without_airflow() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class HideAirflow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "airflow" or name.startswith("airflow."):
                    raise ModuleNotFoundError(f"airflow is hidden ({name})")
                return None

        sys.meta_path.insert(0, HideAirflow())
        import pkgutil, importlib
        import provenance, validation, ro_crates
        for pkg in (provenance, validation, ro_crates):  # every module of the core
            for mod in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(mod.name)
        from provenance.ids import Ids
        from provenance.ledger import TaskEvent
        from provenance.prov_model import RunFacts, build_document
        doc = build_document(Ids(), RunFacts("d", "r", {}, "success"),
                             [TaskEvent("d", "r", "t", -1, 1, "success", {})])
        assert "airflow" not in {m.split(".")[0] for m in sys.modules}, "airflow got imported"
        print("ok", len(doc.get_records()))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")
