"""twinprov's Airflow plugin (installed as ``twinprov.airflow``): registration and the listener."""
