"""CWL documents as plain records: what the DAG factory, the runner and the crate need to know.

Airflow-free. A CWL document (a ``CommandLineTool``, an ``ExpressionTool``, a ``Workflow``, or a
``$graph`` with ``#main``) is parsed with ``cwl-utils``; running a tool is left to the reference
implementation (``cwltool``, see :mod:`twinprov.provenance.cwl_exec`). This module also wires a
workflow's data flow between steps: the values a step's ``in`` sources name (``linkMerge``,
``pickValue``), and the workflow's output object from its ``outputSource``s.
"""

from __future__ import annotations

__all__ = [
    "CWL_SCALAR_TYPES",
    "CwlDocument",
    "CwlInput",
    "CwlStep",
    "DagStep",
    "absolutize",
    "cwl_python",
    "dag_steps",
    "describe_values",
    "document_files",
    "job_beside",
    "load_cwl",
    "load_job",
    "step_job",
    "step_name",
    "step_sources",
    "subworkflow_job",
    "subworkflow_of",
    "unsupported_requirements",
    "workflow_outputs",
]

import functools
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from twinprov.provenance.config import setting
from twinprov.provenance.errors import CwlError, CwlUnsupportedError, TwinprovError

CWL_SCALAR_TYPES = {
    "string": "string",
    "int": "integer",
    "long": "integer",
    "float": "number",
    "double": "number",
    "boolean": "boolean",
}
"""CWL's scalar types as JSON Schema types (the trigger form's Params, the crate's params)."""

OUTPUT_FILE = ".twinprov-cwl-output.json"
"""Beside a step's outputs: the CWL output object cwltool printed for it."""


@dataclass(frozen=True)
class CwlInput:
    """A workflow (or tool) input: name, CWL type as written, default, documentation."""

    name: str
    type: Any
    default: Any = None
    doc: str = ""


@dataclass(frozen=True)
class CwlStep:
    """One step of a workflow (or the single step of a tool document)."""

    id: str
    kind: str
    """``CommandLineTool``, ``ExpressionTool``, ``Workflow`` (a subworkflow) or ``Operation``."""
    run: str
    """The process it runs (a URI, or ``<workflow>#<step>`` for an inline ``run``)."""
    upstream: tuple[str, ...] = ()
    image: str | None = None
    """``DockerRequirement.dockerPull`` (or hint), as written."""
    scatter: bool = False
    conditional: bool = False
    doc: str = ""
    docker: str | None = None
    """Where its ``DockerRequirement`` is: ``requirements``, ``hints`` or ``None``."""
    outputs: tuple[tuple[str, str], ...] = ()
    """The process's output ports: (name, CWL type as text)."""
    cores: float | None = None
    """``ResourceRequirement.coresMin`` when written as a number (an expression is evaluated by
    cwltool when the step runs)."""
    ram_mib: float | None = None
    """``ResourceRequirement.ramMin`` (MiB) when written as a number."""


@dataclass(frozen=True)
class CwlDocument:
    """A parsed CWL document, reduced to what twinprov needs."""

    path: Path
    uri: str
    kind: str
    id: str
    label: str
    doc: str
    inputs: tuple[CwlInput, ...]
    steps: tuple[CwlStep, ...]
    cwl_version: str
    obj: Any = field(repr=False, compare=False, default=None)
    graph: tuple[Any, ...] = field(repr=False, compare=False, default=())
    """The processes of the file's ``$graph`` (that its steps' ``run`` may name)."""
    outer: tuple[Any, ...] = field(repr=False, compare=False, default=())
    """For a subworkflow: the steps and workflows around it, innermost first."""

    @property
    def is_workflow(self) -> bool:
        return self.kind == "Workflow"

    @property
    def dag_id(self) -> str:
        """An Airflow-safe DAG id from the file name (``cwl_`` + stem)."""
        return "cwl_" + re.sub(r"[^A-Za-z0-9_.-]", "_", self.path.stem)

    def step(self, step_id: str) -> CwlStep:
        return next(s for s in self.steps if s.id == step_id)


def _frag(uri: str, base: str) -> str:
    """``file:///wf.cwl#main/step1/out`` relative to the process ``file:///wf.cwl#main``."""
    frag = uri.split("#", 1)[1] if "#" in uri else uri
    bfrag = base.split("#", 1)[1] if "#" in base else ""
    if bfrag and frag.startswith(bfrag + "/"):
        frag = frag[len(bfrag) + 1 :]
    return frag


def _short(uri: str) -> str:
    return uri.split("#", 1)[-1].split("/")[-1]


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    return list(x) if isinstance(x, list | tuple) else [x]


def _plain(value: Any) -> Any:
    """A cwl-utils value (saved objects, ruamel maps) as plain JSON data."""
    if hasattr(value, "save"):
        return value.save(top=False)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _docker_group(*processes: Any) -> str | None:
    """``requirements`` if one of ``processes`` (step, tool, workflow) requires Docker, else
    ``hints`` if one hints at it, else ``None``."""
    found = None
    for process in processes:
        for group in ("requirements", "hints"):
            for req in getattr(process, group, None) or []:
                cls = getattr(req, "class_", None) or (
                    req.get("class") if isinstance(req, Mapping) else None
                )
                if cls == "DockerRequirement":
                    if group == "requirements":
                        return group
                    found = group
    return found


def _image(process: Any) -> str | None:
    for group in ("requirements", "hints"):
        for req in getattr(process, group, None) or []:
            cls = getattr(req, "class_", None) or (
                req.get("class") if isinstance(req, Mapping) else None
            )
            if cls == "DockerRequirement":
                pull = getattr(req, "dockerPull", None)
                if pull is None and isinstance(req, Mapping):
                    pull = req.get("dockerPull")
                return str(pull) if pull else None
    return None


def _resource(name: str, *processes: Any) -> float | None:
    """A number of the first ``ResourceRequirement`` (requirement, then hint) of ``processes``
    (step, tool, workflow) that sets ``name``; None if none does or it is an expression."""
    for process in processes:
        for group in ("requirements", "hints"):
            for req in getattr(process, group, None) or []:
                cls = getattr(req, "class_", None) or (
                    req.get("class") if isinstance(req, Mapping) else None
                )
                if cls != "ResourceRequirement":
                    continue
                value = req.get(name) if isinstance(req, Mapping) else getattr(req, name, None)
                if value is not None:
                    return float(value) if isinstance(value, int | float) else None
    return None


def _outputs(process: Any) -> tuple[tuple[str, str], ...]:
    return tuple(
        (_short(str(o.id)), str(_plain(o.type_))) for o in getattr(process, "outputs", None) or []
    )


def _load_uri(uri: str) -> Any:
    """The document at ``uri``; a ``$graph`` comes back whole, as a list of its processes.
    Parsed once per version of the file (cached on its modification time and size)."""
    try:
        st = Path(unquote(urlparse(uri).path)).stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)
    return _load_cached(uri, stamp)


@functools.lru_cache(maxsize=32)
def _load_cached(uri: str, _stamp: tuple[int, int]) -> Any:
    from cwl_utils.parser import load_document_by_uri

    try:
        return load_document_by_uri(uri, load_all=True)
    except Exception as e:
        unsupported = unsupported_requirements(Path(unquote(urlparse(uri).path)))
        if unsupported:
            raise CwlUnsupportedError("; ".join(unsupported)) from e
        raise CwlError(f"{uri}: not a valid CWL document: {e}") from e


@functools.cache
def _known_requirements() -> frozenset[str]:
    """The requirement classes of CWL v1.2 (from cwl-utils' generated classes)."""
    from cwl_utils.parser import cwl_v1_2

    base = cwl_v1_2.ProcessRequirement
    return frozenset(
        name
        for name, c in vars(cwl_v1_2).items()
        if isinstance(c, type) and issubclass(c, base) and c is not base
    )


def unsupported_requirements(path: Path) -> list[str]:
    """``file:line:col: unsupported requirement X`` for every ``requirements`` entry of the
    document (inline processes included) whose class CWL v1.2 does not define; extensions in a
    namespace (``cwltool:...``) are left to cwltool. Line numbers from the YAML as written."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    try:
        data = YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except Exception:
        return []
    known = _known_requirements()
    found: list[str] = []

    def where(node: Any, key: Any = None, index: int | None = None) -> str:
        try:
            if index is not None:
                line, col = node.lc.item(index)
            elif key is not None:
                line, col = node.lc.key(key)
            else:
                line, col = node.lc.line, node.lc.col
        except (AttributeError, KeyError, IndexError, TypeError):
            return f"{path}"
        return f"{path}:{line + 1}:{col + 1}"

    def check(cls: Any, loc: str) -> None:
        if isinstance(cls, str) and ":" not in cls and cls not in known:
            found.append(
                f"{loc}: unsupported requirement {cls} (not a CWL v1.2 requirement; twinprov "
                "runs CWL v1.2 — move it to `hints` if the tool can run without it)"
            )

    def visit(node: Any) -> None:
        if isinstance(node, CommentedMap):
            reqs = node.get("requirements")
            if isinstance(reqs, CommentedSeq):
                for k, r in enumerate(reqs):
                    if isinstance(r, CommentedMap):
                        check(r.get("class"), where(reqs, index=k))
            elif isinstance(reqs, CommentedMap):
                for cls in reqs:
                    check(cls, where(reqs, key=cls))
            for v in node.values():
                visit(v)
        elif isinstance(node, CommentedSeq):
            for v in node:
                visit(v)

    visit(data)
    return found


def _load_run(run: str, graph: list[Any]) -> Any:
    """The process a step's ``run`` names: an entry of this document's ``$graph``, or another
    document (a ``$graph`` entry of it when the reference has a fragment)."""
    for o in graph:
        if str(o.id) == run:
            return o
    base, _, frag = run.partition("#")
    loaded = _load_uri(base)
    if not isinstance(loaded, list):
        return loaded
    want = _short(frag or "main")
    match = [o for o in loaded if _short(str(o.id)) == want]
    if not match:
        raise CwlError(f"{base}: $graph has no process '#{want}'")
    return match[0]


def load_cwl(path: str | Path) -> CwlDocument:
    """Parse a CWL document (``path`` may name a ``$graph`` entry as ``file.cwl#id``).

    Raises:
        CwlError: the document cannot be read or is not valid CWL (the message names the file
            and, where cwl-utils reports it, the line).
    """
    text = str(path)
    fragment = ""
    if "#" in text:
        text, fragment = text.split("#", 1)
    p = Path(text).resolve()
    if not p.is_file():
        raise CwlError(f"{p}: no such CWL document")
    loaded = _load_uri(p.as_uri())
    graph = loaded if isinstance(loaded, list) else [loaded]
    if isinstance(loaded, list):  # a $graph: #main unless another entry is named
        want = fragment or "main"
        match = [o for o in loaded if _short(str(o.id)) == want]
        if not match:
            raise CwlError(f"{p}: $graph has no process '#{want}'")
        loaded = match[0]
    return _document(loaded, p, p.as_uri() + (f"#{fragment}" if fragment else ""), graph)


def _document(
    loaded: Any,
    p: Path,
    doc_uri: str,
    graph: list[Any],
    base: str | None = None,
    outer: tuple[Any, ...] = (),
    cwl_version: str = "v1.2",
) -> CwlDocument:
    """A :class:`CwlDocument` of the cwl-utils process ``loaded`` (of the file ``p``).
    ``base``: the id its own ids are relative to (an inline process has a blank id);
    ``outer``: the steps and workflows around a subworkflow, whose requirements it inherits."""
    kind = type(loaded).__name__
    uri = base or str(loaded.id)
    inputs = tuple(
        CwlInput(
            _short(str(i.id)),
            _plain(i.type_),
            _plain(i.default),
            str(getattr(i, "doc", None) or ""),
        )
        for i in loaded.inputs
    )
    steps: list[CwlStep] = []
    if kind == "Workflow":
        for s in loaded.steps:
            sid = _frag(str(s.id), uri)
            upstream: list[str] = []
            for i in s.in_ or []:
                for src in _as_list(i.source):
                    rel = _frag(str(src), uri)
                    if "/" in rel and rel.split("/")[0] not in upstream:
                        upstream.append(rel.split("/")[0])
            run = s.run
            if isinstance(run, str):
                process = _load_run(run, graph)
                run_ref = run
            else:
                process, run_ref = run, f"{uri}/{sid}"
            steps.append(
                CwlStep(
                    id=sid,
                    kind=type(process).__name__,
                    run=run_ref,
                    upstream=tuple(_safe_id(u) for u in upstream),
                    image=next((i for i in map(_image, (s, process, loaded, *outer)) if i), None),
                    scatter=bool(s.scatter),
                    conditional=bool(getattr(s, "when", None)),
                    doc=str(getattr(s, "doc", None) or getattr(process, "doc", None) or ""),
                    docker=_docker_group(s, process, loaded, *outer),
                    outputs=_outputs(process),
                    cores=_resource("coresMin", s, process, loaded, *outer),
                    ram_mib=_resource("ramMin", s, process, loaded, *outer),
                )
            )
    else:
        steps.append(
            CwlStep(
                id=_short(uri) or "tool",
                kind=kind,
                run=uri,
                image=_image(loaded),
                docker=_docker_group(loaded),
                outputs=_outputs(loaded),
                cores=_resource("coresMin", loaded),
                ram_mib=_resource("ramMin", loaded),
            )
        )
    return CwlDocument(
        path=p,
        uri=doc_uri,
        kind=kind,
        id=uri,
        label=str(getattr(loaded, "label", None) or ""),
        doc=str(getattr(loaded, "doc", None) or ""),
        inputs=inputs,
        steps=tuple(_safe_steps(steps)),
        cwl_version=str(getattr(loaded, "cwlVersion", None) or cwl_version),
        obj=loaded,
        graph=tuple(graph),
        outer=outer,
    )


def _safe_id(frag: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", frag) or "tool"


def _safe_steps(steps: list[CwlStep]) -> list[CwlStep]:
    """Step ids usable as Airflow task ids (a tool document's id may be a file name)."""
    out = []
    for s in steps:
        safe = _safe_id(s.id)
        out.append(CwlStep(**{**s.__dict__, "id": safe}) if safe != s.id else s)
    return out


def document_files(doc: CwlDocument) -> list[Path]:
    """The local files a document runs, beyond itself: the documents its steps' ``run`` name
    (and, for a subworkflow, inline or not, the ones it runs in turn), each once, in step
    order."""
    seen = {doc.path.resolve()}
    visited: set[str] = set()
    out: list[Path] = []

    def visit(process: Any) -> None:
        for s in getattr(process, "steps", None) or []:
            if not isinstance(s.run, str):  # inline: what its own steps run
                visit(s.run)
                continue
            if s.run in visited:
                continue
            visited.add(s.run)
            ref = s.run.split("#", 1)[0]
            if not ref.startswith("file://"):
                continue
            f = Path(unquote(urlparse(ref).path)).resolve()
            if f not in seen and f.is_file():
                seen.add(f)
                out.append(f)
            try:
                visit(_load_run(s.run, list(doc.graph)))
            except CwlError:
                continue  # not CWL: cwltool will say so when the step runs

    visit(doc.obj)
    return out


def job_beside(path: Path) -> Path | None:
    """The job (params) file beside a CWL document: ``<stem>.job.{yml,yaml,json}``."""
    for ext in ("yml", "yaml", "json"):
        candidate = path.with_name(f"{path.stem}.job.{ext}")
        if candidate.is_file():
            return candidate
    return None


def absolutize(value: Any, base: Path) -> Any:
    """File and Directory ``location``/``path`` made absolute against ``base``."""
    if isinstance(value, list):
        return [absolutize(v, base) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: absolutize(v, base) for k, v in value.items()}
    if out.get("class") in ("File", "Directory"):
        loc = out.get("location")
        if isinstance(loc, str) and "://" not in loc and not loc.startswith("_:"):
            # a location is a URI reference (percent-escaped), resolved against the job's URI
            out["location"] = urljoin(base.resolve().as_uri() + "/", loc)
        path = out.get("path")
        if isinstance(path, str) and not os.path.isabs(path):
            out["path"] = str((base / path).resolve())
    return out


def load_job(path: str | Path | None) -> dict[str, Any]:
    """A CWL job (input object) file, File/Directory locations made absolute."""
    if path is None:
        return {}
    import yaml

    p = Path(path).resolve()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CwlError(f"{p}: cannot read the CWL job: {e}") from e
    if not isinstance(data, dict):
        raise CwlError(f"{p}: a CWL job is a mapping of input names to values")
    return dict(absolutize(data, p.parent))


def _merge(values: list[Any], link_merge: str | None, pick: str | None, many: bool) -> Any:
    if not many:
        value = values[0] if values else None
    elif link_merge == "merge_flattened":
        value = []
        for v in values:
            value.extend(v if isinstance(v, list) else [v])
    else:
        value = list(values)
    if pick and isinstance(value, list):
        non_null = [v for v in value if v is not None]
        if pick == "first_non_null":
            if not non_null:
                raise TwinprovError("pickValue first_non_null: all sources are null")
            value = non_null[0]
        elif pick == "the_only_non_null":
            if len(non_null) != 1:
                raise TwinprovError(
                    f"pickValue the_only_non_null: {len(non_null)} non-null sources"
                )
            value = non_null[0]
        else:
            value = non_null
    return value


def _source_value(
    doc: CwlDocument, src: str, job: Mapping[str, Any], outputs: Mapping[str, Any]
) -> Any:
    rel = _frag(src, doc.id)
    if "/" in rel:
        step, name = rel.split("/", 1)
        return (outputs.get(step) or {}).get(name)
    if rel in job and job[rel] is not None:
        return job[rel]
    default = next((i.default for i in doc.inputs if i.name == rel), None)
    return absolutize(default, doc.path.parent)


def step_job(
    doc: CwlDocument, step_id: str, job: Mapping[str, Any], outputs: Mapping[str, Any]
) -> dict[str, Any]:
    """The input object of one workflow step for ``cwltool --single-step``: each ``in`` port's
    value from its sources (``linkMerge``, ``pickValue``); ``default``/``valueFrom`` stay with
    cwltool. ``outputs`` maps an earlier step's id to its output object."""
    raw = _raw_step(doc, step_id)
    out: dict[str, Any] = {}
    for port in raw.in_ or []:
        sources = _as_list(port.source)
        if not sources:
            continue
        values = [_source_value(doc, str(s), job, outputs) for s in sources]
        many = isinstance(port.source, list | tuple) and (
            len(sources) > 1 or port.linkMerge is not None
        )
        value = _merge(values, port.linkMerge, getattr(port, "pickValue", None), many)
        if value is not None:
            out[_short(str(port.id))] = value
    return out


def _raw_step(doc: CwlDocument, step_id: str) -> Any:
    return next(s for s in doc.obj.steps if _safe_id(_frag(str(s.id), doc.id)) == step_id)


def step_name(doc: CwlDocument, step_id: str) -> str:
    """cwltool's name of a step (its id's last part; ``step_id`` is the task-safe one)."""
    return _short(str(_raw_step(doc, step_id).id))


def subworkflow_of(doc: CwlDocument, step_id: str) -> CwlDocument | None:
    """The subworkflow a step runs, when its DAG shows it as a task group (one task per inner
    step); ``None`` when the step stays one task that cwltool runs whole.

    A group is exact when the step's own processing is only passing values on: no ``scatter``,
    no ``when``, no ``valueFrom`` on its inputs (cwltool evaluates those around the whole
    subworkflow). Its ``run`` may be inline, a ``$graph`` entry or another file; the requirements
    it inherits from the step and the workflows around it stay cwltool's (its inner steps run
    as ``--single-step group/step`` of the whole document, see ``cwl_exec.py``)."""
    if not doc.is_workflow:
        return None
    step = doc.step(step_id)
    if step.kind != "Workflow" or step.scatter or step.conditional:
        return None
    raw = _raw_step(doc, step_id)
    if any(getattr(port, "valueFrom", None) is not None for port in raw.in_ or []):
        return None
    outer = (raw, doc.obj, *doc.outer)
    if not isinstance(raw.run, str):  # inline: its ids are the step's, + /run
        return _document(
            raw.run, doc.path, doc.uri, list(doc.graph), f"{raw.id}/run", outer, doc.cwl_version
        )
    file_uri = raw.run.partition("#")[0]
    try:
        process = _load_run(raw.run, list(doc.graph))
        loaded = _load_uri(file_uri)
    except CwlError:
        return None
    path = Path(unquote(urlparse(file_uri).path))
    graph = loaded if isinstance(loaded, list) else [loaded]
    return _document(process, path, raw.run, graph, None, outer, doc.cwl_version)


def subworkflow_job(
    doc: CwlDocument, step_id: str, job: Mapping[str, Any], outputs: Mapping[str, Any]
) -> dict[str, Any]:
    """The input object of the subworkflow a step runs as a task group
    (:func:`subworkflow_of`): its ``in`` ports' values (:func:`step_job`), a port without one
    taking its ``default``; ports the subworkflow has no input for are left out."""
    raw = _raw_step(doc, step_id)
    out = step_job(doc, step_id, job, outputs)
    for port in raw.in_ or []:
        name = _short(str(port.id))
        if out.get(name) is None and getattr(port, "default", None) is not None:
            out[name] = absolutize(_plain(port.default), doc.path.parent)
    sub = subworkflow_of(doc, step_id)
    names = {i.name for i in sub.inputs} if sub is not None else set(out)
    return {k: v for k, v in out.items() if k in names}


@dataclass(frozen=True)
class DagStep:
    """A step as a CWL DAG has it: the steps of a subworkflow shown as a task group come after
    the group's step, with task ids ``<group>.<step>`` (Airflow's task group prefix)."""

    task_id: str
    scope: tuple[str, ...]
    """The ids of the enclosing group steps, outermost first (empty at the top)."""
    doc: CwlDocument
    """The (sub)workflow the step belongs to."""
    step: CwlStep
    group: CwlDocument | None = None
    """The subworkflow, when this step is a task group."""


def dag_steps(doc: CwlDocument, scope: tuple[str, ...] = ()) -> list[DagStep]:
    """The steps of ``doc`` with, after each subworkflow step shown as a task group, the steps
    of its subworkflow (recursively)."""
    out: list[DagStep] = []
    for s in doc.steps:
        sub = subworkflow_of(doc, s.id)
        out.append(DagStep(".".join((*scope, s.id)), scope, doc, s, sub))
        if sub is not None:
            out += dag_steps(sub, (*scope, s.id))
    return out


SCATTER_FILE = ".twinprov-cwl-scatter.json"
"""In a scattered step's folder: its element jobs (see :func:`scatter_plan`)."""


def scatter_plan(doc: CwlDocument, step_id: str, job: Mapping[str, Any]) -> dict[str, Any]:
    """The elements of a scattered step, one job each, for Airflow's dynamic task mapping.

    Element ``k`` is the step's job with each scattered input replaced by a one-element list
    (its ``k``-th value, or the ``k``-th combination for the cross products), so that cwltool,
    given the step, still does the scattering itself: ``valueFrom`` evaluated after the scatter
    with ``self`` the element, ``when`` per element. :func:`gather_scatter` joins the element
    outputs back into the step's. If a scattered input's value is not known here (it only has a
    ``default`` or a ``valueFrom``), the plan has a single element, the whole job, and cwltool
    scatters inside that one task.
    """
    import itertools

    raw = _raw_step(doc, step_id)
    params = [_short(str(p)) for p in _as_list(raw.scatter)]
    method = str(raw.scatterMethod or "dotproduct").rsplit("#", 1)[-1]
    values = {p: job.get(p) for p in params}
    if not params or any(not isinstance(v, list) for v in values.values()):
        return {"params": params, "method": method, "whole": True, "shape": [], "jobs": [dict(job)]}
    lists: list[list[Any]] = [list(values[p] or []) for p in params]
    if method == "dotproduct":
        if len({len(v) for v in lists}) > 1:
            raise TwinprovError(
                f"step {step_id}: dotproduct scatter over inputs of different lengths "
                f"({', '.join(f'{p}: {len(v)}' for p, v in zip(params, lists, strict=True))})"
            )
        combos = [tuple(v[k] for v in lists) for k in range(len(lists[0]))]
        shape = [len(combos)]
    else:
        combos = list(itertools.product(*lists))
        shape = [len(v) for v in lists]
    jobs = [{**job, **{p: [c] for p, c in zip(params, combo, strict=True)}} for combo in combos]
    return {"params": params, "method": method, "whole": False, "shape": shape, "jobs": jobs}


def gather_scatter(
    plan: Mapping[str, Any], ports: list[str], elements: list[Mapping[str, Any]]
) -> dict[str, Any]:
    """A scattered step's output object from its elements' (in element order): each output
    port an array over the elements (nested, one level per scattered input, for
    ``nested_crossproduct``)."""
    if plan.get("whole"):
        return dict(elements[0]) if elements else {}
    depth = len(plan["params"]) if plan["method"] == "nested_crossproduct" else 1

    def unwrap(value: Any) -> Any:
        for _ in range(depth):  # cwltool's output for one-element lists: [o] or [[o]]
            value = value[0] if isinstance(value, list) and value else value
        return value

    def nest(flat: list[Any], shape: list[int]) -> list[Any]:
        if len(shape) <= 1:
            return flat
        size = len(flat) // shape[0] if shape[0] else 0
        return [nest(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]

    out: dict[str, Any] = {}
    for port in ports:
        flat = [unwrap(e.get(port)) for e in elements]
        out[port] = nest(flat, plan["shape"]) if plan["method"] == "nested_crossproduct" else flat
    return out


def step_sources(doc: CwlDocument, step_id: str) -> list[tuple[str, str]]:
    """(in port, source) pairs of a workflow step, sources relative to the workflow
    (``input`` or ``step/output``); none for a tool document."""
    if not doc.is_workflow:
        return []
    raw = _raw_step(doc, step_id)
    return [
        (_short(str(port.id)), _frag(str(src), doc.id))
        for port in raw.in_ or []
        for src in _as_list(port.source)
    ]


def workflow_outputs(
    doc: CwlDocument, job: Mapping[str, Any], outputs: Mapping[str, Any]
) -> dict[str, Any]:
    """The workflow's output object (``outputSource``, ``linkMerge``, ``pickValue``)."""
    if not doc.is_workflow:
        return dict(outputs.get(doc.steps[0].id) or {})
    result: dict[str, Any] = {}
    for o in doc.obj.outputs:
        sources = _as_list(o.outputSource)
        values = [_source_value(doc, str(s), job, outputs) for s in sources]
        many = isinstance(o.outputSource, list | tuple) and (
            len(sources) > 1 or o.linkMerge is not None
        )
        result[_short(str(o.id))] = _merge(values, o.linkMerge, getattr(o, "pickValue", None), many)
    return result


def _local_path(value: Mapping[str, Any]) -> Path | None:
    path = value.get("path")
    if isinstance(path, str):
        return Path(path)
    loc = value.get("location")
    if isinstance(loc, str) and loc.startswith("file://"):
        return Path(unquote(urlparse(loc).path))
    return None


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def directory_digest(path: Path) -> tuple[str, int, int]:
    """A Directory as content: the sha256 of its manifest (one ``<sha256>  <relative path>``
    line per file, sorted), the total size and the number of files."""
    lines: list[str] = []
    total = 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            digest, size = _file_digest(f)
            total += size
            lines.append(f"{digest}  {f.relative_to(path).as_posix()}")
    lines.sort(key=lambda line: line.split("  ", 1)[1])
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), total, len(lines)


def describe_values(
    values: Mapping[str, Any], workspace: Path | None = None
) -> list[dict[str, Any]]:
    """Every File and Directory in a CWL object as a manifest record (name, path, sha256, size,
    media type); a Directory is hashed as the manifest of its files."""
    out: list[dict[str, Any]] = []

    def visit(name: str, v: Any) -> None:
        if isinstance(v, list):
            for k, item in enumerate(v):
                visit(f"{name}[{k}]", item)
            return
        if not isinstance(v, Mapping):
            return
        cls = v.get("class")
        if cls not in ("File", "Directory"):
            for k, item in v.items():
                visit(f"{name}.{k}", item)
            return
        p = _local_path(v)
        rec: dict[str, Any] = {"name": name, "cwl_class": cls}
        if p is not None and p.exists():
            rec["abs_path"] = str(p)
            rel = p
            if workspace is not None:
                try:
                    rel = p.resolve().relative_to(workspace.resolve())
                except ValueError:
                    rel = p
            rec["path"] = str(rel)
            if cls == "File":
                digest, size = _file_digest(p)
                rec.update(sha256=digest, size=size, exists=True)
            else:
                digest, size, count = directory_digest(p)
                rec.update(
                    sha256=digest,
                    size=size,
                    exists=True,
                    files=count,
                    media_type="inode/directory",
                )
        else:
            rec.update(path=str(v.get("location") or ""), sha256=None, size=None, exists=False)
        if v.get("format"):
            rec["format"] = str(v["format"])
        out.append(rec)
        for k, sec in enumerate(v.get("secondaryFiles") or []):
            visit(f"{name}.secondaryFiles[{k}]", sec)

    for key, value in values.items():
        visit(str(key), value)
    return out


def cwl_python() -> str:
    """The Python interpreter that has ``cwltool`` (setting ``cwl_python``).

    cwltool pins ``prov==1.5.1`` while twinprov needs prov 3, so cwltool lives in an environment
    of its own: the setting, else ``.venv-cwl`` at the top of a source checkout, else the
    interpreter of a ``cwltool`` found on ``PATH`` (pipx, Debian's package), else this one.
    """
    configured = setting("cwl_python")
    if configured:
        return configured
    checkout = Path(__file__).resolve().parents[1] / ".venv-cwl" / "bin" / "python"
    if checkout.exists():
        return str(checkout)
    exe = shutil.which("cwltool")
    if exe:
        first = Path(exe).read_bytes()[:200].split(b"\n", 1)[0]
        if first.startswith(b"#!"):
            return first[2:].decode().strip().split()[0]
    return sys.executable


def dump(obj: Any) -> str:
    """JSON text of a CWL object (the form cwl-runner prints)."""
    return json.dumps(obj, indent=4, sort_keys=True)
