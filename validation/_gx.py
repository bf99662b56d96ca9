"""The one place that talks to Great Expectations (imported lazily: it takes ~3 s to import).

One ephemeral Data Context per process (no project folder on disk, progress bars off, nothing
sent anywhere), with one pandas data source, one dataframe asset and one whole-dataframe batch
definition, built on first use and reused. GX calls are serialised by a lock: a Data Context is
not documented as thread-safe, and the validation task runs one validation at a time anyway.
After a fork the child builds its own context (the cache is keyed by process id).
"""

from __future__ import annotations

__all__ = [
    "TAG",
    "USE_VALIDATOR_DIRECTLY",
    "expectation_field_names",
    "expectation_registry",
    "gx_version",
    "instantiate_expectation",
    "run_expectations",
]

import functools
import importlib.metadata
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

TAG = "_twinprov_index"
"""Meta key marking each expectation with its position in the suite (GX reorders results)."""

_DATASOURCE = "twinprov"
_ASSET = "frame"
_BATCH_DEFINITION = "whole"
_RESULT_FORMAT: Final = "SUMMARY"
_LOCK = threading.RLock()


@dataclass
class _Context:
    pid: int
    context: Any
    batch_definition: Any


_state: _Context | None = None


def _import_gx() -> Any:
    # Analytics off for this process unless the user decided otherwise; GX 1.24 ships no
    # analytics client, the variable keeps older or newer releases quiet as well.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    return gx


@functools.cache
def gx_version() -> str:
    """Version of the installed Great Expectations (read without importing it)."""
    try:
        return importlib.metadata.version("great_expectations")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed by pyproject
        return str(_import_gx().__version__)


def expectation_registry() -> list[str]:
    """Names of all expectation types in GX's registry (core ones registered first)."""
    _import_gx()
    from great_expectations.expectations.registry import (
        list_registered_expectation_implementations,
        register_core_expectations,
    )

    register_core_expectations()
    return list(list_registered_expectation_implementations())


def _expectation_class(etype: str) -> Any:
    _import_gx()
    from great_expectations.expectations.registry import get_expectation_impl

    return get_expectation_impl(etype)


def expectation_field_names(etype: str) -> frozenset[str]:
    """Names the GX class of ``etype`` accepts (its pydantic fields)."""
    cls = _expectation_class(etype)
    return frozenset(getattr(cls, "__fields__", {}))


def instantiate_expectation(etype: str, kwargs: dict[str, Any], meta: dict[str, Any]) -> Any:
    """A fresh GX Expectation object (raises pydantic's ValidationError on bad kwargs)."""
    return _expectation_class(etype)(**kwargs, meta=meta)


def _context() -> _Context:
    global _state
    pid = os.getpid()
    if _state is None or _state.pid != pid:
        gx = _import_gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        asset = context.data_sources.add_pandas(_DATASOURCE).add_dataframe_asset(_ASSET)
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
        _state = _Context(pid=pid, context=context, batch_definition=batch_definition)
    return _state


def _release_batch_data(state: _Context) -> None:
    """Best effort: drop GX's reference to the last validated DataFrame (it keeps one)."""
    try:
        datasource = state.context.data_sources.all()[_DATASOURCE]
        manager = datasource.execution_engine.batch_manager
        manager.reset_batch_cache()
        manager._batch_data_cache.clear()  # noqa: SLF001 - no public way to free it
    except Exception:  # noqa: BLE001 - an internal detail of GX; never fail a validation on it
        pass


USE_VALIDATOR_DIRECTLY = True
"""Run suites through GX's V1 ``Validator`` (what ``Batch.validate`` calls) rather than
``batch_definition.get_batch(...).validate(...)``: the documented path builds the batch twice,
and GX fingerprints the whole DataFrame each time (about a quarter of GX's time on a large
frame). Falls back to the documented path if that class is not importable."""


def _validate(state: _Context, frame: pd.DataFrame, suite: Any) -> Any:
    parameters = {"dataframe": frame}
    if USE_VALIDATOR_DIRECTLY:
        try:
            from great_expectations.validator.v1_validator import Validator
        except ImportError:  # pragma: no cover - GX moved it; use the documented path
            pass
        else:
            validator = Validator(
                batch_definition=state.batch_definition,
                batch_parameters=parameters,
                result_format=_RESULT_FORMAT,
            )
            return validator.validate_expectation_suite(suite)
    batch = state.batch_definition.get_batch(batch_parameters=parameters)
    return batch.validate(suite, result_format=_RESULT_FORMAT)


def run_expectations(
    frame: pd.DataFrame, expectations: Sequence[tuple[int, dict[str, Any]]], suite_name: str
) -> dict[int, dict[str, Any]]:
    """Validate ``frame`` against the given suite expectations in one GX run.

    Args:
        frame: The data, fully in memory.
        expectations: ``(index in suite, {"type", "kwargs", "meta"})`` pairs.
        suite_name: Name of the (transient) GX suite.

    Returns:
        GX's JSON result (``ExpectationValidationResult.to_json_dict()``) of each expectation,
        keyed by its index in the suite; the index tag GX carried in ``meta`` is removed.
    """
    gx = _import_gx()
    with _LOCK:
        state = _context()
        suite = gx.ExpectationSuite(
            name=suite_name,
            expectations=[
                instantiate_expectation(e["type"], e["kwargs"], {**e["meta"], TAG: index})
                for index, e in expectations
            ],
        )
        try:
            suite_result = _validate(state, frame, suite)
            out: dict[int, dict[str, Any]] = {}
            for result in suite_result.results:
                doc = result.to_json_dict()
                config = doc.get("expectation_config") or {}
                meta = dict(config.get("meta") or {})
                index = meta.pop(TAG, None)
                config["meta"] = meta
                if index is not None:  # a result GX could not tie to its config is dropped,
                    out[int(index)] = doc  # and reported as "returned no result" by the caller
            return out
        finally:
            _release_batch_data(state)
