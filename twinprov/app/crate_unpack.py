"""Bringing an untrusted crate in: a folder copied or a ``.zip`` unpacked into an empty folder,
with every name confined to it, no symlinks, and limits on files and bytes. What the crate says
is read afterwards, by :func:`twinprov.app.rerun.read_crate`."""

from __future__ import annotations

__all__ = ["MAX_CRATE_BYTES", "MAX_CRATE_FILES", "copy_folder", "crate_root", "unpack_zip"]

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from twinprov.app.errors import RerunError

MAX_CRATE_FILES = 100_000
"""Most files a crate may hold to be imported (a folder copied or a ``.zip`` unpacked)."""
MAX_CRATE_BYTES = 10 * 1024**3
"""Most bytes (10 GiB) the files of an imported crate may add up to."""
_COPY_CHUNK = 1024 * 1024


class _Budget:
    """Counts the files and bytes of a crate being imported; refuses past the limits."""

    def __init__(self, source: Path) -> None:
        self.source, self.files, self.bytes = source, 0, 0

    def add(self, files: int = 0, size: int = 0) -> None:
        self.files += files
        self.bytes += size
        if self.files > MAX_CRATE_FILES:
            raise RerunError(
                f"{self.source} holds more than {MAX_CRATE_FILES} files "
                "(twinprov.app.crate_unpack.MAX_CRATE_FILES): refused"
            )
        if self.bytes > MAX_CRATE_BYTES:
            raise RerunError(
                f"{self.source} holds more than {MAX_CRATE_BYTES} bytes "
                "(twinprov.app.crate_unpack.MAX_CRATE_BYTES): refused"
            )


def copy_folder(source: Path, dest: Path) -> None:
    """Copy a crate folder into ``dest`` (an empty folder): regular files and folders only."""
    budget = _Budget(source)
    for folder, dirs, files in os.walk(source):  # never follows symlinks
        here = Path(folder)
        rel = here.relative_to(source)
        for name in sorted(dirs) + sorted(files):
            st = (here / name).lstat()
            if stat.S_ISLNK(st.st_mode):
                raise RerunError(f"{source}: {(rel / name).as_posix()} is a symlink: refused")
            if stat.S_ISDIR(st.st_mode):
                (dest / rel / name).mkdir()
            elif stat.S_ISREG(st.st_mode):
                budget.add(1, st.st_size)
                # not following symlinks: a file swapped for one since lstat stays a link
                shutil.copyfile(here / name, dest / rel / name, follow_symlinks=False)
            else:
                raise RerunError(f"{source}: {(rel / name).as_posix()} is not a regular file")


def unpack_zip(archive: Path, dest: Path) -> None:
    """Unpack a crate ``.zip`` into ``dest`` (an empty folder): every name relative, without
    ``..``, not a symlink, inside ``dest`` once resolved; within the file and byte limits."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise RerunError(f"{archive} is not a readable zip archive: {e}") from e
    dest.mkdir()
    root = dest.resolve()
    with zf:
        entries = zf.infolist()
        # the declared counts first (nothing written if they are too many), then the real bytes
        _Budget(archive).add(
            sum(not i.is_dir() for i in entries), sum(i.file_size for i in entries)
        )
        budget = _Budget(archive)
        for info in entries:
            name = info.filename
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
                raise RerunError(f"{archive}: entry {name!r} has an absolute name: refused")
            if "\\" in name or ".." in PurePosixPath(name).parts:
                raise RerunError(f"{archive}: entry {name!r} has an unsafe name: refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise RerunError(f"{archive}: entry {name!r} is a symlink: refused")
            target = (root / name).resolve()
            if not target.is_relative_to(root):
                raise RerunError(f"{archive}: entry {name!r} leaves the crate folder: refused")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            budget.add(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_COPY_CHUNK):
                    budget.add(size=len(chunk))  # the real size: a declared one may lie
                    out.write(chunk)


def crate_root(folder: Path) -> Path:
    """The crate inside an unpacked zip: its top level, or its one top-level folder."""
    if (folder / "ro-crate-metadata.json").is_file():
        return folder
    tops = list(folder.iterdir())
    if len(tops) == 1 and (tops[0] / "ro-crate-metadata.json").is_file():
        return tops[0]
    raise RerunError("the zip archive holds no RO-Crate (no ro-crate-metadata.json at its top)")
