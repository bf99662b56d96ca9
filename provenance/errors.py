"""Errors of the provenance core. Every user-facing mistake is a subclass of TwinprovError."""

from __future__ import annotations

__all__ = [
    "CwlError",
    "CwlUnsupportedError",
    "LedgerError",
    "PublishError",
    "QueryError",
    "RunNotFoundError",
    "SpecError",
    "SpecIssue",
    "StoreError",
    "TwinprovError",
    "WorkspaceError",
]

from dataclasses import dataclass


class TwinprovError(Exception):
    """Base class of every error twinprov raises on purpose."""


@dataclass(frozen=True)
class SpecIssue:
    """One mistake in a workflow spec, located by its field path (e.g. ``steps[1].needs``)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(TwinprovError):
    """A ``[twinprov]`` setting has a value twinprov cannot use; the message names the key."""


class SpecError(TwinprovError):
    """A workflow spec is malformed; carries every issue found, not just the first."""

    def __init__(self, source: str, issues: list[SpecIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = "; ".join(str(i) for i in self.issues)
        super().__init__(f"invalid workflow spec {source}: {lines}")


class WorkspaceError(TwinprovError):
    """A path would leave the run workspace (``..``, absolute, or a symlink pointing out)."""


class LedgerError(TwinprovError):
    """The ledger (SQL event store) cannot be reached or written."""


class StoreError(TwinprovError):
    """The graph store cannot be opened, written or queried."""


class QueryError(TwinprovError):
    """A SPARQL query is malformed or failed."""


class RunNotFoundError(TwinprovError):
    """No recorded run matches what the user named."""


class PublishError(TwinprovError):
    """A run's provenance could not be turned into documents."""


class CwlError(TwinprovError):
    """A CWL document or job that twinprov cannot run; the message names the file (and, where
    the parser reports one, the line)."""


class CwlUnsupportedError(CwlError):
    """A CWL feature twinprov does not run (an unknown requirement, a DockerRequirement where
    no container may run); the message names the feature, the file and the line. ``cwl-runner``
    exits with code 33, as cwltool does."""
