"""Errors of the crate builders. Every one is a
:class:`~twinprov.provenance.errors.TwinprovError`."""

from __future__ import annotations

__all__ = [
    "ConformanceError",
    "CrateError",
    "CrateInputError",
    "CrateWriteError",
    "SpecChangedError",
]

from twinprov.provenance.errors import TwinprovError


class CrateError(TwinprovError):
    """Base class of every error raised while describing or writing a run's RO-Crate."""


class CrateInputError(CrateError):
    """What the ledger and the spec say about a run is not enough to describe it in a crate."""


class SpecChangedError(CrateInputError):
    """The workflow spec file no longer has the bytes the run was started with."""

    def __init__(self, path: str, recorded: str, current: str) -> None:
        self.path = path
        self.recorded = recorded
        self.current = current
        super().__init__(
            f"the workflow spec {path} changed since the run (sha256 {current[:12]}…, "
            f"the run recorded {recorded[:12]}…); the crate would describe another workflow"
        )


class CrateWriteError(CrateError):
    """The crate folder could not be written (disk full, permissions, a file vanished…)."""


class ConformanceError(CrateError):
    """The conformance checker could not run (not installed, crashed, unreadable report)."""
