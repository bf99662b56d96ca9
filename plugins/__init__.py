"""twinprov's Airflow plugin (installed as ``twinprov_airflow``): registration and the listener."""
