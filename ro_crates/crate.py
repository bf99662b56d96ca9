"""One run → a Workflow Run RO-Crate conforming to Provenance Run Crate 0.5 (``rocrate``).

The crate (RO-Crate 1.1, with the ``workflow-run`` terms) holds:

* the spec as main entity (``File``, ``SoftwareSourceCode``, ``ComputationalWorkflow``,
  ``HowTo``) under ``workflow/``, beside the step programs its commands run;
* per step a ``HowToStep`` (``position`` in dependency order) whose ``workExample`` is the
  step's tool, a ``SoftwareApplication`` with its ``FormalParameter`` inputs and outputs and
  the container image it declares;
* the engine (twinprov, which requires Apache Airflow) and an ``OrganizeAction`` for its work,
  whose ``object`` is one ``ControlAction`` per step and whose ``result`` is the workflow run,
  a ``CreateAction`` with the parameter values and the data read (``object``) and written
  (``result``);
* one ``CreateAction`` per task try (tool as ``instrument``, inputs, outputs, times, status,
  error, container image, resource usage);
* every file under ``workspace/`` (its path in the run workspace) with ``sha256``,
  ``contentSize`` and ``encodingFormat``; files above the copy threshold are referenced by
  their absolute ``file://`` URI instead; bytes overwritten since the run are described
  without a payload (``#sha256-…``);
* the PROV files (``about`` the run) and data-quality reports (``about`` their file).

Identifiers are derived from names, never random, and lists are sorted, so building the same
input twice yields the same ``ro-crate-metadata.json`` except ``datePublished``. The crate is
written to a temporary sibling folder and renamed into place.
"""

from __future__ import annotations

__all__ = [
    "ACTION_STATUS",
    "PROFILES",
    "CrateBuild",
    "build_crate",
    "write_crate",
]

import functools
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from rocrate.model.contextentity import ContextEntity
from rocrate.model.entity import Entity
from rocrate.model.file import File
from rocrate.model.metadata import Metadata
from rocrate.model.preview import Preview
from rocrate.rocrate import ROCrate

from twinprov.provenance.ids import VOCAB, CrateIds
from twinprov.ro_crates.errors import CrateInputError, CrateWriteError, SpecChangedError
from twinprov.ro_crates.hashing import FileDigest, default_workers, hash_files
from twinprov.ro_crates.images import parse_image
from twinprov.ro_crates.model import CrateInput, FileRecord, StepSpec, TaskTry

log = logging.getLogger(__name__)

PROFILES: tuple[tuple[str, str, str], ...] = (
    ("https://w3id.org/ro/wfrun/process/0.5", "Process Run Crate", "0.5"),
    ("https://w3id.org/ro/wfrun/workflow/0.5", "Workflow Run Crate", "0.5"),
    ("https://w3id.org/ro/wfrun/provenance/0.5", "Provenance Run Crate", "0.5"),
    ("https://w3id.org/workflowhub/workflow-ro-crate/1.0", "Workflow RO-Crate", "1.0"),
)
"""The profiles the crate's root ``conformsTo``: (permalink, name, version)."""

RO_CRATE_SPEC = "https://w3id.org/ro/crate/1.1"
WROC_PROFILE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
FORMAL_PARAMETER_PROFILE = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"

ACTION_STATUS = {
    "completed": "http://schema.org/CompletedActionStatus",
    "failed": "http://schema.org/FailedActionStatus",
    "active": "http://schema.org/ActiveActionStatus",
}
"""Values of ``actionStatus`` (plain IRI strings, as the profile's checks expect)."""

_PARAM_TYPES = {"string": "Text", "integer": "Integer", "number": "Number", "boolean": "Boolean"}
_QUDT = "https://qudt.org/vocab/unit/"
_USAGE_TERMS = {
    "cpu_user_s": ("cpuUserSeconds", _QUDT + "SEC"),
    "cpu_system_s": ("cpuSystemSeconds", _QUDT + "SEC"),
    "duration_s": ("durationSeconds", _QUDT + "SEC"),
    "max_rss_kb": ("maxRssKilobytes", _QUDT + "KibiBYTE"),
}
_PROV_FORMATS = {
    ".json": ("application/json", "https://www.w3.org/Submission/prov-json/", "PROV-JSON"),
    ".provn": ("text/provenance-notation", "https://www.w3.org/TR/prov-n/", "PROV-N"),
    ".ttl": ("text/turtle", "https://www.w3.org/TR/prov-o/", "PROV-O"),
    ".jsonld": ("application/ld+json", "https://www.w3.org/TR/prov-o/", "PROV-O"),
}
_SPDX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_SUCCESS_STATES = frozenset({"success", "skipped"})
_COPY_BATCH = 64


# -- small helpers ------------------------------------------------------------------------------


def _q(part: object) -> str:
    return _quote(str(part))


@functools.lru_cache(maxsize=65536)
def _quote(part: str) -> str:
    return quote(part, safe="-._~")


def _ref(ident: str) -> dict[str, str]:
    return {"@id": ident}


def _refs(idents: Iterable[str]) -> dict[str, str] | list[dict[str, str]] | None:
    """References to ``idents`` (order kept, duplicates dropped); one value is not a list."""
    unique = list(dict.fromkeys(idents))
    if not unique:
        return None
    return _ref(unique[0]) if len(unique) == 1 else [_ref(i) for i in unique]


def _time(value: str | None) -> str | None:
    """ISO 8601 in UTC with millisecond precision and a ``+00:00`` offset (what checks accept)."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def _earliest(values: Iterable[str | None]) -> str | None:
    times = [t for t in (_time(v) for v in values) if t]
    return min(times) if times else None


def _latest(values: Iterable[str | None]) -> str | None:
    times = [t for t in (_time(v) for v in values) if t]
    return max(times) if times else None


def _status(state: str) -> str:
    if state in _SUCCESS_STATES:
        return ACTION_STATUS["completed"]
    if state in ("failed", "up_for_retry", "upstream_failed", "interrupted"):
        return ACTION_STATUS["failed"]
    return ACTION_STATUS["active"]


def _size(path: str | Path) -> str | None:
    try:
        return str(Path(path).stat().st_size)
    except OSError:
        return None


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _literal(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# -- the build ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrateBuild:
    """What one crate build did, and how long its parts took."""

    path: Path
    seconds: float
    hash_seconds: float
    """Wall time spent hashing (verifying) the files the crate describes."""
    bytes_hashed: int
    files_copied: int
    files_referenced: int
    files_missing: int
    """Files whose recorded bytes are no longer on disk (described, not shipped)."""
    hash_workers: int = 1
    phases: Mapping[str, float] = field(default_factory=dict)
    """Seconds per phase: ``hash``; ``copy`` (payload, in the background while describing) and
    ``copy_wait`` (the part of it that was not hidden); ``describe``; ``write`` (metadata,
    preview)."""
    digests: tuple[FileDigest, ...] = field(default=(), repr=False)


@dataclass
class _Data:
    """One data entity: the bytes a record names, and what the crate does with them."""

    ident: str
    record: FileRecord
    mode: str  # "copy", "reference" or "missing"
    dest: str | None = None  # crate-relative path (copy)
    example_of: list[str] = field(default_factory=list)


def _copy_file(src: Path, dst: Path) -> None:
    """Copy bytes in the kernel (``sendfile``), with little Python work per file."""
    fin = os.open(src, os.O_RDONLY)
    try:
        fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            size = os.fstat(fin).st_size
            offset = 0
            while offset < size:
                try:
                    sent = os.sendfile(fout, fin, offset, size - offset)
                except OSError:  # no sendfile between these two (rare): copy in Python
                    os.close(fout)
                    fout = -1
                    shutil.copyfile(src, dst)
                    return
                if sent == 0:
                    break
                offset += sent
        finally:
            if fout >= 0:
                os.close(fout)
    finally:
        os.close(fin)


def _safe_rel(rel: str | None) -> str | None:
    if not rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in rel:
        return None
    return p.as_posix()


class _PlacedFile(File):  # type: ignore[misc]
    """A data entity whose bytes the builder already put in the crate folder (no copy)."""

    def write(self, base_path: Any) -> None:
        return None


PRETTY_MAX_ENTITIES = 5000
"""Larger graphs are written one entity per line (the indenting JSON encoder is pure Python)."""


class _Metadata(Metadata):  # type: ignore[misc]
    """``ro-crate-metadata.json`` as rocrate generates it, serialized fast when it is large."""

    def stream(self, chunk_size: int = 8192) -> Any:
        content = self.generate()
        graph = content["@graph"]
        if len(graph) <= PRETTY_MAX_ENTITIES:
            text = json.dumps(content, indent=4, sort_keys=True, ensure_ascii=False)
        else:
            context = json.dumps(content["@context"], ensure_ascii=False)
            entities = ",\n".join(json.dumps(e, sort_keys=True, ensure_ascii=False) for e in graph)
            text = f'{{"@context": {context},\n"@graph": [\n{entities}\n]}}\n'
        yield self.id, text.encode("utf-8")


@functools.cache
def preview_template() -> Any:
    """rocrate's preview template, compiled once per process (rocrate compiles it for every
    crate it writes: a few ms of Jinja each time). Compiled in the scheduler, before the
    executor forks, by the listener's preload."""
    import rocrate.model.preview as rocrate_preview
    from jinja2 import Template

    path = Path(rocrate_preview.__file__).parent.parent / "templates" / "preview_template.html.j2"
    template = Template(path.read_text(encoding="utf-8"))

    def stringify(a: Any) -> Any:  # rocrate's own template functions, as it defines them
        if type(a) is list:
            return ", ".join(a)
        elif type(a) is str:
            return a
        else:
            if a._jsonld and a._jsonld["name"]:
                return a._jsonld["name"]
            else:
                return str(a)

    def is_object_list(a: Any) -> bool:
        if type(a) is list:
            for obj in a:
                if obj is not str:
                    return True
        return False

    template.globals["stringify"] = stringify
    template.globals["is_object_list"] = is_object_list
    return template


class _Preview(Preview):  # type: ignore[misc]
    """``ro-crate-preview.html`` as rocrate renders it, from the template compiled once."""

    def generate_html(self) -> str:
        context = [e._jsonld for e in self.crate.contextual_entities]
        data = [e._jsonld for e in self.crate.data_entities]
        return str(preview_template().render(crate=self.crate, context=context, data=data))


_PLAIN_PATH = re.compile(r"[A-Za-z0-9_~%!$&'()*+,=@.-]+(?:/[A-Za-z0-9_~%!$&'()*+,=@.-]+)*/?")
_DOT_SEGMENT = re.compile(r"/\.\.?/")


class _Crate(ROCrate):  # type: ignore[misc]
    """rocrate's ``ROCrate``, resolving simple identifiers without ``urljoin``.

    Every add and lookup resolves the identifier against the crate's ``arcp://`` base; for a
    fragment, or a relative path of plain segments (no ``.``/``..``, no ``?``/``;``/``:``),
    that is concatenation, and ``urljoin`` dominated the build of large crates.
    """

    def resolve_id(self, id_: str) -> str:
        if id_.startswith("#") or (
            _PLAIN_PATH.fullmatch(id_) and not _DOT_SEGMENT.search(f"/{id_}/")
        ):
            return str(self.arcp_base_uri + id_).rstrip("/")
        return str(super().resolve_id(id_))


class _Builder:
    def __init__(self, data: CrateInput, root: Path, threshold: int, workers: int) -> None:
        self.data = data
        self.root = root
        self.threshold = threshold
        self.workers = workers
        self.crate = _Crate(version="1.1", gen_preview=True)
        self.crate.preview.__class__ = _Preview  # same entity, same place in the graph
        metadata = _Metadata(
            self.crate, properties={"about": self.crate.root_dataset}, version="1.1"
        )
        self.crate.add(metadata)
        self.crate.metadata.extra_contexts.append(WFRUN_CONTEXT)
        self.wf = data.workflow
        self.steps = {s.id: s for s in self.wf.steps}
        self.tries = sorted(
            (t for t in data.tries if t.ran),
            key=lambda t: (self.steps[t.task_id].position, t.task_id, t.map_index, t.try_number),
        )
        self.files: dict[tuple[str, str], _Data] = {}
        self.by_id: dict[str, _Data] = {}
        self.copied = 0
        self.referenced = 0
        self.missing = 0
        self.hash_seconds = 0.0
        self.bytes_hashed = 0
        self.digests: tuple[FileDigest, ...] = ()
        self.mentions: list[str] = []
        self.param_values: list[str] = []
        self.main_id = ""
        self.phases: dict[str, float] = {}
        self.copies: list[Any] = []
        self.copy_started = 0.0
        self.spec_size = 0

    # ---- entities ----

    # Property values below are already JSON-LD (references are ``{"@id": …}``), so they go
    # straight into the entity's dictionary rather than through rocrate's per-key conversion.

    def add(self, ident: str, types: str | list[str], props: Mapping[str, Any]) -> Entity:
        """A contextual entity."""
        entity = ContextEntity(self.crate, ident)
        jsonld = entity.properties()
        jsonld["@type"] = types
        jsonld.update((k, v) for k, v in props.items() if v is not None and v != [] and v != "")
        return self.crate.add(entity)

    def add_file(self, source: Path | str, dest: str | None, props: Mapping[str, Any]) -> Entity:
        """A data entity: ``source`` already copied to ``dest`` in the crate, or a URI."""
        entity = _PlacedFile(self.crate, source=source, dest_path=dest)
        jsonld = entity.properties()
        for k, v in props.items():
            if v is not None and v != [] and v != "":
                jsonld[k] = v
        return self.crate.add(entity)

    # ---- identifiers ----

    @staticmethod
    def step_id(step: str) -> str:
        return CrateIds.step(step)

    @staticmethod
    def tool_id(step: str) -> str:
        return CrateIds.tool(step)

    @staticmethod
    def tool_param(step: str, kind: str, name: str) -> str:
        return CrateIds.tool_param(step, kind, name)

    @staticmethod
    def wf_param(name: str) -> str:
        return f"#param/{_q(name)}"

    @staticmethod
    def wf_output(step: str, name: str) -> str:
        return f"#output/{_q(step)}/{_q(name)}"

    @staticmethod
    def pv_id(name: str) -> str:
        return f"#pv/{_q(name)}"

    @staticmethod
    def try_id(t: TaskTry) -> str:
        return CrateIds.task_try(t.task_id, t.map_index, t.try_number)

    def person_id(self, name: str, orcid: str | None = None) -> str:
        if orcid:
            return orcid if orcid.startswith("http") else f"https://orcid.org/{orcid}"
        return f"#person/{_q(name)}"

    # ---- the plan: which bytes go where ----

    def plan_files(self) -> None:
        declared = {s.id: {o.name for o in s.outputs} for s in self.wf.steps}
        for t in self.tries:
            step = self.steps[t.task_id]
            for rec in t.inputs:
                d = self._data(rec)
                d.example_of.append(self.tool_param(step.id, "in", rec.name))
            for rec in t.outputs:
                d = self._data(rec)
                if rec.name in declared[step.id]:
                    d.example_of.append(self.wf_output(step.id, rec.name))
                d.example_of.append(self.tool_param(step.id, "out", rec.name))

    def _data(self, rec: FileRecord) -> _Data:
        key = (str(rec.path), rec.sha256)
        d = self.files.get(key)
        if d is None:
            d = _Data(ident="", record=rec, mode="")
            self.files[key] = d
        return d

    def verify_and_place(self) -> None:
        """Hash every file on disk the crate describes; decide copy / reference / missing."""
        paths = sorted({Path(k[0]) for k in self.files})
        extra = [self.wf.spec_path, *(s.path for s in self.wf.sources)]
        t0 = time.perf_counter()
        digests = hash_files([*paths, *extra], workers=self.workers)
        self.hash_seconds = time.perf_counter() - t0
        self.digests = tuple(digests)
        self.bytes_hashed = sum(d.size or 0 for d in digests)
        found = {d.path: d for d in digests}
        spec = found[self.wf.spec_path]
        self.spec_size = spec.size or 0
        if spec.sha256 is None:
            where = self.wf.spec_path
            raise CrateInputError(f"cannot read the workflow spec {where}: {spec.error}")
        if spec.sha256 != self.wf.spec_sha256:
            raise SpecChangedError(str(self.wf.spec_path), self.wf.spec_sha256, spec.sha256)
        for s in self.wf.sources:
            got = found[s.path]
            if got.sha256 != s.sha256:
                raise CrateInputError(
                    f"the step program {s.path} changed or vanished while the crate was built"
                )
        for key in sorted(self.files):
            d = self.files[key]
            rec = d.record
            digest = found.get(rec.path)
            if digest is None or digest.sha256 != rec.sha256:
                d.mode, d.ident = "missing", f"#sha256-{rec.sha256}"
            elif rec.size > self.threshold:
                d.mode, d.ident = "reference", rec.path.resolve().as_uri()
            else:
                rel = _safe_rel(rec.rel_path)
                dest = (
                    f"workspace/{rel}"
                    if rel
                    else f"inputs/{rec.sha256[:16]}/{rec.path.name or 'file'}"
                )
                d.mode, d.dest, d.ident = "copy", dest, quote(dest)
            other = self.by_id.get(d.ident)
            if other is not None and other is not d:
                if other.record.sha256 != rec.sha256:  # two contents claim one path
                    d.mode, d.dest, d.ident = "missing", None, f"#sha256-{rec.sha256}"
                    other = self.by_id.get(d.ident)
                if other is not None:
                    other.example_of += d.example_of
                    self.files[key] = other
                    continue
            self.by_id[d.ident] = d

    def start_copy(self) -> None:
        """Start copying the payload in background threads (I/O overlaps the describing)."""
        jobs: list[tuple[Path, Path]] = []
        jobs.append((self.wf.spec_path, self.root / "workflow" / self.wf.spec_path.name))
        for s in self.wf.sources:
            jobs.append((s.path, self.root / "workflow" / s.rel_path))
        for name, path in sorted(self.data.prov_files.items()):
            jobs.append((Path(path), self.root / "prov" / name))
        for v in self.data.validations:
            for p in (v.report_json, v.report_html):
                if p is not None:
                    jobs.append((Path(p), self.root / "validation" / v.output / Path(p).name))
        for d in self.by_id.values():
            if d.mode == "copy" and d.dest:
                jobs.append((d.record.path, self.root / d.dest))
        verdict = self.data.verdict
        if verdict and verdict.get("file"):
            jobs.append(
                (Path(str(verdict["file"])), self.root / "reproducibility" / "verdict.json")
            )
        try:
            for parent in sorted({dst.parent for _, dst in jobs}):
                parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CrateWriteError(f"cannot create {e.filename}: {e.strerror}") from e

        def copy(batch: list[tuple[Path, Path]]) -> None:
            for src, dst in batch:
                _copy_file(src, dst)

        # creating many small files is I/O latency: more threads than CPUs help
        batches = [jobs[i : i + _COPY_BATCH] for i in range(0, len(jobs), _COPY_BATCH)]
        self.copy_started = time.perf_counter()
        self.pool = ThreadPoolExecutor(
            max_workers=min(16, max(4, 2 * self.workers)), thread_name_prefix="crate-copy"
        )
        self.copies = [self.pool.submit(copy, b) for b in batches]

    def finish_copy(self) -> None:
        """Wait for the payload copies; raise the first failure."""
        t0 = time.perf_counter()
        try:
            for f in self.copies:
                f.result()
        except OSError as e:
            raise CrateWriteError(f"cannot copy {e.filename} into the crate: {e.strerror}") from e
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.copies = []
            now = time.perf_counter()
            self.phases["copy"] = now - self.copy_started
            self.phases["copy_wait"] = now - t0

    # ---- building ----

    def build(self) -> None:
        self.plan_files()
        self.verify_and_place()
        self.start_copy()
        try:
            self.describe()
        finally:
            self.finish_copy()

    def describe(self) -> None:
        """Add every entity (the payload may still be copying)."""
        self.add_profiles()
        license_id = self.add_license()
        authors = self.add_authors()
        user = self.add_user()
        engine = self.add_engine()
        main = self.main_id = self.add_workflow(license_id, authors)
        self.add_params()
        self.add_steps()
        self.add_data_entities()
        self.add_actions(engine, user)
        self.add_documents()
        root = self.crate.root_dataset
        run = self.data.run
        root["name"] = f"{self.wf.name} run {run.run_id}"
        root["description"] = (
            f"Provenance of run {run.run_id} of workflow {self.wf.name} {self.wf.version} "
            f"(Airflow DAG {run.dag_id}): {run.state}."
        )
        root["license"] = _ref(license_id)
        who = authors or ([user] if user else [])
        if who:
            root["author"] = _refs(who)
        root["mainEntity"] = _ref(main)
        root["conformsTo"] = _refs(p[0] for p in PROFILES)
        root["mentions"] = _refs(self.mentions)
        self.crate.metadata["conformsTo"] = [_ref(RO_CRATE_SPEC), _ref(WROC_PROFILE)]
        readme = self.root / "README.md"
        readme.write_text(self.readme(), encoding="utf-8")
        self.add_file(
            readme,
            "README.md",
            {
                "name": "README",
                "about": _ref("./"),
                "encodingFormat": "text/markdown",
                "contentSize": str(readme.stat().st_size),
            },
        )

    def readme(self) -> str:
        """A short human summary of the run (deterministic: no build time in it)."""
        run, wf = self.data.run, self.wf
        by_step: dict[str, list[TaskTry]] = {}
        for t in self.tries:
            by_step.setdefault(t.task_id, []).append(t)
        lines = [
            f"# {wf.name} run {run.run_id}",
            "",
            f"- state: **{run.state}**",
            f"- Airflow DAG: `{run.dag_id}`"
            + (f", run type {run.run_type}" if run.run_type else ""),
            f"- started: {_time(run.start) or 'unknown'}; ended: {_time(run.end) or 'unknown'}",
        ]
        if run.triggering_user:
            lines.append(f"- triggered by: {run.triggering_user}")
        lines += [
            f"- workflow: `workflow/{wf.spec_path.name}` version {wf.version} "
            f"(sha256 `{wf.spec_sha256}`)",
            f"- engine: twinprov {run.twinprov_version}"
            + (f" on Apache Airflow {run.airflow_version}" if run.airflow_version else ""),
            "",
            "| # | step | tries | last state | outputs |",
            "|---|------|-------|------------|---------|",
        ]
        for s in wf.steps:
            tries = by_step.get(s.id, [])
            state = tries[-1].state if tries else "not run"
            outs = ", ".join(f"`{o.path}`" for o in s.outputs) or "-"
            lines.append(f"| {s.position} | {s.id} | {len(tries)} | {state} | {outs} |")
        failed = [t for t in self.tries if t.failed]
        if failed:
            lines += ["", "Failures:", ""]
            lines += [
                f"- step `{t.task_id}` try {t.try_number}: {t.error or t.state}" for t in failed
            ]
        lines += [
            "",
            "Layout: `workflow/` holds the spec and the step programs it runs; `workspace/` the "
            "run's files (at their workspace paths) up to the copy threshold, larger ones are "
            "referenced by `file://` URI; `prov/` the W3C PROV documents; `validation/` the "
            "data-quality reports. `ro-crate-metadata.json` describes all of it as a Provenance "
            "Run Crate 0.5 (https://w3id.org/ro/wfrun/provenance/0.5).",
            "",
        ]
        return "\n".join(lines)

    def add_profiles(self) -> None:
        for uri, name, version in PROFILES:
            self.add(uri, "CreativeWork", {"name": name, "version": version})

    def add_license(self) -> str:
        lic = (self.wf.license or "").strip()
        if not lic:
            ident = "#license-not-declared"
            self.add(
                ident,
                "CreativeWork",
                {
                    "name": "No license declared",
                    "description": "The workflow spec declares no license; ask its authors "
                    "before reusing the workflow or its results.",
                },
            )
            return ident
        if lic.startswith(("http://", "https://")):
            self.add(lic, "CreativeWork", {"name": lic, "url": lic})
            return lic
        if _SPDX.match(lic):
            ident = f"http://spdx.org/licenses/{lic}"
            self.add(
                ident,
                "CreativeWork",
                {"name": lic, "identifier": lic, "description": f"SPDX license {lic}"},
            )
            return ident
        ident = "#license"
        self.add(ident, "CreativeWork", {"name": "License", "description": lic})
        return ident

    def add_person(self, name: str, orcid: str | None = None, **extra: Any) -> str:
        ident = self.person_id(name, orcid)
        if ident not in self.crate:
            self.add(ident, "Person", {"name": name, **extra})
        return ident

    def add_authors(self) -> list[str]:
        out = []
        for a in self.wf.authors:
            extra: dict[str, Any] = {}
            if a.email:
                extra["email"] = a.email
            if a.affiliation:
                org = f"#organization/{_q(a.affiliation)}"
                if org not in self.crate:
                    self.add(org, "Organization", {"name": a.affiliation})
                extra["affiliation"] = _ref(org)
            out.append(self.add_person(a.name, a.orcid, **extra))
        return list(dict.fromkeys(out))

    def add_user(self) -> str | None:
        user = self.data.run.triggering_user
        if not user:
            return None
        return self.add_person(user, description="Triggered the run")

    def add_engine(self) -> str:
        run = self.data.run
        airflow_id = None
        if run.airflow_version:
            airflow_id = f"https://pypi.org/project/apache-airflow/{_q(run.airflow_version)}/"
            self.add(
                airflow_id,
                "SoftwareApplication",
                {
                    "name": "Apache Airflow",
                    "softwareVersion": run.airflow_version,
                    "url": "https://airflow.apache.org/",
                },
            )
        ident = f"#twinprov-{_q(run.twinprov_version)}"
        self.add(
            ident,
            "SoftwareApplication",
            {
                "name": "twinprov",
                "softwareVersion": run.twinprov_version,
                "description": "Provenance service for digital-twin workflows; runs each "
                "workflow spec as an Apache Airflow DAG.",
                "softwareRequirements": _ref(airflow_id) if airflow_id else None,
            },
        )
        return ident

    def add_workflow(self, license_id: str, authors: list[str]) -> str:
        lang = "#twinprov-workflow-spec"
        self.add(
            lang,
            "ComputerLanguage",
            {
                "name": "twinprov workflow spec",
                "alternateName": "twinprov YAML",
                "description": "YAML workflow description run by twinprov on Apache Airflow.",
            },
        )
        for s in self.wf.sources:
            self.add_file(
                self.root / "workflow" / s.rel_path,
                f"workflow/{s.rel_path}",
                {
                    "name": s.rel_path,
                    "description": (
                        "Data-quality suite of the workflow"
                        if s.rel_path.endswith(".json")
                        else "Step program run by the workflow"
                    ),
                    "encodingFormat": s.media_type,
                    "sha256": s.sha256,
                    "contentSize": str(s.size),
                },
            )
        executed = {t.task_id for t in self.tries}
        spec_name = self.wf.spec_path.name
        size = self.spec_size
        entity = self.add_file(
            self.root / "workflow" / spec_name,
            f"workflow/{spec_name}",
            {
                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
                "name": self.wf.name,
                "description": self.wf.description,
                "version": self.wf.version,
                "license": _ref(license_id),
                "author": _refs(authors),
                "creator": _refs(authors),
                "programmingLanguage": _ref(lang),
                "encodingFormat": "application/yaml",
                "sha256": self.wf.spec_sha256,
                "contentSize": str(size),
                "input": _refs(self.wf_param(p.name) for p in self.wf.params),
                "output": _refs(
                    self.wf_output(s.id, o.name) for s in self.wf.steps for o in s.outputs
                ),
                "hasPart": _refs(self.tool_id(s.id) for s in self.wf.steps if s.id in executed),
                "step": _refs(self.step_id(s.id) for s in self.wf.steps),
            },
        )
        return str(entity.id)

    def formal_parameter(self, ident: str, name: str, additional_type: str, **props: Any) -> None:
        self.add(
            ident,
            "FormalParameter",
            {
                "name": name,
                "additionalType": additional_type,
                "conformsTo": _ref(FORMAL_PARAMETER_PROFILE),
                **props,
            },
        )

    def add_params(self) -> None:
        users: dict[str, list[str]] = {}
        for s in self.wf.steps:
            for used in s.params:
                users.setdefault(used, []).append(self.tool_param(s.id, "param", used))
        for p in self.wf.params:
            self.formal_parameter(
                self.wf_param(p.name),
                p.name,
                _PARAM_TYPES.get(p.type, "Text"),
                description=p.description,
                defaultValue=_literal(p.default),
                valueRequired=False,
            )
        declared = {p.name: p for p in self.wf.params}
        values = dict(self.data.run.params)
        for name, spec in declared.items():
            values.setdefault(name, spec.default)
        for name in sorted(values):
            example_of = [self.wf_param(name)] if name in declared else []
            self.add(
                self.pv_id(name),
                "PropertyValue",
                {
                    "name": name,
                    "value": _literal(values[name]),
                    "exampleOfWork": _refs([*example_of, *users.get(name, [])]),
                },
            )
        self.param_values = sorted(values)

    def add_steps(self) -> None:
        executed = {t.task_id for t in self.tries}
        envs: dict[str, list[str]] = {}
        for t in self.tries:
            ident = self.add_environment(t)
            if ident:
                envs.setdefault(t.task_id, []).append(ident)
        declared = {p.name for p in self.wf.params}
        for s in self.wf.steps:
            connections: list[str] = []
            for i in s.inputs:
                target = self.tool_param(s.id, "in", i.name)
                if i.producer is None:
                    source = self.wf_param(i.item) if i.item in declared else None
                else:
                    producer = self.steps.get(i.producer)
                    has = producer is not None and any(o.name == i.item for o in producer.outputs)
                    source = self.tool_param(i.producer, "out", i.item) if has else None
                if source:
                    cid = f"#connection/{_q(s.id)}/in/{_q(i.name)}"
                    self.add(
                        cid,
                        "ParameterConnection",
                        {"sourceParameter": _ref(source), "targetParameter": _ref(target)},
                    )
                    connections.append(cid)
            for p in s.params:
                if p in declared:
                    cid = f"#connection/{_q(s.id)}/param/{_q(p)}"
                    self.add(
                        cid,
                        "ParameterConnection",
                        {
                            "sourceParameter": _ref(self.wf_param(p)),
                            "targetParameter": _ref(self.tool_param(s.id, "param", p)),
                        },
                    )
                    connections.append(cid)
            self.add(
                self.step_id(s.id),
                "HowToStep",
                {
                    "name": s.id,
                    "description": s.description,
                    "position": s.position,
                    "workExample": _ref(self.tool_id(s.id)),
                    "connection": _refs(connections),
                },
            )
            self.add_tool(s, envs.get(s.id, []), s.id in executed)

    def add_tool(self, s: StepSpec, envs: list[str], executed: bool) -> None:
        inputs = [self.tool_param(s.id, "in", i.name) for i in s.inputs]
        inputs += [self.tool_param(s.id, "param", p) for p in s.params]
        outputs = [self.tool_param(s.id, "out", o.name) for o in s.outputs]
        env_params = [self.tool_param(s.id, "env", k) for k in sorted(s.env)]
        image = self.add_image(s.image, None) if s.image else None
        command = shlex.join(s.command) if s.command else None
        description = s.description or f"Step {s.id} of {self.wf.name}"
        if command:
            description += f" Command: {command}"
        if not executed:
            description += " (not executed in this run)"
        self.add(
            self.tool_id(s.id),
            "SoftwareApplication",
            {
                "name": s.id,
                "description": description,
                "softwareVersion": self.wf.version,
                "input": _refs(inputs),
                "output": _refs(outputs),
                "environment": _refs(env_params),
                "containerImage": _ref(image) if image else None,
                "softwareRequirements": _refs(sorted(set(envs))),
                "mainEntity": _ref(quote(f"workflow/{s.sources[0]}")) if s.sources else None,
            },
        )
        declared = {p.name: p for p in self.wf.params}
        for i in s.inputs:
            producer = self.steps.get(i.producer or "")
            media = next(
                (o.media_type for o in (producer.outputs if producer else ()) if o.name == i.item),
                None,
            )
            self.formal_parameter(
                self.tool_param(s.id, "in", i.name),
                i.name,
                "File",
                description=f"Input of step {s.id}, from {i.source}",
                encodingFormat=media,
                valueRequired=True,
            )
        for p in s.params:
            spec = declared.get(p)
            self.formal_parameter(
                self.tool_param(s.id, "param", p),
                p,
                _PARAM_TYPES.get(spec.type, "Text") if spec else "Text",
                description=f"Run parameter {p} as step {s.id} reads it",
            )
        for o in s.outputs:
            self.formal_parameter(
                self.tool_param(s.id, "out", o.name),
                o.name,
                "File",
                description=f"Output of step {s.id}, written to {o.path}",
                encodingFormat=o.media_type,
            )
            wf_out = self.wf_output(s.id, o.name)
            self.formal_parameter(
                wf_out,
                f"{s.id}.{o.name}",
                "File",
                description=f"Output {o.name} of step {s.id} ({o.path})",
                encodingFormat=o.media_type,
            )
        for key in sorted(s.env):
            self.formal_parameter(
                self.tool_param(s.id, "env", key),
                key,
                "Text",
                description=f"Environment variable the spec sets for step {s.id}",
            )

    def add_image(self, reference: str, digest: str | None) -> str:
        ref = parse_image(reference, digest)
        ident = f"#image/{quote(ref.reference, safe='/:@-._~')}"
        if ident not in self.crate:
            self.add(
                ident,
                "ContainerImage",
                {
                    "additionalType": _ref("https://w3id.org/ro/terms/workflow-run#DockerImage"),
                    "registry": ref.registry,
                    "name": ref.name,
                    "tag": ref.tag,
                    "sha256": ref.sha256,
                },
            )
        return ident

    def add_environment(self, t: TaskTry) -> str | None:
        env = t.environment
        digest = env.get("digest")
        if not digest or env.get("kind") != "python":
            return None
        ident = f"#environment/python-{_q(digest)}"
        if ident in self.crate:
            return ident
        version = env.get("python_version")
        count = env.get("package_count")
        parts = [f"Python {version}" if version else "Python"]
        if count is not None:
            parts.append(f"with {count} installed packages")
        if env.get("platform"):
            parts.append(f"on {env['platform']}")
        sha = env.get("packages_sha256")
        self.add(
            ident,
            "SoftwareApplication",
            {
                "name": f"Python environment {digest}",
                "description": " ".join(parts)
                + (f"; sha256 of the sorted name==version list: {sha}" if sha else ""),
                "softwareVersion": str(version) if version else None,
                "url": "https://www.python.org/",
                "identifier": f"sha256:{sha}" if sha else None,
            },
        )
        return ident

    def add_data_entities(self) -> None:
        for ident in sorted(self.by_id):
            d = self.by_id[ident]
            rec = d.record
            props: dict[str, Any] = {
                "name": rec.rel_path or rec.path.name,
                "encodingFormat": rec.media_type,
                "sha256": rec.sha256,
                "contentSize": str(rec.size),
                "exampleOfWork": _refs(sorted(set(d.example_of))),
                "identifier": rec.iri,
            }
            if d.mode == "copy" and d.dest:
                self.add_file(self.root / d.dest, d.dest, props)
                self.copied += 1
            elif d.mode == "reference":
                props["description"] = (
                    f"Not copied into the crate ({rec.size} bytes, above the copy threshold); "
                    "referenced where the run wrote it."
                )
                self.add_file(ident, None, props)
                self.referenced += 1
            else:
                props["description"] = (
                    f"The run read or wrote these bytes at {rec.path}; they were overwritten or "
                    "removed before the crate was built, so the crate describes them only."
                )
                props["alternateName"] = str(rec.path)
                self.add(ident, "File", props)
                self.missing += 1

    def file_ids(self, records: Sequence[FileRecord]) -> list[str]:
        return [self.files[(str(r.path), r.sha256)].ident for r in records]

    def add_actions(self, engine: str, user: str | None) -> None:
        run = self.data.run
        last: dict[str, TaskTry] = {}
        by_step: dict[str, list[TaskTry]] = {}
        for t in self.tries:
            by_step.setdefault(t.task_id, []).append(t)
            cur = last.get(t.task_id)
            if cur is None or (t.try_number, t.map_index) >= (cur.try_number, cur.map_index):
                last[t.task_id] = t
        failures = [
            f"step '{t.task_id}' failed (try {t.try_number}): {t.error or 'no error recorded'}"
            for t in sorted(last.values(), key=lambda t: self.steps[t.task_id].position)
            if t.failed
        ]
        run_status = _status(run.state)
        run_error = "; ".join(failures) if run_status == ACTION_STATUS["failed"] else None
        if run_status == ACTION_STATUS["failed"] and not run_error:
            run_error = f"the run ended {run.state}"
        run_start = _time(run.start) or _earliest(t.start for t in self.tries)
        run_end = _time(run.end) or _latest(t.end for t in self.tries)
        objects = [self.pv_id(n) for n in self.param_values]
        produced: set[str] = set()
        for t in self.tries:
            produced.update(self.file_ids(t.outputs))
        for t in self.tries:
            objects += [i for i in self.file_ids(t.inputs) if i not in produced]
        results: list[str] = []
        for t in self.tries:
            results += self.file_ids(t.outputs)
        run_id = "#run"
        control_ids = [f"#control/{_q(s.id)}" for s in self.wf.steps if s.id in by_step]
        # the profile's OrganizeAction must name at least one step execution: with no step
        # run at all (nothing started yet, or every task refused) it is left out
        if control_ids:
            self.mentions.append("#engine-run")
            self.add(
                "#engine-run",
                "OrganizeAction",
                {
                    "name": f"twinprov run of {run.dag_id} ({run.run_id})",
                    "instrument": _ref(engine),
                    "object": _refs(control_ids),
                    "result": _ref(run_id),
                    "agent": _ref(user) if user else None,
                    "startTime": run_start,
                    "endTime": run_end,
                    "actionStatus": run_status,
                    "error": run_error,
                },
            )
        self.add(
            run_id,
            "CreateAction",
            {
                "name": f"Run {run.run_id} of {self.wf.name}",
                "description": (
                    f"Airflow DAG {run.dag_id}, run {run.run_id}"
                    + (f" ({run.run_type})" if run.run_type else "")
                    + f": {run.state}"
                ),
                "instrument": _ref(self.main_id),
                "object": _refs(objects),
                "result": _refs(results),
                "agent": _ref(user) if user else None,
                "startTime": run_start,
                "endTime": run_end,
                "actionStatus": run_status,
                "error": run_error,
                "identifier": run.iri,
            },
        )
        self.mentions.append(run_id)
        for s in self.wf.steps:
            tries = by_step.get(s.id)
            if not tries:
                continue
            final = last[s.id]
            status = _status(final.state)
            self.add(
                f"#control/{_q(s.id)}",
                "ControlAction",
                {
                    "name": f"orchestrate {s.id}",
                    "instrument": _ref(self.step_id(s.id)),
                    "object": _refs(self.try_id(t) for t in tries),
                    "startTime": _earliest(t.start for t in tries),
                    "endTime": _latest(t.end for t in tries),
                    "actionStatus": status,
                    "error": (final.error or "failed")
                    if status == ACTION_STATUS["failed"]
                    else None,
                },
            )
            for t in tries:
                self.add_try(s, t, user)

    def add_try(self, s: StepSpec, t: TaskTry, user: str | None) -> None:
        ident = self.try_id(t)
        status = _status(t.state)
        error = None
        if status == ACTION_STATUS["failed"]:
            error = t.error or (
                f"exit code {t.exit_code}" if t.exit_code is not None else f"ended {t.state}"
            )
        details = []
        if t.command:
            details.append(f"Command: {shlex.join(t.command)}")
        if t.exit_code is not None:
            details.append(f"exit code {t.exit_code}")
        if t.target:
            details.append(f"target {t.target}")
        if t.host:
            details.append(f"host {t.host}")
        usage = []
        for key in sorted(t.resource_usage):
            term, unit = _USAGE_TERMS.get(key, (_camel(key), None))
            pv = f"{ident}/usage/{_q(key)}"
            self.add(
                pv,
                "PropertyValue",
                {
                    "name": term,
                    "propertyID": VOCAB + term,
                    "unitCode": unit,
                    "value": t.resource_usage[key],
                },
            )
            usage.append(pv)
        env = []
        for key in sorted(t.env):
            pv = f"{ident}/env/{_q(key)}"
            self.add(
                pv,
                "PropertyValue",
                {
                    "name": key,
                    "value": t.env[key],
                    "exampleOfWork": _ref(self.tool_param(s.id, "env", key))
                    if key in s.env
                    else None,
                },
            )
            env.append(pv)
        image = None
        if t.image and (t.target or s.target) != "local":
            image = self.add_image(t.image, t.image_digest)
        name = f"Run of step {t.task_id}"
        if t.map_index >= 0:
            name += f" [{t.map_index}]"
        self.add(
            ident,
            "CreateAction",
            {
                "name": f"{name} (try {t.try_number})",
                "description": "; ".join(details) or f"Try {t.try_number} of step {t.task_id}",
                "instrument": _ref(self.tool_id(s.id)),
                "object": _refs([*self.file_ids(t.inputs), *(self.pv_id(p) for p in s.params)]),
                "result": _refs(self.file_ids(t.outputs)),
                "agent": _ref(user) if user else None,
                "startTime": _time(t.start),
                "endTime": _time(t.end),
                "actionStatus": status,
                "error": error,
                "containerImage": _ref(image) if image else None,
                "environment": _refs(env),
                "resourceUsage": _refs(usage),
                "identifier": t.iri,
            },
        )
        self.mentions.append(ident)

    def add_verdict(self) -> None:
        v = self.data.verdict
        if not v or not v.get("file"):
            return
        first = v.get("first_divergent_step")
        self.add_file(
            self.root / "reproducibility" / "verdict.json",
            "reproducibility/verdict.json",
            {
                "name": f"Reproducibility verdict: {v.get('status')}",
                "description": (
                    f"This run re-ran {v.get('original_run')} and compared every output: "
                    f"{v.get('status')}"
                    + (f"; first divergent step: {first}" if first else "")
                    + "."
                ),
                "encodingFormat": "application/json",
                "about": [_ref("#run"), {"@id": str(v.get("original_run"))}],
                "contentSize": _size(Path(str(v["file"]))),
            },
        )

    def add_documents(self) -> None:
        self.add_verdict()
        for name, source in sorted(self.data.prov_files.items()):
            media, spec, label = _PROV_FORMATS.get(
                Path(name).suffix, ("application/octet-stream", None, None)
            )
            if spec and spec not in self.crate:
                self.add(spec, "CreativeWork", {"name": label})
            dest = f"prov/{name}"
            self.add_file(
                self.root / dest,
                dest,
                {
                    "name": f"W3C PROV of the run ({label or name})",
                    "encodingFormat": media,
                    "conformsTo": _ref(spec) if spec else None,
                    "about": _ref("#run"),
                    "contentSize": _size(source),
                },
            )
        for v in sorted(self.data.validations, key=lambda v: (v.output, v.sha256)):
            about = self.ids_for_sha(v.sha256)
            verdict = "passed" if v.success else "failed"
            for p, media in ((v.report_json, "application/json"), (v.report_html, "text/html")):
                if p is None:
                    continue
                dest = f"validation/{v.output}/{Path(p).name}"
                self.add_file(
                    self.root / dest,
                    dest,
                    {
                        "name": f"Data-quality report for {v.output} ({verdict})",
                        "description": (
                            f"Validation of output {v.output} (sha256 {v.sha256})"
                            + (f" against suite {v.suite}" if v.suite else "")
                            + f": {verdict}."
                        ),
                        "encodingFormat": media,
                        "about": _refs(about),
                        "contentSize": _size(p),
                    },
                )
        # STAC Items stay in their catalog (their relative links resolve there): referenced
        for item in sorted(self.data.stac_items, key=lambda i: i.item_id):
            self.add_file(
                Path(item.path).absolute().as_uri(),
                None,
                {
                    "name": f"STAC Item {item.item_id}",
                    "description": "Item of the run's STAC catalog, referenced where it is.",
                    "encodingFormat": "application/geo+json",
                    "about": _refs(self.ids_for_sha(item.about_sha256))
                    if item.about_sha256
                    else None,
                    "contentSize": _size(item.path),
                },
            )
        tries = {(t.task_id, t.try_number): self.try_id(t) for t in self.tries}
        for m in sorted(self.data.mlflow_runs, key=lambda m: m.run_id):
            subject = "#run"
            if m.task_id is not None:
                subject = tries.get((m.task_id, m.try_number or 1), subject)
            details = [f"Tracked in {m.tracking_uri}" if m.tracking_uri else "MLflow run"]
            if m.experiment_id:
                details.append(f"experiment {m.experiment_id}")
            if m.metrics:
                details.append(
                    "metrics: " + ", ".join(f"{k}={v:g}" for k, v in sorted(m.metrics.items()))
                )
            self.add(
                f"#mlflow/{_q(m.run_id)}",
                "CreativeWork",
                {
                    "name": f"MLflow run {m.name or m.run_id}",
                    "identifier": m.uri or m.run_id,
                    "url": m.url,
                    "description": "; ".join(details),
                    "about": _ref(subject),
                },
            )

    def ids_for_sha(self, sha256: str) -> list[str]:
        found = sorted({d.ident for d in self.by_id.values() if d.record.sha256 == sha256})
        if found:
            return found
        ident = f"#sha256-{sha256}"
        if ident not in self.crate:
            self.add(
                ident,
                "File",
                {"name": f"sha256 {sha256}", "sha256": sha256, "encodingFormat": None},
            )
        return [ident]


def _check(data: CrateInput) -> None:
    steps = {s.id for s in data.workflow.steps}
    unknown = sorted({t.task_id for t in data.tries} - steps)
    if unknown:
        raise CrateInputError(
            f"tries of tasks that are not steps of {data.workflow.name}: {', '.join(unknown)}"
        )


def write_crate(
    data: CrateInput,
    dest: Path,
    *,
    copy_threshold_bytes: int = 10 * 1024**2,
    hash_workers: int | None = None,
) -> CrateBuild:
    """Like :func:`build_crate`, and report what the build did and how long it took."""
    t0 = time.perf_counter()
    _check(data)
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    workers = hash_workers or default_workers()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a crate is meant to be read
        builder = _Builder(data, tmp, copy_threshold_bytes, workers)
        t1 = time.perf_counter()
        builder.build()
        t2 = time.perf_counter()
        try:
            builder.crate.write(tmp)
        except OSError as e:
            raise CrateWriteError(f"cannot write the crate under {tmp}: {e}") from e
        t3 = time.perf_counter()
        _swap(tmp, dest)
        phases = builder.phases
        phases["hash"] = builder.hash_seconds
        phases["describe"] = (t2 - t1) - builder.hash_seconds - phases.get("copy_wait", 0.0)
        phases["write"] = t3 - t2
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CrateBuild(
        path=dest,
        seconds=time.perf_counter() - t0,
        hash_seconds=builder.hash_seconds,
        bytes_hashed=builder.bytes_hashed,
        files_copied=builder.copied,
        files_referenced=builder.referenced,
        files_missing=builder.missing,
        hash_workers=workers,
        phases=dict(phases),
        digests=builder.digests,
    )


def _swap(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` at ``dest``, replacing what was there."""
    old = None
    try:
        if dest.exists() or dest.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / "crate")
        os.replace(tmp, dest)
    except OSError as e:
        if old is not None and (old / "crate").exists() and not dest.exists():
            os.replace(old / "crate", dest)  # put the previous crate back
        raise CrateWriteError(f"cannot move the crate into place at {dest}: {e}") from e
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def build_crate(data: CrateInput, dest: Path, *, copy_threshold_bytes: int = 10 * 1024**2) -> Path:
    """Write one run's Provenance Run Crate 0.5 to the folder ``dest``, atomically.

    The crate is built in a temporary sibling folder and renamed to ``dest`` (replacing an
    older crate), so a reader never sees half a crate. Every file the crate describes is hashed
    first: bytes that still match the recorded sha256 are shipped (copied when at most
    ``copy_threshold_bytes``, else referenced by ``file://`` URI); bytes overwritten since the
    run are described without a payload.

    Args:
        data: what the run did (see :func:`twinprov.ro_crates.assemble.crate_input_from_ledger`).
        dest: the crate folder to create or replace.
        copy_threshold_bytes: largest file copied into the crate.

    Returns:
        ``dest``.

    Raises:
        CrateInputError: ``data`` is inconsistent (a try of an unknown step, unreadable spec).
        SpecChangedError: the spec file no longer has the recorded bytes.
        CrateWriteError: the crate could not be written.
    """
    return write_crate(data, dest, copy_threshold_bytes=copy_threshold_bytes).path
