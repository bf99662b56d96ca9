"""twinprov's provenance core: workflow specs, the ledger, PROV documents, the graph store and
the command line. Imports no Airflow."""

__version__ = "0.1.0"
