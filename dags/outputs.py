"""Spec outputs as Airflow Assets: twinprov's data lineage in Airflow's own vocabulary.

Every output of a workflow spec is the Asset ``twinprov://<workflow>/<step>/<output>`` (stable
across runs: the bytes change, the output does not). The task that vouches for an output has
it as an outlet: the output's validation task when the spec declares a check (so the event
means "written and checked"; a check that fails under policy ``fail`` emits none), else the
step itself. Its asset event's ``extra`` carries the output's sha256, size, media type and
path, the PROV run IRI, where the run's crate is published, and the validation verdict. A DAG
with ``schedule=[Asset("twinprov://…")]`` then runs after the upstream workflow wrote it, and
its provenance meets the upstream output by checksum (the same content-addressed entity).
"""

from __future__ import annotations

__all__ = ["announce", "output_asset", "output_uri"]

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

from twinprov.provenance.assets import OUTPUT_SCHEME as SCHEME
from twinprov.provenance.assets import output_uri


def output_asset(workflow: str, step: str, output: str) -> Asset:
    """The Airflow Asset of one spec output (group ``twinprov``)."""
    return Asset(uri=output_uri(workflow, step, output), group=SCHEME)


def announce(
    task: Any,
    context: Any,
    workflow: str,
    step: str,
    outputs: list[Mapping[str, Any]],
    validation: str | None = None,
) -> None:
    """Put the facts of ``outputs`` (manifest entries) into the asset events this try emits
    for the task's twinprov outlets. Never raises: the event is a view of the provenance."""
    try:
        from twinprov.app.publish import crate_dir
        from twinprov.provenance.config import Settings
        from twinprov.provenance.ids import Ids

        ti = context["ti"]
        settings = Settings.load()
        by_uri = {output_uri(workflow, step, str(o.get("name"))): o for o in outputs}
        for asset in getattr(task, "outlets", None) or ():
            rec = by_uri.get(str(getattr(asset, "uri", "")))
            if rec is None or not rec.get("sha256"):
                continue
            context["outlet_events"][asset].extra.update(
                {
                    "sha256": rec["sha256"],
                    "size": rec.get("size"),
                    "media_type": rec.get("media_type"),
                    "path": rec.get("abs_path") or rec.get("path"),
                    "run": Ids(settings.base_iri).run(ti.dag_id, ti.run_id),
                    "dag_id": ti.dag_id,
                    "run_id": ti.run_id,
                    "crate": str(crate_dir(settings, ti.dag_id, ti.run_id)),
                    "validation": validation or "not checked",
                }
            )
    except Exception as e:
        task.log.warning("twinprov: asset event facts not set: %s", e)
