"""The workflow spec: a YAML file describing one digital-twin workflow.

The pydantic models below are the single source of truth for the format (``twinprov
validate-spec`` and the README's JSON Schema both come from them). :func:`load_spec` names every
mistake with its field path rather than stopping at the first one.
"""

from __future__ import annotations

__all__ = [
    "Author",
    "Defaults",
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
]

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provenance.errors import SpecError, SpecIssue

Target = Literal["local", "kubernetes", "interlink"]
ParamType = Literal["string", "integer", "number", "boolean"]

_YamlLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ID = r"^[A-Za-z][A-Za-z0-9_]*$"
PUBLISH_TASK_ID = "publish_provenance"
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


class Output(_Model):
    """A file a step writes, relative to the run workspace."""

    name: str = Field(pattern=_ID)
    path: str
    media_type: str


class Resources(_Model):
    """What a step asks for (used by the Kubernetes and HPC targets)."""

    cpu: str | float | None = None
    memory: str | None = None
    gpu: int | None = None


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
    resources: Resources | None = None
    target: Target | None = None
    retries: int | None = Field(default=None, ge=0, le=20)


class Defaults(_Model):
    """Workflow-level defaults a step may override."""

    target: Target = "local"
    image: str | None = None
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay_seconds: float = Field(default=5.0, ge=0)


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
        """Steps in dependency order (ties keep file order)."""
        done: set[str] = set()
        order: list[Step] = []
        pending = list(self.steps)
        while pending:
            ready = [s for s in pending if set(self.upstream_of(s)) <= done]
            if not ready:  # cycles are refused by load_spec; guard anyway
                raise ValueError("cycle in steps")
            for s in ready:
                order.append(s)
                done.add(s.id)
            pending = [s for s in pending if s.id not in done]
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
    if p.enum is not None and d not in p.enum:
        issues.append(SpecIssue(where, f"{d!r} is not one of {p.enum}"))
    if isinstance(d, int | float) and not isinstance(d, bool):
        if p.minimum is not None and d < p.minimum:
            issues.append(SpecIssue(where, f"{d} is below minimum {p.minimum}"))
        if p.maximum is not None and d > p.maximum:
            issues.append(SpecIssue(where, f"{d} is above maximum {p.maximum}"))
    return issues


def _semantic_issues(spec: WorkflowSpec) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for name, p in spec.params.items():
        issues += _check_param(name, p)
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
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[SpecIssue] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for up in graph.get(node, []):
            if state.get(up) == 1:
                cycle = stack[stack.index(up) :] + [up]
                found.append(SpecIssue("steps", "cycle in needs: " + " -> ".join(cycle)))
            elif up not in state:
                visit(up)
        stack.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)
    return found


def parse_spec(text: str, source: str = "<spec>") -> WorkflowSpec:
    """Parse and check a spec from YAML text; raise :class:`SpecError` naming every mistake."""
    try:
        data = yaml.load(text, Loader=_YamlLoader)
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
    issues = _semantic_issues(spec)
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


def render(text: str, values: dict[str, str]) -> str:
    """Replace ``${params.x}``, ``${inputs.x}``, ``${outputs.x}``, ``${workflow_dir}`` in one
    argv element or env value. The result is one argv element: nothing is ever parsed by a shell.
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)
