"""The Airflow plugin: registration only (loaded through the ``airflow.plugins`` entry point)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from twinprov_airflow import listener


class TwinprovPlugin(AirflowPlugin):
    """Records W3C PROV of every twinprov workflow run."""

    name = "twinprov"
    listeners = [listener]
