"""The Airflow plugin: registration only (loaded through the ``airflow.plugins`` entry point)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

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


def _prov_icon(stroke: str) -> str:
    """The tab icon: PROV's entity (ellipse), activity (rectangle) and agent (house) in their
    usual colours, as a ``data:`` URL (no route, no auth, no base-URL question)."""
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
        f'stroke="{stroke}" stroke-width="1.6" stroke-linejoin="round">'
        '<path d="M13 11 8.5 8.2M13 13.5l-3.2 3.3"/>'
        '<ellipse cx="6" cy="6" rx="5" ry="3.6" fill="#fffc87"/>'
        '<rect x="13" y="9" width="9.5" height="6.5" fill="#9fb1fc"/>'
        '<path d="M1.5 17 6 13.8l4.5 3.2v5H1.5z" fill="#fed37f"/>'
        "</svg>"
    )
    return "data:image/svg+xml," + quote(svg)


# an <img>, not inline SVG: it cannot take the theme's text colour, so one per colour mode
PROV_ICON = _prov_icon("#4a5568")
PROV_ICON_DARK = _prov_icon("#cbd5e0")


class TwinprovPlugin(AirflowPlugin):
    """Records W3C PROV of every twinprov workflow run and serves it in the API server."""

    name = "twinprov"
    listeners = [listener]
    # the SPARQL endpoint and the provenance pages, in `airflow api-server` under /twinprov
    fastapi_apps = _AppsOnFirstUse()
    # UI: a "Provenance" tab on every DAG run page, and a "Provenance" entry in Browse. Where
    # the run's details panel is narrow (600 px or less, e.g. beside the graph) Airflow draws
    # every tab as its icon alone, with the name as tooltip: without an icon of its own the tab
    # would be Airflow's generic plugin icon.
    external_views = [
        {
            "name": "Provenance",
            "href": "twinprov/runs/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "twinprov-run",
            "icon": PROV_ICON,
            "icon_dark_mode": PROV_ICON_DARK,
        },
        {
            "name": "Provenance",
            "href": "twinprov/",
            "destination": "nav",
            "category": "browse",
            "url_route": "twinprov",
            "icon": PROV_ICON,
            "icon_dark_mode": PROV_ICON_DARK,
        },
    ]
