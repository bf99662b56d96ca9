"""Crates that travel: files too large to copy into a crate are named by their sha256 (the
path the run wrote them to is kept only as a hint), re-found by checksum in any data folder,
and packed with the crate for archiving.

A crate's referenced files are its ``File`` entities with a ``#sha256-…`` id. Their bytes, once
found, are placed in the crate as ``data/sha256-<hex>`` (a hard link where the file system
allows, else a copy), where a rerun reads them (:func:`twinprov.app.rerun.read_crate`); a zip
made with :func:`zip_with_data` carries them the same way.
"""

from __future__ import annotations

__all__ = [
    "ReferencedFile",
    "find_by_sha256",
    "place_in_crate",
    "referenced_files",
    "resolve_crate_data",
    "zip_with_data",
]

import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from twinprov.app.errors import RerunError
from twinprov.provenance.hashing import hash_files
from twinprov.ro_crates.crate_terms import PACKED_DATA_DIR, packed_data_name

_SHA_PREFIX = "#sha256-"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class ReferencedFile:
    """A file a crate names by checksum instead of carrying it."""

    sha256: str
    size: int | None
    name: str
    hint: Path | None
    """Where the run wrote it (``contentUrl``): only a hint, the bytes may have moved."""


def referenced_files(crate_dir: Path) -> list[ReferencedFile]:
    """The files the crate at ``crate_dir`` references by sha256, sorted by name."""
    from rocrate.rocrate import ROCrate

    try:
        crate = ROCrate(str(crate_dir))
    except Exception as e:
        raise RerunError(f"cannot read the crate {crate_dir}: {e}") from e
    out: dict[str, ReferencedFile] = {}
    for entity in crate.get_entities():
        ident = str(entity.id)
        types = entity.type if isinstance(entity.type, list) else [entity.type]
        if not ident.startswith(_SHA_PREFIX) or "File" not in types:
            continue
        sha = ident.removeprefix(_SHA_PREFIX)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            continue
        hint = str(entity.get("contentUrl") or "")
        size = str(entity.get("contentSize") or "")
        out[sha] = ReferencedFile(
            sha256=sha,
            size=int(size) if size.isdigit() else None,
            name=str(entity.get("name") or sha),
            hint=Path(unquote(urlparse(hint).path)) if hint.startswith("file://") else None,
        )
    return sorted(out.values(), key=lambda r: (r.name, r.sha256))


def _candidates(folder: Path, sizes: set[int] | None) -> Iterable[Path]:
    """Regular files under ``folder`` (symlinks not followed) of one of ``sizes`` (any if None)."""
    for here, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(here) / name
            try:
                st = p.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (sizes is None or st.st_size in sizes):
                yield p


def find_by_sha256(
    wanted: Sequence[ReferencedFile], folders: Sequence[Path], *, workers: int | None = None
) -> dict[str, Path]:
    """Files under ``folders`` whose bytes have a wanted sha256 (``sha256 → path``).

    Only files of a recorded size are hashed, so a large data folder costs little more than
    listing it. Raises :class:`RerunError` for a folder that does not exist."""
    missing = [f for f in folders if not Path(f).is_dir()]
    if missing:
        raise RerunError(f"--resolve {missing[0]}: no such folder")
    todo = {r.sha256 for r in wanted}
    sizes = None if any(r.size is None for r in wanted) else {r.size for r in wanted if r.size}
    found: dict[str, Path] = {}
    for folder in folders:
        if not todo:
            break
        paths = list(_candidates(Path(folder), sizes))
        for d in hash_files(paths, workers=workers):
            if d.sha256 in todo:
                found[d.sha256] = d.path.resolve()
                todo.discard(d.sha256)
    return found


def _hint_matches(ref: ReferencedFile, inside: Path | None) -> Path | None:
    """The hint path, if it lies inside ``inside`` and still holds the recorded bytes."""
    if ref.hint is None or inside is None or ref.hint.is_symlink() or not ref.hint.is_file():
        return None
    if not ref.hint.resolve().is_relative_to(inside.resolve()):
        return None
    (d,) = hash_files([ref.hint], workers=1)
    return ref.hint if d.sha256 == ref.sha256 else None


def resolve_crate_data(
    crate_dir: Path, folders: Sequence[Path] = (), *, hints_inside: Path | None = None
) -> tuple[dict[str, Path], list[ReferencedFile]]:
    """Where the bytes of every file the crate references can be read: already packed in the
    crate, at the hint (only inside ``hints_inside``: the run's own folder), or found by sha256
    under ``folders``. Returns ``(sha256 → path, files not found)``."""
    missing_dirs = [f for f in folders if not Path(f).is_dir()]
    if missing_dirs:
        raise RerunError(f"--resolve {missing_dirs[0]}: no such folder")
    refs = referenced_files(crate_dir)
    found: dict[str, Path] = {}
    for r in refs:
        packed = crate_dir / packed_data_name(r.sha256)
        if packed.is_file() and not packed.is_symlink():
            found[r.sha256] = packed
        else:
            at_hint = _hint_matches(r, hints_inside)
            if at_hint is not None:
                found[r.sha256] = at_hint
    rest = [r for r in refs if r.sha256 not in found]
    if rest and folders:
        found.update(find_by_sha256(rest, folders))
    return found, [r for r in refs if r.sha256 not in found]


def place_in_crate(crate_dir: Path, found: Mapping[str, Path]) -> list[Path]:
    """Put the found bytes into the crate as ``data/sha256-<hex>`` (a hard link where possible,
    else a copy); the paths written."""
    written = []
    for sha, src in sorted(found.items()):
        dest = crate_dir / packed_data_name(sha)
        if dest.exists() or src.resolve() == dest.resolve():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        written.append(dest)
    return written


def zip_with_data(
    crate_dir: Path,
    found: Mapping[str, Path],
    dest: Path,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``dest``, a zip of the crate with the referenced files' bytes as
    ``data/sha256-<hex>``; ``progress(added, total)`` is called with the bytes read as the zip
    grows. The
    zip is written beside ``dest`` and renamed into place (no half archive is ever seen)."""
    entries: list[tuple[Path, str]] = []
    for here, _dirs, files in os.walk(crate_dir):
        for name in sorted(files):
            p = Path(here) / name
            arc = p.relative_to(crate_dir).as_posix()
            # packed bytes come from ``found`` (verified), never from whatever data/ holds
            if not p.is_symlink() and not arc.startswith(f"{PACKED_DATA_DIR}/"):
                entries.append((p, arc))
    entries += [(src, packed_data_name(sha)) for sha, src in sorted(found.items())]
    total = sum(src.stat().st_size for src, _ in entries)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for src, arc in sorted(entries, key=lambda e: e[1]):
                with open(src, "rb") as fin, zf.open(arc, "w", force_zip64=True) as fout:
                    while chunk := fin.read(_CHUNK):
                        fout.write(chunk)
                        if progress is not None:
                            progress(len(chunk), total)
        tmp.chmod(0o644)  # mkstemp makes it private; an archive is meant to be read
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest
