"""What one run's crate says, as plain frozen records (no Airflow, no ``rocrate``).

:func:`twinprov.ro_crates.assemble.crate_input_from_ledger` fills a :class:`CrateInput` from the
ledger and
the workflow spec; :func:`twinprov.ro_crates.crate.build_crate` turns it into a Provenance Run
Crate. Tests
and other producers (a rerun, an import) may build a :class:`CrateInput` by hand.

Times are ISO 8601 strings as the ledger records them; paths are absolute.
"""

from __future__ import annotations

__all__ = [
    "NOT_RUN_STATES",
    "CrateInput",
    "FileRecord",
    "MlflowRunRef",
    "Organization",
    "Publication",
    "ParamSpec",
    "Person",
    "RunInfo",
    "SourceFile",
    "StacItemRef",
    "StepInput",
    "StepOutput",
    "StepSpec",
    "TaskTry",
    "ValidationReport",
    "WorkflowInfo",
]

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOT_RUN_STATES = frozenset({"skipped", "upstream_failed", "removed", "none", "scheduled", "queued"})
"""Task states whose try never executed the step (no action is recorded for them)."""

_FAILED_STATES = frozenset({"failed", "up_for_retry", "upstream_failed"})


@dataclass(frozen=True)
class Person:
    """Someone credited for the workflow or who started the run."""

    name: str
    orcid: str | None = None
    email: str | None = None
    affiliation: str | None = None
    affiliation_url: str | None = None


@dataclass(frozen=True)
class Organization:
    """An organisation (a publisher, an author's affiliation)."""

    name: str
    url: str | None = None


@dataclass(frozen=True)
class Publication:
    """How the deployment publishes crates (its settings), not what the run did."""

    base_uri: str | None = None
    """Absolute base URI under which software entities (tools, engine, environments) of a run's
    crate are named ``BASE/DAG_ID/RUN_ID/#…`` (data entities keep their paths in the crate)."""

    publisher: Organization | None = None
    """Who publishes the crates, when the spec names none."""
    engine_url: str | None = None
    """Web page of the engine (twinprov) as this deployment runs it."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The twinprov settings that shaped the run (no secret), shipped as a configuration file."""


@dataclass(frozen=True)
class ParamSpec:
    """A formal run parameter of the workflow (``params:`` in the spec)."""

    name: str
    type: str
    """``string``, ``integer``, ``number`` or ``boolean``."""
    default: str | int | float | bool | None = None
    description: str = ""


@dataclass(frozen=True)
class StepInput:
    """A file a step reads, as declared: ``source`` is ``STEP.OUTPUT`` or ``params.NAME``."""

    name: str
    source: str

    @property
    def producer(self) -> str | None:
        """The step that writes this input, or ``None`` when a parameter names the file."""
        head, _, _ = self.source.partition(".")
        return None if head == "params" else head

    @property
    def item(self) -> str:
        """The producer's output name, or the parameter's name."""
        return self.source.partition(".")[2]


@dataclass(frozen=True)
class StepOutput:
    """A file a step declares it writes, relative to the run workspace."""

    name: str
    path: str
    media_type: str


@dataclass(frozen=True)
class StepSpec:
    """One step of the workflow as the spec declares it."""

    id: str
    position: int
    """Index in dependency order: a step comes after every step it needs."""
    description: str = ""
    image: str | None = None
    command: tuple[str, ...] = ()
    """``command`` then ``args``, placeholders (``${params.x}``…) left as written."""
    target: str = "local"
    inputs: tuple[StepInput, ...] = ()
    outputs: tuple[StepOutput, ...] = ()
    params: tuple[str, ...] = ()
    """Names of the run parameters the step reads (through ``${params.NAME}``)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables the spec sets for the step, as written."""
    sources: tuple[str, ...] = ()
    """Files of the workflow folder the command runs (``${workflow_dir}/…``), relative to it."""
    homepage: str | None = None
    """Web page of the step's program."""
    build: str | None = None
    """The image's build instructions (a Dockerfile of the workflow folder), relative to it."""


@dataclass(frozen=True)
class SourceFile:
    """A file of the workflow folder (the spec or a step program) shipped in the crate."""

    rel_path: str
    path: Path
    sha256: str
    size: int
    media_type: str


@dataclass(frozen=True)
class WorkflowInfo:
    """The workflow (prospective provenance)."""

    name: str
    version: str
    spec_path: Path
    spec_sha256: str
    steps: tuple[StepSpec, ...]
    """In dependency order (``position`` 0, 1, …)."""
    description: str = ""
    license: str | None = None
    """SPDX identifier (``Apache-2.0``) or a URL; ``None`` when the spec declares none."""
    authors: tuple[Person, ...] = ()
    params: tuple[ParamSpec, ...] = ()
    sources: tuple[SourceFile, ...] = ()
    """Step programs the commands reference, to ship beside the spec."""
    language: str = "twinprov"
    """What ``spec_path`` is written in: ``twinprov`` (a YAML workflow spec), ``airflow`` (a
    hand-written Python DAG file; its tasks are the steps) or ``cwl`` (a CWL document; ``version``
    is its cwlVersion)."""
    homepage: str | None = None
    """Web page of the workflow."""
    publisher: Organization | None = None
    """Who publishes the workflow's runs, as the spec says."""

    def step(self, step_id: str) -> StepSpec | None:
        """The step with this id, or ``None``."""
        return next((s for s in self.steps if s.id == step_id), None)


@dataclass(frozen=True)
class RunInfo:
    """The run (retrospective provenance, workflow level)."""

    dag_id: str
    run_id: str
    state: str
    start: str | None = None
    end: str | None = None
    triggering_user: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    twinprov_version: str = "unknown"
    airflow_version: str | None = None
    run_type: str | None = None
    iri: str | None = None
    """The run's IRI in the PROV graph (links the crate to ``twinprov query``)."""


@dataclass(frozen=True)
class FileRecord:
    """One file a task try read or wrote."""

    name: str
    path: Path
    """Absolute path where the file was (and, unless overwritten since, still is)."""
    sha256: str
    size: int
    media_type: str = "application/octet-stream"
    rel_path: str | None = None
    """Path relative to the run workspace, if the file lives there."""
    iri: str | None = None
    """The content-addressed PROV entity of these bytes."""


@dataclass(frozen=True)
class TaskTry:
    """One try of one task."""

    task_id: str
    try_number: int
    state: str
    start: str | None = None
    end: str | None = None
    error: str | None = None
    exit_code: int | None = None
    image: str | None = None
    image_digest: str | None = None
    """``sha256:…`` of the image the try actually ran in, when the backend reports it."""
    environment: Mapping[str, Any] = field(default_factory=dict)
    """The execution environment recorded for the try (local: the Python environment)."""
    inputs: tuple[FileRecord, ...] = ()
    outputs: tuple[FileRecord, ...] = ()
    resource_usage: Mapping[str, float] = field(default_factory=dict)
    """Measured quantities: ``cpu_user_s``, ``cpu_system_s``, ``max_rss_kb``, ``duration_s``…"""
    map_index: int = -1
    target: str | None = None
    command: tuple[str, ...] = ()
    """The argv the try ran (rendered)."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables the spec set for the try (rendered)."""
    host: str | None = None
    iri: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    """Comparable facts a rerun explains differences with (``twinprov.provenance.env_facts``)."""

    @property
    def ran(self) -> bool:
        """Whether the step's command was started in this try."""
        return self.state not in NOT_RUN_STATES

    @property
    def failed(self) -> bool:
        """Whether the try ended in failure."""
        return self.state in _FAILED_STATES


@dataclass(frozen=True)
class ValidationReport:
    """The result of checking one output against its data-quality suite."""

    output: str
    sha256: str
    success: bool
    report_json: Path | None = None
    report_html: Path | None = None
    suite: str | None = None


@dataclass(frozen=True)
class StacItemRef:
    """A STAC Item published for one output."""

    item_id: str
    path: Path
    about_sha256: str | None = None


@dataclass(frozen=True)
class MlflowRunRef:
    """An MLflow run that tracked (a step of) this workflow run."""

    run_id: str
    tracking_uri: str | None = None
    experiment_id: str | None = None
    url: str | None = None
    """A web page of the run (an MLflow UI), if there is one."""
    uri: str | None = None
    """``runs:/<run_id>``."""
    name: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CrateInput:
    """Everything one run's crate describes."""

    workflow: WorkflowInfo
    run: RunInfo
    tries: tuple[TaskTry, ...]
    prov_files: Mapping[str, Path] = field(default_factory=dict)
    """PROV serializations by file name (``prov.json``, ``prov.provn``, ``prov.ttl``)."""
    validations: tuple[ValidationReport, ...] = ()
    stac_items: tuple[StacItemRef, ...] = ()
    mlflow_runs: tuple[MlflowRunRef, ...] = ()
    verdict: Mapping[str, Any] | None = None
    """Reproducibility verdict of a rerun (see twinprov.app.rerun)."""
    publication: Publication = field(default_factory=Publication)
    """The deployment's publication settings (base URI, publisher, settings file)."""
    yprov: Mapping[str, Any] | None = None
    """Where the run's PROV-JSON document was pushed in yProv: ``{pid, location, parent_pid}``."""
