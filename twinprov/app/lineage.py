"""OpenLineage events of a run, built from the ledger and sent with the official client.

Emission is a publication stage (:func:`openlineage_stage`): it runs where the PROV document is
written, from the same ledger, after the crate (whose location the events carry). A transport
that fails (a lineage server down) leaves a publication gap named ``openlineage``, which
``twinprov publish RUN`` (or ``--pending``) fills by sending the run's events again; the run ids
are deterministic, so a backend sees the same runs, not new ones.

Where the events go is configured the OpenLineage way: ``openlineage.yml`` (``OPENLINEAGE_CONFIG``,
the working directory, ``~/.openlineage``) or ``OPENLINEAGE__TRANSPORT__*`` / ``OPENLINEAGE_URL``
environment variables. ``[twinprov] openlineage = on`` switches the emission on.
"""

from __future__ import annotations

__all__ = [
    "emit_events",
    "lineage_run",
    "openlineage_namespace",
    "openlineage_stage",
    "run_events_ndjson",
]

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twinprov.provenance.config import Settings
from twinprov.provenance.errors import PublishError, RunNotFoundError
from twinprov.provenance.ids import Ids
from twinprov.provenance.ledger import Ledger, RunRecord
from twinprov.provenance.record import StepTry, collapse_tries, run_state

if TYPE_CHECKING:
    from openlineage.client.event_v2 import RunEvent

    from twinprov.ro_crates.openlineage import LineageRun


def openlineage_namespace(tries: Sequence[StepTry]) -> str:
    """The job namespace: the one Airflow's provider used for the run (recorded with its run ids),
    else ``OPENLINEAGE_NAMESPACE``, else OpenLineage's ``default``."""
    for t in tries:
        ol = t.payload.get("openlineage")
        if isinstance(ol, Mapping) and ol.get("namespace"):
            return str(ol["namespace"])
    return os.environ.get("OPENLINEAGE_NAMESPACE") or "default"


def lineage_run(
    settings: Settings,
    rec: RunRecord,
    tries: Sequence[StepTry],
    state: str,
    *,
    ended: str | None = None,
    publication: Mapping[str, Any] | None = None,
) -> LineageRun:
    """The run as the OpenLineage writer takes it."""
    from twinprov.ro_crates.openlineage import LineageRun

    ids = Ids(settings.base_iri)
    pub = publication if publication is not None else rec.publication
    verdict = pub.get("verdict")
    return LineageRun(
        dag_id=rec.dag_id,
        run_id=rec.run_id,
        run_iri=ids.run(rec.dag_id, rec.run_id),
        task_iri_base=ids.run_ns + ids.run_local(rec.dag_id, rec.run_id),
        state=state,
        tries=tuple(tries),
        info=rec.info,
        ended=ended or rec.ended,
        crate=str(pub["crate"]) if pub.get("crate") else None,
        verdict=verdict if isinstance(verdict, Mapping) else None,
        namespace=openlineage_namespace(tries),
    )


def emit_events(events: Sequence[RunEvent]) -> str:
    """Send ``events`` through the transport OpenLineage's own configuration names; returns its
    kind. Raises :class:`PublishError` (one line) when none is configured or it fails."""
    from openlineage.client import OpenLineageClient

    configured = (
        os.environ.get("OPENLINEAGE_CONFIG")
        or os.environ.get("OPENLINEAGE_URL")
        or os.environ.get("OPENLINEAGE_DISABLED")
        or any(k.startswith("OPENLINEAGE__TRANSPORT") for k in os.environ)
    )
    client = OpenLineageClient()
    if not configured and not (client.config.transport or {}).get("type"):
        raise PublishError(
            "no OpenLineage transport configured: write openlineage.yml or set "
            "OPENLINEAGE__TRANSPORT__TYPE / OPENLINEAGE_URL (or [twinprov] openlineage = off)"
        )
    kind = str(client.transport.kind)
    try:
        for ev in events:
            client.emit(ev)
        client.close(timeout=30)
    except Exception as e:
        raise PublishError(f"OpenLineage {kind} transport failed: {type(e).__name__}: {e}") from e
    return kind


def run_events_ndjson(settings: Settings, dag_id: str, run_id: str) -> str:
    """The run's OpenLineage events as the publication sends them, one JSON per line. Reads
    only (the ledger and, when published, the crate location and verdict)."""
    from openlineage.client.serde import Serde

    from twinprov.app.publish import _step_events
    from twinprov.ro_crates.openlineage import run_events

    ledger = Ledger(settings.ledger_url)
    rec = ledger.run(dag_id, run_id)
    if rec is None:
        raise RunNotFoundError(f"no recorded run {dag_id}/{run_id}")
    tries = collapse_tries(_step_events(ledger.events(dag_id, run_id)))
    state = rec.state or run_state(tries)
    events = run_events(lineage_run(settings, rec, tries, state))
    return "".join(Serde.to_json(e) + "\n" for e in events)


def openlineage_stage(ctx: Any) -> None:
    """Publication stage ``openlineage`` (``ctx``: the publication's
    :class:`~twinprov.app.publish.PublishContext`): the run's events to the configured
    transport, when ``[twinprov] openlineage`` is on."""
    if not ctx.settings.openlineage:
        return
    from twinprov.ro_crates.openlineage import run_events

    run = lineage_run(
        ctx.settings, ctx.rec, ctx.tries, ctx.state, ended=ctx.ended, publication=ctx.publication
    )
    events = run_events(run)
    kind = emit_events(events)
    ctx.publication["openlineage"] = {"events": len(events), "transport": kind}
