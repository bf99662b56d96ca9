"""OpenLineage view of a run: the events a lineage backend (Marquez, DataHub, OpenMetadata…)
reads, built with the official client's classes from the same record the PROV document comes from.

One job run per task try (START, then COMPLETE / FAIL / ABORT) and one per DAG run, whose events
carry:

* inputs and outputs named from their location after OpenLineage's dataset naming (a local file:
  namespace ``file://HOST`` (``file`` when the host is unknown), name its absolute path;
  ``s3://bucket/key``: ``s3://bucket`` and ``key``; any other URI: ``scheme://authority`` and its
  path), with a
  ``DatasetVersionDatasetFacet`` = the file's sha256 and a ``SchemaDatasetFacet`` for tables
  (CSV, Parquet: columns) and NetCDF files (variables);
* on a validation task's input, a ``DataQualityAssertionsDatasetFacet`` from the Great
  Expectations result bound to that exact checksum;
* a ``twinprov`` run facet (:class:`TwinprovRunFacet`, JSON schema shipped beside this module):
  PROV run IRI, crate, image digest, HPC job id, reproducibility verdict.

Run ids are the ones Airflow's OpenLineage provider gives the same runs when the capture recorded
them (``payload["openlineage"]``), else ids derived from the PROV IRIs: the same run gets the same
id at every publication, so a retried publication repeats events instead of adding runs.
"""

from __future__ import annotations

__all__ = [
    "FACET_SCHEMA_FILE",
    "FACET_SCHEMA_URL",
    "LineageRun",
    "TwinprovRunFacet",
    "dataset_naming",
    "run_events",
]

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attr
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    InputDatasetFacet,
    RunFacet,
    data_quality_assertions_dataset,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    schema_dataset,
)
from openlineage.client.naming.dataset import S3, LocalFileSystem, RemoteFileSystem
from openlineage.client.uuid import generate_static_uuid

from twinprov.provenance.record import StepTry

log = logging.getLogger(__name__)
_DQ = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet

PRODUCER = "https://pypi.org/project/twinprov/"
"""``producer`` of every event and facet: what wrote them."""
FACET_SCHEMA_FILE = files("twinprov.ro_crates").joinpath("data/openlineage/TwinprovRunFacet.json")
"""The JSON schema of :class:`TwinprovRunFacet`, shipped in the package."""
FACET_SCHEMA_URL = "urn:twinprov:openlineage:1-0-0:TwinprovRunFacet.json#/$defs/TwinprovRunFacet"
"""The facet's ``_schemaURL`` (the ``$id`` of :data:`FACET_SCHEMA_FILE`, plus the pointer)."""

_END = {
    "success": RunState.COMPLETE,
    "skipped": RunState.ABORT,
    "failed": RunState.FAIL,
    "up_for_retry": RunState.FAIL,
    "upstream_failed": RunState.FAIL,
    "interrupted": RunState.FAIL,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OBJECT_STORES = ("gs", "gcs", "wasbs", "abfss")
_TABLES = ("text/csv", "application/vnd.apache.parquet", "application/x-parquet")
_NETCDF = ("application/x-netcdf", "application/netcdf")


@attr.define
class TwinprovRunFacet(RunFacet):
    """What twinprov knows of a run that OpenLineage has no facet for (key ``twinprov``)."""

    provRun: str  # noqa: N815
    """IRI of the run's (or task try's) ``prov:Activity``; the run's named graph is its run's."""
    crate: str | None = attr.field(default=None)
    """Where the run's RO-Crate is."""
    imageDigest: str | None = attr.field(default=None)  # noqa: N815
    """Digest of the container image that really ran."""
    hpcJobId: str | None = attr.field(default=None)  # noqa: N815
    """The batch system's job id (interLink / Slurm)."""
    reproducibility: str | None = attr.field(default=None)
    """For a rerun: its verdict (``reproduced``, ``differs``, ``failed``, ``inputs_changed``)."""
    originalRun: str | None = attr.field(default=None)  # noqa: N815
    """For a rerun: the run it re-ran."""

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


@dataclass(frozen=True)
class LineageRun:
    """A run, as the publication read it, and what it published."""

    dag_id: str
    run_id: str
    run_iri: str
    task_iri_base: str
    """Task-try IRIs are ``{task_iri_base}/task/{task}/{map_index}/{try}``."""
    state: str
    tries: Sequence[StepTry]
    info: Mapping[str, Any] = field(default_factory=dict)
    ended: str | None = None
    crate: str | None = None
    verdict: Mapping[str, Any] | None = None
    namespace: str = "default"
    """The OpenLineage job namespace (the provider's ``[openlineage] namespace``)."""


def _time(value: str | None, fallback: datetime) -> datetime:
    if value:
        try:
            t = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    return fallback


def dataset_naming(location: str, host: str | None = None) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a dataset at ``location`` (a path or a URI)."""
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a", "s3n") and parts.netloc:
        s3 = S3(bucket_name=parts.netloc, object_key=parts.path.lstrip("/") or "/")
        return s3.get_namespace(), s3.get_name()
    if scheme and scheme != "file" and len(scheme) > 1:  # not a Windows drive letter
        path = parts.path or "/"
        if scheme in _OBJECT_STORES:  # a bucket's object key, without the leading slash
            path = path.lstrip("/") or "/"
        return f"{scheme}://{parts.netloc}", path  # gs://, hdfs://, abfss://…
    path = parts.path if scheme == "file" else location
    host = (parts.netloc if scheme == "file" else "") or host
    fs: LocalFileSystem | RemoteFileSystem = (
        RemoteFileSystem(host=host, path=path) if host else LocalFileSystem(path=path)
    )
    return fs.get_namespace(), fs.get_name()


def _schema_fields(path: Path, media_type: str) -> list[schema_dataset.SchemaDatasetFacetFields]:
    """Columns of a table, variables of a NetCDF file; ``[]`` for anything else."""
    F = schema_dataset.SchemaDatasetFacetFields
    suffix = path.suffix.lower()
    if media_type in _TABLES or suffix in (".csv", ".parquet"):
        import pandas as pd

        if media_type == "text/csv" or suffix == ".csv":
            frame = pd.read_csv(path, nrows=100)
        else:
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            return [
                F(name=n, type=str(t), ordinal_position=i + 1)
                for i, (n, t) in enumerate(zip(schema.names, schema.types, strict=True))
            ]
        return [
            F(name=str(c), type=str(t), ordinal_position=i + 1)
            for i, (c, t) in enumerate(frame.dtypes.items())
        ]
    if media_type in _NETCDF or suffix in (".nc", ".nc4", ".netcdf"):
        import xarray as xr

        with xr.open_dataset(path) as ds:
            return [
                F(
                    name=str(n),
                    type=str(v.dtype),
                    description=f"dims ({', '.join(map(str, v.dims))})"
                    + (f"; {v.attrs['long_name']}" if v.attrs.get("long_name") else ""),
                )
                for n, v in ds.data_vars.items()
            ]
    return []


def _assertions(check: Mapping[str, Any]) -> list[data_quality_assertions_dataset.Assertion]:
    """One assertion per expectation of a validation, from its GX result when it is readable."""
    A = data_quality_assertions_dataset.Assertion
    report = check.get("report")
    results: list[Any] = []
    if report and Path(str(report)).is_file():
        try:
            record = json.loads(Path(str(report)).read_text(encoding="utf-8"))
            results = list((record.get("result") or {}).get("results") or [])
        except (OSError, ValueError, AttributeError) as e:
            log.debug("twinprov: GX result %s not read: %s", report, e)
    out = []
    for r in results:
        config = r.get("expectation_config") or {}
        kwargs = config.get("kwargs") or {}
        column = kwargs.get("column")
        out.append(
            A(
                assertion=str(config.get("type") or config.get("expectation_type") or "?"),
                success=bool(r.get("success")),
                column=str(column) if column is not None else None,
            )
        )
    if not out:  # no readable GX result: what the ledger says of the failed ones
        out = [A(assertion=f, success=False) for f in check.get("failed_expectations") or ()]
    return out


@dataclass
class _Datasets:
    """Builds each dataset once per run (schemas are read from the file once)."""

    host: str | None
    schemas: dict[str, list[schema_dataset.SchemaDatasetFacetFields]] = field(default_factory=dict)

    def facets(
        self, entry: Mapping[str, Any], with_schema: bool
    ) -> tuple[str, str, dict[str, Any]]:
        where = str(entry.get("uri") or entry.get("abs_path") or entry.get("path") or "")
        namespace, name = dataset_naming(where, self.host)
        facets: dict[str, Any] = {}
        sha = entry.get("sha256")
        if sha:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(sha), producer=PRODUCER
            )
        if with_schema and sha and namespace.startswith("file://"):
            fields = self.schemas.get(str(sha))
            if fields is None:
                fields = self._read_schema(entry)
                self.schemas[str(sha)] = fields
            if fields:
                facets["schema"] = schema_dataset.SchemaDatasetFacet(
                    fields=fields, producer=PRODUCER
                )
        return namespace, name, facets

    @staticmethod
    def _read_schema(entry: Mapping[str, Any]) -> list[schema_dataset.SchemaDatasetFacetFields]:
        path = Path(str(entry.get("abs_path") or entry.get("path") or ""))
        size = entry.get("size")
        try:
            if not path.is_absolute() or not path.is_file():
                return []
            if isinstance(size, int) and path.stat().st_size != size:
                return []  # not the bytes that were recorded any more
            return _schema_fields(path, str(entry.get("media_type") or ""))
        except Exception as e:  # a schema is a courtesy: never a reason to drop the events
            log.debug("twinprov: schema of %s not read: %s", path, e)
            return []


def _static_id(run: LineageRun, iri: str) -> str:
    """A standalone run id: the same for the same run at every publication."""
    when = run.info.get("run_start") or run.info.get("logical_date")
    return str(generate_static_uuid(instant=_time(when, _EPOCH), data=iri.encode()))


def _try_run_id(run: LineageRun, t: StepTry, task_iri: str) -> str:
    ol = t.payload.get("openlineage")
    if isinstance(ol, Mapping) and ol.get("task_run_id"):
        return str(ol["task_run_id"])
    return _static_id(run, task_iri)


def _dag_run_id(run: LineageRun) -> str:
    for t in run.tries:
        ol = t.payload.get("openlineage")
        if isinstance(ol, Mapping) and ol.get("dag_run_id"):
            return str(ol["dag_run_id"])
    return _static_id(run, run.run_iri)


def _job_type(kind: str) -> job_type_job.JobTypeJobFacet:
    return job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="AIRFLOW", jobType=kind, producer=PRODUCER
    )


def run_events(run: LineageRun) -> list[RunEvent]:
    """The run's OpenLineage events, in time order: the DAG run's START, each task try's START
    and end, the DAG run's end (none while it is still running)."""
    now = datetime.now(UTC)
    first = min((t.start for t in run.tries if t.start), default=None)
    dag_start = _time(run.info.get("run_start") or first, now)
    dag_run_id = _dag_run_id(run)
    dag_job = Job(namespace=run.namespace, name=run.dag_id, facets={"jobType": _job_type("DAG")})
    verdict = run.verdict or {}
    dag_facet = TwinprovRunFacet(
        provRun=run.run_iri,
        crate=run.crate,
        reproducibility=str(verdict["status"]) if verdict.get("status") else None,
        originalRun=str(verdict["original_run"]) if verdict.get("original_run") else None,
        producer=PRODUCER,
    )
    datasets = _Datasets(host=None)
    events: list[tuple[datetime, int, RunEvent]] = [
        (
            dag_start,
            0,
            RunEvent(
                eventType=RunState.START,
                eventTime=dag_start.isoformat(),
                run=Run(runId=dag_run_id, facets={"twinprov": dag_facet}),
                job=dag_job,
                producer=PRODUCER,
            ),
        )
    ]
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=dag_run_id),
        job=parent_run.Job(namespace=run.namespace, name=run.dag_id),
        producer=PRODUCER,
    )
    all_inputs: dict[tuple[str, str], InputDataset] = {}
    all_outputs: dict[tuple[str, str], OutputDataset] = {}
    for t in run.tries:
        p = t.payload
        task_iri = f"{run.task_iri_base}/task/{t.task_id}/{t.map_index}/{t.try_number}"
        hpc: Mapping[str, Any] = p["hpc"] if isinstance(p.get("hpc"), Mapping) else {}
        facets: dict[str, Any] = {
            "parent": parent,
            "twinprov": TwinprovRunFacet(
                provRun=task_iri,
                crate=run.crate,
                imageDigest=str(p["image_digest"]) if p.get("image_digest") else None,
                hpcJobId=str(hpc["job_id"]) if hpc.get("job_id") else None,
                producer=PRODUCER,
            ),
        }
        datasets.host = str(p.get("hostname")) if p.get("hostname") else None
        m = t.manifest
        inputs, outputs = [], []
        for entry in m.get("inputs") or []:
            ns, name, dfacets = datasets.facets(entry, with_schema=False)
            inputs.append(InputDataset(namespace=ns, name=name, facets=dfacets))
        for entry in m.get("outputs") or []:
            ns, name, dfacets = datasets.facets(entry, with_schema=True)
            outputs.append(OutputDataset(namespace=ns, name=name, facets=dfacets))
        check = p.get("validation")
        if isinstance(check, Mapping) and check.get("path"):
            entry = {**check, "sha256": check.get("expected_sha256") or check.get("sha256")}
            ns, name, dfacets = datasets.facets(entry, with_schema=False)
            input_facets: dict[str, InputDatasetFacet] = {
                "dataQualityAssertions": _DQ(assertions=_assertions(check), producer=PRODUCER)
            }
            inputs.append(
                InputDataset(namespace=ns, name=name, facets=dfacets, inputFacets=input_facets)
            )
        job = Job(
            namespace=run.namespace,
            name=f"{run.dag_id}.{t.task_id}",
            facets={"jobType": _job_type("TASK")},
        )
        run_id = _try_run_id(run, t, task_iri)
        start = _time(t.start, dag_start)
        if t.start:
            events.append(
                (
                    start,
                    1,
                    RunEvent(
                        eventType=RunState.START,
                        eventTime=start.isoformat(),
                        run=Run(runId=run_id, facets=facets),
                        job=job,
                        inputs=inputs,
                        producer=PRODUCER,
                    ),
                )
            )
        end_state = _END.get(t.state)
        if end_state is not None:
            end = _time(t.end, start)
            end_facets = dict(facets)
            if t.error and end_state is RunState.FAIL:
                end_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                    message=str(t.error), programmingLanguage="python", producer=PRODUCER
                )
            events.append(
                (
                    end,
                    2,
                    RunEvent(
                        eventType=end_state,
                        eventTime=end.isoformat(),
                        run=Run(runId=run_id, facets=end_facets),
                        job=job,
                        inputs=inputs,
                        outputs=outputs,
                        producer=PRODUCER,
                    ),
                )
            )
        for d in inputs:
            all_inputs.setdefault((d.namespace, d.name), d)
        for o in outputs:
            all_outputs[(o.namespace, o.name)] = o
    end_state = _END.get(run.state)
    if end_state is not None:
        end = _time(run.ended, now)
        produced = set(all_outputs)  # the DAG run reads what its tasks read from outside
        events.append(
            (
                end,
                3,
                RunEvent(
                    eventType=end_state,
                    eventTime=end.isoformat(),
                    run=Run(runId=dag_run_id, facets={"twinprov": dag_facet}),
                    job=dag_job,
                    inputs=[d for k, d in all_inputs.items() if k not in produced],
                    outputs=list(all_outputs.values()),
                    producer=PRODUCER,
                ),
            )
        )
    events.sort(key=lambda e: (e[0], e[1]))
    return [e for _t, _o, e in events]
