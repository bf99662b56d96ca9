"""Planning a crate: which bytes are copied into it, referenced, or only described.

Every file the run read or wrote is hashed again first; bytes that still match the recorded
sha256 are shipped: copied (at most the copy threshold, with ``shutil.copyfile``, which uses
``sendfile`` on Linux) or referenced by their checksum (larger: ``#sha256-…``, with the path
where the run wrote them as a hint); bytes overwritten since the run are described without a
payload (the same ``#sha256-…`` id, no hint). The copies run in background
threads while the crate is being described.
"""

from __future__ import annotations

__all__ = ["CratePlan", "PlannedFile", "copy_file", "safe_rel"]

import shutil
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from twinprov.provenance.hashing import FileDigest, hash_files
from twinprov.ro_crates.crate_terms import sha256_id, tool_param, wf_output
from twinprov.ro_crates.errors import CrateInputError, CrateWriteError, SpecChangedError
from twinprov.ro_crates.model import CrateInput, FileRecord, StepSpec, TaskTry

_COPY_BATCH = 64


@dataclass
class PlannedFile:
    """One data entity: the bytes a record names, and what the crate does with them."""

    ident: str
    record: FileRecord
    mode: str  # "copy", "reference" or "missing"
    dest: str | None = None  # crate-relative path (copy)
    example_of: list[str] = field(default_factory=list)


def copy_file(src: Path, dst: Path) -> None:
    """Copy the bytes of ``src`` to ``dst`` (``shutil.copyfile``: in the kernel with ``sendfile``
    on Linux, with little Python work per file)."""
    shutil.copyfile(src, dst)


def safe_rel(rel: str | None) -> str | None:
    if not rel:
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in rel:
        return None
    return p.as_posix()


class CratePlan:
    """Where each file of one run goes in its crate (built in the folder ``root``)."""

    def __init__(self, data: CrateInput, root: Path, threshold: int, workers: int) -> None:
        self.data = data
        self.root = root
        self.threshold = threshold
        self.workers = workers
        self.wf = data.workflow
        self.steps: dict[str, StepSpec] = {s.id: s for s in self.wf.steps}
        self.tries: list[TaskTry] = sorted(
            (t for t in data.tries if t.ran),
            key=lambda t: (self.steps[t.task_id].position, t.task_id, t.map_index, t.try_number),
        )
        self.files: dict[tuple[str, str], PlannedFile] = {}
        self.by_id: dict[str, PlannedFile] = {}
        self.hash_seconds = 0.0
        self.bytes_hashed = 0
        self.digests: tuple[FileDigest, ...] = ()
        self.spec_size = 0
        self.phases: dict[str, float] = {}
        self.copies: list[Future[None]] = []
        self.copy_started = 0.0

    def plan_files(self) -> None:
        declared = {s.id: {o.name for o in s.outputs} for s in self.wf.steps}
        for t in self.tries:
            step = self.steps[t.task_id]
            for rec in t.inputs:
                d = self._data(rec)
                d.example_of.append(tool_param(step.id, "in", rec.name))
            for rec in t.outputs:
                d = self._data(rec)
                if rec.name in declared[step.id]:
                    d.example_of.append(wf_output(step.id, rec.name))
                d.example_of.append(tool_param(step.id, "out", rec.name))

    def _data(self, rec: FileRecord) -> PlannedFile:
        key = (str(rec.path), rec.sha256)
        d = self.files.get(key)
        if d is None:
            d = PlannedFile(ident="", record=rec, mode="")
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
                d.mode, d.ident = "missing", sha256_id(rec.sha256)
            elif rec.size > self.threshold:
                # by checksum: a moved crate re-finds the bytes by sha256 (its hint: the path)
                d.mode, d.ident = "reference", sha256_id(rec.sha256)
            else:
                rel = safe_rel(rec.rel_path)
                dest = (
                    f"workspace/{rel}"
                    if rel
                    else f"inputs/{rec.sha256[:16]}/{rec.path.name or 'file'}"
                )
                d.mode, d.dest, d.ident = "copy", dest, quote(dest)
            other = self.by_id.get(d.ident)
            if other is not None and other is not d:
                if other.record.sha256 != rec.sha256:  # two contents claim one path
                    d.mode, d.dest, d.ident = "missing", None, sha256_id(rec.sha256)
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
                copy_file(src, dst)

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

    def file_ids(self, records: Sequence[FileRecord]) -> list[str]:
        return [self.files[(str(r.path), r.sha256)].ident for r in records]
