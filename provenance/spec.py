"""Reading a workflow spec: a YAML file describing one digital-twin workflow.

:func:`load_spec` names every mistake with its field path rather than stopping at the first one:
the pydantic models (:mod:`twinprov.provenance.spec_model`, the single source of truth for the
format) first, then the semantic checks (:mod:`twinprov.provenance.spec_checks`). The public names
of both are re-exported here: ``from twinprov.provenance.spec import WorkflowSpec`` is the way in.
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

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from twinprov.provenance import safe_yaml
from twinprov.provenance.errors import SpecError, SpecIssue
from twinprov.provenance.spec_checks import semantic_issues, suite_candidates
from twinprov.provenance.spec_model import (
    PUBLISH_TASK_ID,
    RERUN_PARAM,
    Author,
    Check,
    Defaults,
    Hpc,
    Input,
    Kubernetes,
    Output,
    Param,
    Reproducibility,
    Resources,
    SecretEnv,
    Step,
    Tolerance,
    Toleration,
    Volume,
    WorkflowSpec,
    placeholders,
    render,
    spec_json_schema,
)


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
    issues = semantic_issues(spec, base_dir)
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
    ``${workflow_dir}``, validation suites (every value of a parametrized suite path) and the
    steps' image build instructions (``build``)."""
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
        build = spec.build_of(step)
        if build:
            found.add(base / build)
        for out in step.outputs:
            if out.validation is not None and out.validation.suite:
                found.update(suite_candidates(spec, out.validation.suite, base))
    return sorted(p.resolve() for p in found if p.is_file() and base in p.resolve().parents)
