"""The Airflow plugin: registration only (loaded through the ``airflow.plugins`` entry point)."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from twinprov.airflow import listener


class _AppsOnFirstUse:
    """``fastapi_apps``, made when first read: only the API server reads it, so the task processes
    that load this plugin for its listener do not import the web stack."""

    def __init__(self) -> None:
        self._apps: list[dict[str, Any]] | None = None

    def __get__(self, obj: object, owner: type | None = None) -> list[dict[str, Any]]:
        if self._apps is None:
            from twinprov.airflow.endpoint import create_app

            self._apps = [{"app": create_app(), "url_prefix": "/twinprov", "name": "twinprov"}]
        return self._apps


class TwinprovPlugin(AirflowPlugin):
    """Records W3C PROV of every twinprov workflow run and serves it in the API server."""

    name = "twinprov"
    listeners = [listener]
    # the SPARQL endpoint and the provenance pages, in `airflow api-server` under /twinprov
    fastapi_apps = _AppsOnFirstUse()
    # UI: a "Provenance" tab on every DAG run page, and a "Provenance" entry in Browse
    external_views = [
        {
            "name": "Provenance",
            "href": "twinprov/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "twinprov-run",
        },
        {
            "name": "Provenance",
            "href": "twinprov/",
            "destination": "nav",
            "category": "browse",
            "url_route": "twinprov",
        },
    ]
