"""Every module of the core packages imports, and builds provenance, with Airflow hidden."""

from __future__ import annotations

from tests.conftest import run_without_airflow


def test_core_imports_without_airflow() -> None:
    out = run_without_airflow(
        """
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
        print("ok", len(doc.get_records()))
        """
    )
    assert out.stdout.startswith("ok")
