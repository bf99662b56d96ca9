"""twinprov's provenance core: the run record, workflow specs, the ledger, identifiers, settings,
the graph store and the PROV writer. Imports no Airflow and nothing above it."""
