"""Writing a run's crate: built in a temporary sibling folder and renamed into place.

The payload, ``ro-crate-metadata.json`` and ``ro-crate-preview.html`` are written to a private
temporary folder next to the destination, which then replaces the destination (the previous
crate is moved aside and removed), so a reader never sees half a crate.
"""

from __future__ import annotations

__all__ = ["CrateBuild", "build_crate", "write_crate"]

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twinprov.provenance.config import DEFAULT_CRATE_COPY_THRESHOLD
from twinprov.provenance.hashing import FileDigest, default_workers
from twinprov.ro_crates.crate_describe import CrateDescription
from twinprov.ro_crates.crate_plan import CratePlan
from twinprov.ro_crates.errors import CrateInputError, CrateWriteError
from twinprov.ro_crates.model import CrateInput


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
    copy_threshold_bytes: int = DEFAULT_CRATE_COPY_THRESHOLD,
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
        plan = CratePlan(data, tmp, copy_threshold_bytes, workers)
        description = CrateDescription(plan)
        t1 = time.perf_counter()
        description.build()
        t2 = time.perf_counter()
        try:
            description.crate.write(tmp)
        except OSError as e:
            raise CrateWriteError(f"cannot write the crate under {tmp}: {e}") from e
        t3 = time.perf_counter()
        _swap(tmp, dest)
        phases = plan.phases
        phases["hash"] = plan.hash_seconds
        phases["describe"] = (t2 - t1) - plan.hash_seconds - phases.get("copy_wait", 0.0)
        phases["write"] = t3 - t2
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CrateBuild(
        path=dest,
        seconds=time.perf_counter() - t0,
        hash_seconds=plan.hash_seconds,
        bytes_hashed=plan.bytes_hashed,
        files_copied=description.copied,
        files_referenced=description.referenced,
        files_missing=description.missing,
        hash_workers=workers,
        phases=dict(phases),
        digests=plan.digests,
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


def build_crate(
    data: CrateInput, dest: Path, *, copy_threshold_bytes: int = DEFAULT_CRATE_COPY_THRESHOLD
) -> Path:
    """Write one run's Provenance Run Crate 0.5 to the folder ``dest``, atomically.

    The crate is built in a temporary sibling folder and renamed to ``dest`` (replacing an
    older crate), so a reader never sees half a crate. Every file the crate describes is hashed
    first: bytes that still match the recorded sha256 are shipped (copied when at most
    ``copy_threshold_bytes``, else referenced by sha256); bytes overwritten since the
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
