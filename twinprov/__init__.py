"""twinprov: W3C PROV provenance, checks and reproducible reruns for digital-twin workflows on
Apache Airflow.

The package is layered (lowest first; each imports only from those below it, enforced by
import-linter, see ``[tool.importlinter]`` in pyproject.toml):

* :mod:`twinprov.provenance` — the core: typed run record, ledger, identifiers, specs, settings,
  graph store, the PROV writer;
* :mod:`twinprov.validation`, :mod:`twinprov.ro_crates` — writers: Great Expectations checks,
  RO-Crate, STAC, MLflow links;
* :mod:`twinprov.app` — the application: publication stages, catch-up, reruns, run summaries;
* :mod:`twinprov.airflow`, :mod:`twinprov.dags`, :mod:`twinprov.cli` — the edges: Airflow plugin
  and listener, DAG factory and operators, the command line.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("twinprov")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
