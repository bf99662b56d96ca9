"""The workflow spec's format: the pydantic models and the ``${...}`` placeholder syntax.

The models are the single source of truth for the format (``twinprov validate-spec`` and the
README's JSON Schema both come from them). What the models cannot say (references between steps,
cycles, images per target…) is checked by :mod:`twinprov.provenance.spec_checks`; reading a spec
file is :mod:`twinprov.provenance.spec`.
"""

from __future__ import annotations

__all__ = [
    "Author",
    "Check",
    "Defaults",
    "Hpc",
    "Input",
    "Kubernetes",
    "Organization",
    "Output",
    "Param",
    "ParamType",
    "PUBLISH_TASK_ID",
    "RERUN_PARAM",
    "Reproducibility",
    "Resources",
    "SecretEnv",
    "Step",
    "Target",
    "Tolerance",
    "Toleration",
    "Volume",
    "WorkflowSpec",
    "placeholders",
    "render",
    "spec_json_schema",
]

import graphlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from twinprov.provenance.errors import SpecError

Target = Literal["local", "kubernetes", "interlink"]
ParamType = Literal["string", "integer", "number", "boolean"]

_ID = r"^[A-Za-z][A-Za-z0-9_]*$"
PUBLISH_TASK_ID = "publish_provenance"
"""Task id of the final publication task every generated DAG ends with (reserved)."""
RERUN_PARAM = "rerun_of"
"""The param every generated DAG has: which run this run re-runs (empty for a normal run)."""
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Author(_Model):
    """A person credited for the workflow."""

    name: str
    orcid: str | None = None
    email: str | None = None
    affiliation: str | None = None
    affiliation_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """Web page of the affiliation."""


_HTTP_URL = r"^https?://[^\s]+$"


class Organization(_Model):
    """An organisation: who publishes the workflow's crates."""

    name: str = Field(min_length=1)
    url: str | None = Field(default=None, pattern=_HTTP_URL)


class Param(_Model):
    """A run parameter; becomes an Airflow ``Param`` and a field of the UI trigger form."""

    type: ParamType
    default: str | int | float | bool
    description: str = ""
    title: str | None = None
    enum: list[str | int | float] | None = None
    minimum: float | None = None
    maximum: float | None = None


class Input(_Model):
    """A file a step reads: another step's output (``step.output``) or a param (``params.x``)."""

    name: str = Field(pattern=_ID)
    from_: str = Field(alias="from")


class Check(_Model):
    """Data-quality checks of one output: a Great Expectations suite and what a failure does."""

    suite: str | None = None
    """Suite JSON file, relative to the spec's folder."""
    expectations: list[dict[str, Any]] | None = None
    """Inline expectations (``{type, kwargs}``), instead of a suite file."""
    on_failure: Literal["fail", "warn"] = "fail"


class Tolerance(_Model):
    """Numeric comparison of an output in reruns (for steps not bitwise deterministic)."""

    rtol: float = Field(default=0.0, ge=0)
    atol: float = Field(default=0.0, ge=0)


class Reproducibility(_Model):
    """Scheduled reruns of the workflow's latest successful run."""

    schedule: str


class Output(_Model):
    """A file a step writes, relative to the run workspace."""

    name: str = Field(pattern=_ID)
    path: str
    media_type: str
    validation: Check | None = None
    compare: Tolerance | None = None
    """Reruns compare this output numerically within a tolerance instead of byte for byte."""
    geospatial: bool | None = None
    """Publish as a STAC Item (``None``: decide from the file, e.g. NetCDF lat/lon)."""


class Resources(_Model):
    """What a step asks for (used by the Kubernetes and HPC targets)."""

    cpu: str | float | None = None
    memory: str | None = None
    gpu: int | None = None


class Toleration(_Model):
    """A Kubernetes toleration."""

    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Kubernetes(_Model):
    """Pod settings for the ``kubernetes`` and ``interlink`` targets."""

    namespace: str | None = None
    service_account: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[Toleration] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class Hpc(_Model):
    """How an ``interlink`` step runs on the HPC site (``slurm-job.vk.io/*`` annotations)."""

    site: str | None = None
    partition: str | None = None
    walltime: str | None = None
    """SLURM time limit: ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    nodes: int | None = Field(default=None, ge=1)
    tasks: int | None = Field(default=None, ge=1)
    gpus: int | None = Field(default=None, ge=0)
    flags: list[str] | None = None
    mpi_flags: list[str] | None = None
    singularity_options: str | None = None
    singularity_mounts: str | None = None
    image_root: str | None = None
    pre_exec: str | None = None
    flavor: str | None = None


class SecretEnv(_Model):
    """An environment variable filled from a secret store, never written in the spec.

    Pods (kubernetes, interlink) take ``secret`` + ``key`` of a Kubernetes Secret; the local
    backend takes an Airflow ``connection`` (its URI, or one ``field`` of it) or an Airflow
    ``variable``, read when the step starts and masked in the task log.
    """

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret: str | None = None
    """Kubernetes Secret name (with ``key``)."""
    key: str | None = None
    connection: str | None = None
    """Airflow connection id."""
    field: Literal["uri", "password", "login", "host", "port", "schema"] = "uri"
    variable: str | None = None
    """Airflow variable key."""

    @property
    def source(self) -> str:
        """How the value is found: ``kubernetes``, ``connection`` or ``variable``."""
        return "connection" if self.connection else "variable" if self.variable else "kubernetes"


class Volume(_Model):
    """A volume mounted into a step's pod."""

    name: str
    type: Literal["emptyDir", "configMap", "secret", "persistentVolumeClaim", "hostPath"]
    mount_path: str
    source: str | None = None
    """ConfigMap / Secret / claim name, or host path."""


class Step(_Model):
    """One task of the workflow."""

    id: str = Field(pattern=_ID)
    description: str = ""
    image: str | None = None
    command: list[str] = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    needs: list[str] = Field(default_factory=list)
    inputs: list[Input] = Field(default_factory=list)
    outputs: list[Output] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[SecretEnv] = Field(default_factory=list)
    resources: Resources | None = None
    target: Target | None = None
    retries: int | None = Field(default=None, ge=0, le=20)
    kubernetes: Kubernetes | None = None
    hpc: Hpc | None = None
    volumes: list[Volume] = Field(default_factory=list)
    mlflow: bool = False
    """The step logs to MLflow: it gets a tracking URI, an experiment and its identity."""
    homepage: str | None = Field(default=None, pattern=_HTTP_URL)
    """Web page of the step's program (the tool's ``url`` in crates)."""
    build: str | None = None
    """Build instructions of the step's image (a Dockerfile), relative to the spec's folder."""


class Defaults(_Model):
    """Workflow-level defaults a step may override."""

    target: Target = "local"
    image: str | None = None
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay_seconds: float = Field(default=5.0, ge=0)
    kubernetes: Kubernetes | None = None
    """Pod settings every kubernetes/interlink step starts from."""
    interlink: Kubernetes | None = None
    """Site overrides of the interLink placement (node selector, tolerations)."""
    hpc: Hpc | None = None
    build: str | None = None
    """Build instructions (a Dockerfile, relative to the spec's folder) of ``image``."""
    homepage: str | None = Field(default=None, pattern=_HTTP_URL)
    """Web page of the step programs, for steps that name none."""


class WorkflowSpec(_Model):
    """A whole workflow spec file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    description: str = ""
    version: str = "0.0.0"
    license: str | None = None
    authors: list[Author] = Field(default_factory=list)
    homepage: str | None = Field(default=None, pattern=_HTTP_URL)
    """Web page of the workflow (its ``url`` in crates)."""
    publisher: Organization | None = None
    """Who publishes the workflow's runs (else the setting ``crate_publisher``)."""
    schedule: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    params: dict[str, Param] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    reproducibility: Reproducibility | None = None

    def with_target(self, target: Target) -> WorkflowSpec:
        """The same workflow with every step on ``target`` (re-checked: images may be needed)."""
        # exclude_unset: a default written back would read as set (``field`` of a secret)
        data = self.model_dump(by_alias=True, exclude_none=True, exclude_unset=True)
        data.setdefault("defaults", {})["target"] = target
        for step in data["steps"]:
            step.pop("target", None)
        spec = WorkflowSpec.model_validate(data)
        # spec_checks imports this module; imported here, when called, not when this one loads
        from twinprov.provenance.spec_checks import semantic_issues

        issues = semantic_issues(spec)
        if issues:
            raise SpecError(f"{self.name} on {target}", issues)
        return spec

    def build_of(self, step: Step) -> str | None:
        """The Dockerfile of the step's image, after workflow defaults (relative path)."""
        return step.build or (self.defaults.build if not step.image else None)

    def homepage_of(self, step: Step) -> str | None:
        """The web page of the step's program, after workflow defaults."""
        return step.homepage or self.defaults.homepage

    def step(self, step_id: str) -> Step:
        """The step with this id."""
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def target_of(self, step: Step) -> Target:
        """The step's execution target, after workflow defaults."""
        return step.target or self.defaults.target

    def image_of(self, step: Step) -> str | None:
        """The step's container image, after workflow defaults."""
        return step.image or self.defaults.image

    def upstream_of(self, step: Step) -> list[str]:
        """Steps this one waits for: its ``needs`` plus the producers of its inputs."""
        ups = list(step.needs)
        for inp in step.inputs:
            producer = inp.from_.split(".", 1)[0]
            if producer != "params" and producer not in ups:
                ups.append(producer)
        return ups

    def topological_order(self) -> list[Step]:
        """Steps in dependency order (``graphlib``; among steps ready together, file order).

        Raises:
            graphlib.CycleError: the steps form a cycle (``load_spec`` refuses such specs).
        """
        position = {s.id: i for i, s in enumerate(self.steps)}
        sorter = graphlib.TopologicalSorter(
            {s.id: [u for u in self.upstream_of(s) if u in position] for s in self.steps}
        )
        sorter.prepare()
        order: list[Step] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=position.__getitem__)
            order += [self.steps[position[i]] for i in ready]
            sorter.done(*ready)
        return order


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of the spec format, generated from the models."""
    return WorkflowSpec.model_json_schema(by_alias=True)


def placeholders(text: str) -> list[str]:
    """The ``${...}`` references in one argv element or env value."""
    return _PLACEHOLDER.findall(text)


def render(text: str, values: dict[str, str]) -> str:
    """Replace ``${params.x}``, ``${inputs.x}``, ``${outputs.x}``, ``${workflow_dir}`` in one
    argv element or env value. The result is one argv element: nothing is ever parsed by a shell.
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
