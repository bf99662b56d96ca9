"""Every module of the core, the writers and the application imports, and builds provenance,
with Airflow hidden."""

from __future__ import annotations

from tests.conftest import run_without_airflow


def test_core_imports_without_airflow() -> None:
    out = run_without_airflow(
        """
        import pkgutil, importlib
        from twinprov import app, provenance, ro_crates, validation
        for pkg in (provenance, validation, ro_crates, app):  # every module below the edges
            for mod in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(mod.name)
        from twinprov.provenance.ids import Ids
        from twinprov.provenance.ledger import TaskEvent
        from twinprov.provenance.prov_model import RunFacts, build_document
        doc = build_document(Ids(), RunFacts("d", "r", {}, "success"),
                             [TaskEvent("d", "r", "t", -1, 1, "success", {})])
        print("ok", len(doc.get_records()))
        """
    )
    assert out.stdout.startswith("ok")
