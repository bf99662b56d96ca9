"""The application layer: what twinprov does with a recorded run — publish it (a list of named
stages), catch the graph store up, rerun it and compare, summarise it. Above the writers
(PROV, crate, STAC, validation), below the edges (CLI, Airflow plugin, DAG operators)."""
