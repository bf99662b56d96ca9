"""Errors of the application layer. Every one is a :class:`TwinprovError`."""

from __future__ import annotations

__all__ = ["RerunError", "RerunRefused"]

from twinprov.provenance.errors import TwinprovError


class RerunError(TwinprovError):
    """A rerun cannot be prepared: not our crate, a changed spec, a missing input…"""


class RerunRefused(RerunError):
    """``rerun_of`` names a run or crate of another workflow; nothing of it is read or recorded."""
