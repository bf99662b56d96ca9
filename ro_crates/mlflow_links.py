"""MLflow links: steps' MLflow runs are tagged with the step's identity, found again at
publication by that tag, recorded in PROV and the crate, and tagged back with the crate location
and the PROV run IRI.

A step declared ``mlflow: true`` gets ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME`` and its
identity (``TWINPROV_*``) in its environment;
:class:`twinprov.ro_crates.mlflow_context.TwinprovRunContext`
(registered through MLflow's ``mlflow.run_context_provider`` entry point) then tags every MLflow
run the step starts, without the step's code knowing about twinprov.
"""

from __future__ import annotations

__all__ = [
    "MlflowRunRecord",
    "ensure_experiment",
    "find_runs",
    "step_environment",
    "tag_back",
]

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUN_IRI_TAG = "twinprov.run_iri"


@dataclass(frozen=True)
class MlflowRunRecord:
    """One MLflow run a step created, as provenance records it."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    task_id: str
    try_number: int
    name: str | None = None
    status: str | None = None
    start: str | None = None
    end: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    models: tuple[Mapping[str, str], ...] = ()
    artifact_uri: str | None = None

    @property
    def uri(self) -> str:
        """MLflow's own URI of the run."""
        return f"runs:/{self.run_id}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["models"] = [dict(m) for m in self.models]
        d["uri"] = self.uri
        return d


def step_environment(
    *,
    tracking_uri: str,
    experiment: str,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    run_iri: str,
) -> dict[str, str]:
    """Environment variables a step needs to log to MLflow under its identity."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "TWINPROV_DAG_ID": dag_id,
        "TWINPROV_RUN_ID": run_id,
        "TWINPROV_TASK_ID": task_id,
        "TWINPROV_TRY_NUMBER": str(try_number),
        "TWINPROV_RUN_IRI": run_iri,
    }


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str, artifact_root: Path | None) -> str:
    """The experiment's id, creating it (artifacts under ``artifact_root``) if needed."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if artifact_root is not None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.resolve().as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # created concurrently by another step
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def find_runs(tracking_uri: str, run_iri: str) -> list[MlflowRunRecord]:
    """Every MLflow run tagged with this twinprov run, with its metrics and logged models."""
    client = _client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{RUN_IRI_TAG}` = '{run_iri}'", max_results=1000
    )
    records = []
    for r in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        models = client.search_logged_models(
            [r.info.experiment_id], filter_string=f"source_run_id = '{r.info.run_id}'"
        )
        tags = r.data.tags
        records.append(
            MlflowRunRecord(
                run_id=r.info.run_id,
                experiment_id=r.info.experiment_id,
                tracking_uri=tracking_uri,
                task_id=tags.get("twinprov.task_id", ""),
                try_number=int(tags.get("twinprov.try_number", "0") or 0),
                name=r.info.run_name,
                status=r.info.status,
                start=_iso(r.info.start_time),
                end=_iso(r.info.end_time),
                metrics=dict(sorted(r.data.metrics.items())),
                params=dict(sorted(r.data.params.items())),
                models=tuple(
                    {"model_id": m.model_id, "name": m.name or "", "uri": m.model_uri}
                    for m in sorted(models, key=lambda m: m.model_id)
                ),
                artifact_uri=r.info.artifact_uri,
            )
        )
    return records


def tag_back(tracking_uri: str, run_ids: list[str], *, crate: str | None, prov_run: str) -> None:
    """Tag each MLflow run with the crate location and the PROV run IRI (the way back)."""
    client = _client(tracking_uri)
    for run_id in run_ids:
        client.set_tag(run_id, "twinprov.prov_run", prov_run)
        if crate:
            client.set_tag(run_id, "twinprov.crate", crate)
