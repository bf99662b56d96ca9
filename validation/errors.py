"""Errors of the validation core. Every error raised on purpose is a TwinprovValidationError.

Bad *data* never raises: :func:`twinprov.validation.run.validate_file` turns every problem with an
output
into a failed :class:`~twinprov.validation.run.ValidationRecord`. Errors are for bad *declarations*
(a
suite that cannot be used) and for the internal readers, whose errors ``validate_file`` catches.
"""

from __future__ import annotations

__all__ = [
    "OutputReadError",
    "SuiteError",
    "TwinprovValidationError",
]

from pathlib import Path


class TwinprovValidationError(Exception):
    """Base class of every error the validation core raises on purpose."""


class SuiteError(TwinprovValidationError):
    """A suite declaration cannot be used: missing file, bad JSON, unknown expectation, bad kwargs.

    Attributes:
        source: The suite file (or ``"inline suite 'NAME'"``) the mistake is in.
        expectation: The expectation type concerned, if the mistake is in one expectation.
        suggestion: The closest known expectation type, for an unknown one.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str,
        expectation: str | None = None,
        suggestion: str | None = None,
    ) -> None:
        self.source = source
        self.expectation = expectation
        self.suggestion = suggestion
        super().__init__(f"{source}: {message}")


class OutputReadError(TwinprovValidationError):
    """An output file cannot be read or parsed as its media type.

    Attributes:
        path: The file.
        reason: What went wrong, in one line.
    """

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")
