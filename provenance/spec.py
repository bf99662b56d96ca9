"""The workflow spec: a YAML file describing one digital-twin workflow.

The pydantic models below are the single source of truth for the format (``twinprov
validate-spec`` and the README's JSON Schema both come from them). :func:`load_spec` names every
mistake with its field path rather than stopping at the first one.
"""

from __future__ import annotations

__all__ = [
    "Author",
    "Check",
    "RERUN_PARAM",
    "Reproducibility",
    "Tolerance",
    "Defaults",
    "Hpc",
    "Kubernetes",
    "SecretEnv",
    "Toleration",
    "Volume",
    "Input",
    "Output",
    "Param",
    "Resources",
    "Step",
    "WorkflowSpec",
    "load_spec",
    "parse_spec",
    "PUBLISH_TASK_ID",
    "placeholders",
    "render",
    "spec_digest",
    "spec_json_schema",
    "workflow_files",
]

import graphlib
import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twinprov.provenance import safe_yaml
from twinprov.provenance.errors import SpecError, SpecIssue

Target = Literal["local", "kubernetes", "interlink"]
ParamType = Literal["string", "integer", "number", "boolean"]

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ID = r"^[A-Za-z][A-Za-z0-9_]*$"
PUBLISH_TASK_ID = "publish_provenance"
RERUN_PARAM = "rerun_of"
"""The param every generated DAG has: which run this run re-runs (empty for a normal run)."""
"""Task id of the final publication task every generated DAG ends with (reserved)."""
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_REF = re.compile(r"^(params|inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Author(_Model):
    """A person credited for the workflow."""

    name: str
    orcid: str | None = None
    email: str | None = None
    affiliation: str | None = None


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


class WorkflowSpec(_Model):
    """A whole workflow spec file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    description: str = ""
    version: str = "0.0.0"
    license: str | None = None
    authors: list[Author] = Field(default_factory=list)
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
        issues = _semantic_issues(spec)
        if issues:
            raise SpecError(f"{self.name} on {target}", issues)
        return spec

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


def _loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _pydantic_issues(err: ValidationError) -> list[SpecIssue]:
    issues = []
    for e in err.errors():
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        issues.append(SpecIssue(_loc(e["loc"]), msg))
    return issues


def placeholders(text: str) -> list[str]:
    """The ``${...}`` references in one argv element or env value."""
    return _PLACEHOLDER.findall(text)


def _unsafe_path(path: str) -> str | None:
    if not path or path.strip() != path:
        return "must be a non-empty relative path"
    p = PurePosixPath(path)
    if p.is_absolute() or re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("~"):
        return "must be relative to the run workspace, not absolute"
    if ".." in p.parts or "\\" in path:
        return "must not leave the run workspace ('..')"
    return None


def _check_param(name: str, p: Param) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    where = f"params.{name}.default"
    py = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}[p.type]
    d = p.default
    if isinstance(d, bool) and p.type != "boolean" or not isinstance(d, py):
        issues.append(SpecIssue(where, f"{d!r} is not of type {p.type}"))
    if p.enum is not None and not p.enum:
        issues.append(SpecIssue(f"params.{name}.enum", "is empty: list at least one value"))
    elif p.enum is not None and d not in p.enum:
        issues.append(SpecIssue(where, f"{d!r} is not one of {p.enum}"))
    if isinstance(d, int | float) and not isinstance(d, bool):
        if p.minimum is not None and d < p.minimum:
            issues.append(SpecIssue(where, f"{d} is below minimum {p.minimum}"))
        if p.maximum is not None and d > p.maximum:
            issues.append(SpecIssue(where, f"{d} is above maximum {p.maximum}"))
    return issues


_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
_CPU = re.compile(r"^\d+(\.\d+)?m?$")
_SECRETISH = re.compile(
    r"(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)"
)
_INTERLINK_VOLUMES = {"emptyDir", "configMap", "secret"}


def _image_issue(image: str | None) -> str | None:
    if not image:
        return "a container image is required for this target"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image '{image}' has neither a tag nor a digest (write name:tag or name@sha256:…)"
    return None


def _suite_candidates(spec: WorkflowSpec, suite: str, base_dir: Path) -> list[Path]:
    """Every suite file a (possibly parametrized) suite path can name."""
    refs = [_REF.match(r) for r in placeholders(suite)]
    names = [m.group(2) for m in refs if m and m.group(1) == "params" and m.group(2) in spec.params]
    if len(names) != len(refs):
        return []
    if not names:
        return [base_dir / suite]
    import itertools

    choices = []
    for name in names:
        p = spec.params[name]
        choices.append([str(v) for v in p.enum] if p.enum is not None else [str(p.default)])
    out = []
    for combo in itertools.product(*choices):
        values = {f"params.{n}": v for n, v in zip(names, combo, strict=True)}
        out.append(base_dir / render(suite, values))
    return out


def _secret_issues(where: str, sec: SecretEnv, target: str) -> list[SpecIssue]:
    kube = sec.secret is not None or sec.key is not None
    given = [kube, sec.connection is not None, sec.variable is not None]
    if sum(given) != 1:
        return [SpecIssue(where, "give exactly one of 'secret' + 'key', 'connection', 'variable'")]
    if kube and (sec.secret is None or sec.key is None):
        return [SpecIssue(where, "a Kubernetes Secret needs both 'secret' and 'key'")]
    if target == "local" and kube:
        return [
            SpecIssue(
                where,
                "the local backend cannot read a Kubernetes Secret; use 'connection:' or "
                "'variable:' (Airflow's secrets)",
            )
        ]
    if target != "local" and not kube:
        return [
            SpecIssue(
                where,
                f"a {target} step cannot take an Airflow {sec.source} (its value would be written "
                "into the pod spec); put it in a Kubernetes Secret and use 'secret:' + 'key:'",
            )
        ]
    if sec.connection is None and "field" in sec.model_fields_set:
        return [SpecIssue(f"{where}.field", "only with 'connection:'")]
    return []


def _step_issues(spec: WorkflowSpec, i: int, s: Step, base_dir: Path | None) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    where = f"steps[{i}]"
    target = spec.target_of(s)
    for j, o in enumerate(s.outputs):
        check = o.validation
        if check is None:
            continue
        cw = f"{where}.outputs[{j}].validation"
        if (check.suite is None) == (check.expectations is None):
            issues.append(SpecIssue(cw, "give either 'suite' (a file) or 'expectations'"))
        elif check.suite is not None and base_dir is not None:
            for suite in _suite_candidates(spec, check.suite, base_dir):
                if not suite.is_file():
                    issues.append(SpecIssue(f"{cw}.suite", f"suite file {suite} does not exist"))
            for ref in placeholders(check.suite):
                m = _REF.match(ref)
                if not m or m.group(1) != "params" or m.group(2) not in spec.params:
                    issues.append(
                        SpecIssue(
                            f"{cw}.suite", f"only ${{params.NAME}} may be used, not '${{{ref}}}'"
                        )
                    )
    for key, value in s.env.items():
        if _SECRETISH.search(key.upper()) and not placeholders(value):
            issues.append(
                SpecIssue(
                    f"{where}.env.{key}",
                    "looks like a secret written inline; use 'secrets:' (a Kubernetes Secret)",
                )
            )
    if s.resources is not None:
        if s.resources.memory is not None and not _QUANTITY.match(s.resources.memory):
            issues.append(
                SpecIssue(
                    f"{where}.resources.memory",
                    f"'{s.resources.memory}' is not a quantity like 512Mi or 4Gi",
                )
            )
        if s.resources.cpu is not None and not _CPU.match(str(s.resources.cpu)):
            issues.append(
                SpecIssue(f"{where}.resources.cpu", f"'{s.resources.cpu}' is not like 2 or 500m")
            )
    for k, sec in enumerate(s.secrets):
        issues += _secret_issues(f"{where}.secrets[{k}]", sec, target)
    if target == "local":
        for field in ("volumes", "kubernetes", "hpc"):
            if getattr(s, field):
                issues.append(
                    SpecIssue(f"{where}.{field}", "only for the kubernetes and interlink targets")
                )
        return issues
    bad = _image_issue(spec.image_of(s))
    if bad:
        issues.append(SpecIssue(f"{where}.image", bad))
    hpc = s.hpc or spec.defaults.hpc
    if hpc is not None and hpc.walltime is not None and not _WALLTIME.match(hpc.walltime):
        issues.append(
            SpecIssue(f"{where}.hpc.walltime", f"'{hpc.walltime}' is not HH:MM:SS or D-HH:MM:SS")
        )
    if target == "kubernetes" and s.hpc is not None:
        issues.append(SpecIssue(f"{where}.hpc", "only for the interlink target"))
    if target == "interlink":
        for k, v in enumerate(s.volumes):
            if v.type not in _INTERLINK_VOLUMES:
                issues.append(
                    SpecIssue(
                        f"{where}.volumes[{k}].type",
                        f"interLink serves only {', '.join(sorted(_INTERLINK_VOLUMES))} volumes, "
                        f"not {v.type}",
                    )
                )
    return issues


_PRESETS = {
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
}


def _schedule_issue(where: str, schedule: str | None) -> SpecIssue | None:
    if schedule is None or schedule in _PRESETS:
        return None
    from croniter import croniter

    if croniter.is_valid(schedule):
        return None
    return SpecIssue(
        where, f"'{schedule}' is neither a preset ({', '.join(sorted(_PRESETS))}) nor a cron line"
    )


def _semantic_issues(spec: WorkflowSpec, base_dir: Path | None = None) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for where, schedule in (
        ("schedule", spec.schedule),
        (
            "reproducibility.schedule",
            spec.reproducibility.schedule if spec.reproducibility else None,
        ),
    ):
        wrong = _schedule_issue(where, schedule)
        if wrong is not None:
            issues.append(wrong)
    for i, s in enumerate(spec.steps):
        issues += _step_issues(spec, i, s, base_dir)
    for name, p in spec.params.items():
        issues += _check_param(name, p)
        if name == RERUN_PARAM:
            issues.append(SpecIssue(f"params.{name}", "reserved: every workflow has it (reruns)"))
    ids = [s.id for s in spec.steps]
    seen: set[str] = set()
    outputs: dict[str, set[str]] = {}
    paths: dict[str, str] = {}
    for i, s in enumerate(spec.steps):
        where = f"steps[{i}]"
        if s.id == PUBLISH_TASK_ID:
            issues.append(SpecIssue(f"{where}.id", f"'{s.id}' is reserved for the publish task"))
        if s.id in seen:
            issues.append(SpecIssue(f"{where}.id", f"duplicate step id '{s.id}'"))
        seen.add(s.id)
        names: set[str] = set()
        for j, o in enumerate(s.outputs):
            if o.name in names:
                issues.append(SpecIssue(f"{where}.outputs[{j}].name", f"duplicate '{o.name}'"))
            names.add(o.name)
            bad = _unsafe_path(o.path)
            if bad:
                issues.append(SpecIssue(f"{where}.outputs[{j}].path", f"'{o.path}' {bad}"))
            elif str(PurePosixPath(o.path)) in paths:
                other = paths[str(PurePosixPath(o.path))]
                issues.append(
                    SpecIssue(
                        f"{where}.outputs[{j}].path", f"'{o.path}' is also written by {other}"
                    )
                )
            else:
                paths[str(PurePosixPath(o.path))] = s.id
        outputs.setdefault(s.id, set()).update(names)
    for i, s in enumerate(spec.steps):
        where = f"steps[{i}]"
        for j, need in enumerate(s.needs):
            if need not in ids:
                issues.append(SpecIssue(f"{where}.needs[{j}]", f"no step '{need}'"))
            elif need == s.id:
                issues.append(SpecIssue(f"{where}.needs[{j}]", "a step cannot need itself"))
        in_names: set[str] = set()
        for j, inp in enumerate(s.inputs):
            iw = f"{where}.inputs[{j}].from"
            if inp.name in in_names:
                issues.append(SpecIssue(f"{where}.inputs[{j}].name", f"duplicate '{inp.name}'"))
            in_names.add(inp.name)
            src, _, item = inp.from_.partition(".")
            if not item:
                issues.append(
                    SpecIssue(iw, f"'{inp.from_}' must be 'STEP.OUTPUT' or 'params.NAME'")
                )
            elif src == "params":
                if item not in spec.params:
                    issues.append(SpecIssue(iw, f"no param '{item}' provides '{inp.name}'"))
            elif src not in ids:
                issues.append(SpecIssue(iw, f"no step '{src}' provides '{inp.name}'"))
            elif src == s.id:
                issues.append(SpecIssue(iw, "a step cannot read its own output"))
            elif item not in outputs.get(src, set()):
                issues.append(SpecIssue(iw, f"step '{src}' has no output '{item}'"))
        refs = {"params": set(spec.params), "inputs": in_names, "outputs": outputs.get(s.id, set())}
        texts = [(f"command[{k}]", t) for k, t in enumerate(s.command)]
        texts += [(f"args[{k}]", t) for k, t in enumerate(s.args)]
        texts += [(f"env.{k}", t) for k, t in s.env.items()]
        for field, text in texts:
            for ref in placeholders(text):
                m = _REF.match(ref)
                if ref == "workflow_dir":
                    continue
                if not m:
                    issues.append(
                        SpecIssue(f"{where}.{field}", f"unknown placeholder '${{{ref}}}'")
                    )
                elif m.group(2) not in refs[m.group(1)]:
                    kind = m.group(1)[:-1]
                    issues.append(
                        SpecIssue(f"{where}.{field}", f"'${{{ref}}}': no {kind} '{m.group(2)}'")
                    )
    issues += _cycle_issues(spec, set(ids))
    return issues


def _cycle_issues(spec: WorkflowSpec, ids: set[str]) -> list[SpecIssue]:
    graph = {s.id: [u for u in spec.upstream_of(s) if u in ids and u != s.id] for s in spec.steps}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        cycle = list(reversed(e.args[1]))  # graphlib names it from the waiting end
        return [SpecIssue("steps", "cycle in needs: " + " -> ".join(cycle))]
    return []


def parse_spec(text: str, source: str = "<spec>") -> WorkflowSpec:
    """Parse and check a spec from YAML text; raise :class:`SpecError` naming every mistake."""
    try:
        data = safe_yaml.load(text, source)  # size and alias limits: SpecError
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(source, [SpecIssue(where, f"not valid YAML: {problem}")]) from e
    if not isinstance(data, dict):
        raise SpecError(source, [SpecIssue("", "a spec must be a YAML mapping")])
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(source, _pydantic_issues(e)) from e
    base_dir = Path(source).resolve().parent if not source.startswith("<") else None
    issues = _semantic_issues(spec, base_dir)
    if issues:
        raise SpecError(source, issues)
    return spec


def load_spec(path: str | Path) -> WorkflowSpec:
    """Read and check a spec file (cached while the file is unchanged; specs are immutable)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise SpecError(str(p), [SpecIssue("", f"cannot read file: {e.strerror}")]) from e
    safe_yaml.check_size(st.st_size, str(p))
    return _load_cached(str(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _load_cached(path: str, _mtime_ns: int, _size: int) -> WorkflowSpec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(path, [SpecIssue("", f"cannot read file: {e.strerror}")]) from e
    return parse_spec(text, path)


def spec_digest(path: str | Path) -> str:
    """sha256 of the spec file's bytes."""
    p = Path(path)
    st = p.stat()
    return _digest_cached(str(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _digest_cached(path: str, _mtime_ns: int, _size: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def workflow_files(spec: WorkflowSpec, spec_path: Path) -> list[Path]:
    """Files beside the spec that the workflow uses: step programs named through
    ``${workflow_dir}`` and validation suites (every value of a parametrized suite path)."""
    base = Path(spec_path).resolve().parent
    found: set[Path] = set()
    for step in spec.steps:
        for text in [*step.command, *step.args, *step.env.values()]:
            if "${workflow_dir}" not in text:
                continue
            rendered = text.replace("${workflow_dir}", str(base))
            if placeholders(rendered):
                continue
            found.add(Path(rendered))
        for out in step.outputs:
            if out.validation is not None and out.validation.suite:
                found.update(_suite_candidates(spec, out.validation.suite, base))
    return sorted(p.resolve() for p in found if p.is_file() and base in p.resolve().parents)


def render(text: str, values: dict[str, str]) -> str:
    """Replace ``${params.x}``, ``${inputs.x}``, ``${outputs.x}``, ``${workflow_dir}`` in one
    argv element or env value. The result is one argv element: nothing is ever parsed by a shell.
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
