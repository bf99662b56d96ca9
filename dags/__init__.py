"""twinprov's Airflow DAG side (installed as ``twinprov.dags``): the spec → DAG factory, the
operators, and the workflow specs of the demo. Thin: the real work happens in ``provenance``."""
