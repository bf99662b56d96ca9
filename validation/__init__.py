"""twinprov's data-quality validation: Great Expectations 1.x suites run on workflow outputs,
results as plain records bound to each output's sha256. Imports no Airflow.

The public names are importable from here; they load on first use (``import validation`` stays
cheap: pandas is imported with :mod:`twinprov.validation.run`, Great Expectations on first
validation).

* :mod:`twinprov.validation.suites` — :func:`load_suite`, :class:`SuiteSpec`,
  :func:`known_expectation_types`
* :mod:`twinprov.validation.run` — :func:`validate_file`, :class:`ValidationRecord`,
  :func:`gx_version`
* :mod:`twinprov.validation.report` — :func:`render_html`
* :mod:`twinprov.validation.errors` — :class:`TwinprovValidationError`, :class:`SuiteError`,
  :class:`OutputReadError`
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "OutputReadError",
    "SuiteError",
    "SuiteSpec",
    "TwinprovValidationError",
    "ValidationRecord",
    "gx_version",
    "known_expectation_types",
    "load_suite",
    "render_html",
    "validate_file",
]

_HOME = {
    "OutputReadError": "twinprov.validation.errors",
    "SuiteError": "twinprov.validation.errors",
    "TwinprovValidationError": "twinprov.validation.errors",
    "SuiteSpec": "twinprov.validation.suites",
    "known_expectation_types": "twinprov.validation.suites",
    "load_suite": "twinprov.validation.suites",
    "ValidationRecord": "twinprov.validation.run",
    "gx_version": "twinprov.validation.run",
    "validate_file": "twinprov.validation.run",
    "render_html": "twinprov.validation.report",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'validation' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
