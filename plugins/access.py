"""Who is asking, and which DAGs' provenance they may read: Airflow's auth manager decides.

Airflow mounts plugin apps without authentication, so every route of the twinprov app depends on
:func:`airflow.api_fastapi.core_api.security.get_user` (a bearer JWT from ``POST /auth/token``, or
the UI's session cookie): no valid token, HTTP 401. What a user may read is asked of the auth
manager per DAG, exactly as Airflow's own routes do (the DAG's team from its bundle, then
``filter_authorized_dag_ids(method="GET")``), so a role- or team-restricted user sees only the
runs of DAGs they could open in the Airflow UI.

A run whose DAG Airflow no longer knows (``airflow dags delete``, a bundle removed, a run recorded
for a DAG id Airflow never had) has no owner to ask about: auth managers allow a DAG id without a
team to every role that may read DAGs, so such runs are denied by default and shown to admins only
(:func:`is_admin`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request, status

# Airflow's API modules are imported when a request comes, not with the plugin: the plugin is
# loaded by every Airflow process (task runners too, for the listener), only the API server serves.


async def api_user(request: Request) -> Any:
    """The authenticated user of an API call: Airflow's ``get_user`` (401 without a token)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


ApiUser = Annotated[Any, Depends(api_user)]


class LoginRequired(Exception):
    """A page was opened without a session: send the browser to Airflow's login."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url
        super().__init__(next_url)


async def page_user(request: Request) -> Any:
    """The user of a page view; without a session the browser is sent to Airflow's login."""
    try:
        return await api_user(request)
    except HTTPException as e:
        if e.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginRequired(str(request.url)) from e
        raise


PageUser = Annotated[Any, Depends(page_user)]


def login_url(next_url: str) -> str:
    """Airflow's login page, coming back to ``next_url``."""
    from airflow.api_fastapi.app import get_auth_manager

    try:
        return str(get_auth_manager().get_url_login(next_url=next_url))
    except Exception:  # an auth manager without a login page: Airflow's own default route
        return f"/auth/login?next={quote(next_url, safe='')}"


_NO_SUCH_TEAM = "\x00twinprov: a team nobody belongs to"


def is_admin(manager: Any, user: Any) -> bool:
    """Whether ``user`` is an administrator for Airflow's auth manager.

    The auth manager interface has no "is admin" question; a multi-team capable one (the simple
    auth manager, for one) answers for a team nobody belongs to only for its admins. Without
    multi-team support, the user's role names are read: ``Admin`` (or ``[fab] auth_role_admin``).
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import TeamDetails

    try:
        return bool(
            manager.is_authorized_team(
                method="GET", user=user, details=TeamDetails(name=_NO_SUCH_TEAM)
            )
        )
    except NotImplementedError:
        pass
    from airflow.configuration import conf

    admin_roles = {"admin", str(conf.get("fab", "auth_role_admin", fallback="Admin")).lower()}
    roles: list[Any] = list(getattr(user, "roles", None) or [])
    roles.append(getattr(user, "role", None))
    names = {str(getattr(r, "name", r)).lower() for r in roles if r}
    return bool(names & admin_roles)


def _known_dags(ids: list[str]) -> set[str]:
    """The DAG ids among ``ids`` that Airflow's metadata DB has (deleted DAGs are not there)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return set(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(ids))))


def readable_dags(user: Any, dag_ids: Iterable[str]) -> frozenset[str]:
    """The DAGs among ``dag_ids`` whose runs ``user`` may read.

    DAGs Airflow does not know (deleted, or never registered) are readable by admins only.
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dag import DagModel

    ids = sorted(set(dag_ids))
    if not ids:
        return frozenset()
    manager: Any = get_auth_manager()
    known = _known_dags(ids)
    allowed: set[str] = set()
    unknown = [d for d in ids if d not in known]
    if unknown and is_admin(manager, user):
        allowed.update(unknown)
    ids = [d for d in ids if d in known]
    if not ids:
        return frozenset(allowed)
    teams: dict[str, str | None] = DagModel.get_dag_id_to_team_name_mapping(ids)
    by_team: dict[str | None, set[str]] = defaultdict(set)
    for dag_id in ids:
        by_team[teams.get(dag_id)].add(dag_id)
    for team, group in by_team.items():
        allowed |= manager.filter_authorized_dag_ids(
            dag_ids=group, user=user, method="GET", team_name=team
        )
    return frozenset(allowed)
