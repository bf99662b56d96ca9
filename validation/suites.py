"""Expectation suites: loading and checking the declaration of a Great Expectations 1.x suite.

A suite file has the GX 1.x suite JSON shape::

    {"name": "spi",
     "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "spi"},
         "meta": {"why": "a gap in the SPI hides a drought"}}]}

``expectation_type`` is accepted as an alias of ``type``. Keys GX writes when it exports a suite
(``id``, ``notes``, ``description``, ``severity``, ``rendered_content`` on expectations; ``id``,
``meta``, ``notes`` on the suite) are accepted and ignored: they do not change a verdict. Any
other key is a mistake and raises :class:`~twinprov.validation.errors.SuiteError`.

Every expectation is checked when the suite is loaded, not when it runs: its type must be in
GX's registry (the error suggests the closest known name) and its kwargs must be accepted by the
GX expectation class (a missing ``column``, a misspelt argument, a string where a number
belongs). Loading therefore imports Great Expectations (about 3 s the first time in a process).
"""

from __future__ import annotations

__all__ = [
    "SuiteSpec",
    "known_expectation_types",
    "load_suite",
]

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinprov.validation.errors import SuiteError

_SUITE_KEYS = frozenset({"name", "expectations", "id", "meta", "notes"})
_EXPECTATION_KEYS = frozenset({"type", "expectation_type", "kwargs", "meta"})
_IGNORED_EXPECTATION_KEYS = frozenset(
    {"id", "notes", "description", "severity", "rendered_content"}
)
# Expectation-object fields GX would accept as kwargs but that are not arguments of the check:
# they would change how a record is built (result_format, catch_exceptions) or clash with ours.
_RESERVED_KWARGS = frozenset(
    {
        "id",
        "meta",
        "notes",
        "description",
        "rendered_content",
        "severity",
        "batch_id",
        "result_format",
        "catch_exceptions",
        "windows",
    }
)


@dataclass(frozen=True)
class SuiteSpec:
    """A checked expectation suite, ready to run.

    Attributes:
        name: The suite's name in validation records (and GX results).
        expectations: One ``{"type": str, "kwargs": dict, "meta": dict}`` per expectation, in
            declaration order, holding plain JSON values only.
        source: The suite file it was loaded from, or ``None`` for an inline suite.
    """

    name: str
    expectations: tuple[dict[str, Any], ...]
    source: str | None

    def to_json_dict(self) -> dict[str, Any]:
        """The suite in GX 1.x suite JSON shape (what :func:`load_suite` reads)."""
        return {
            "name": self.name,
            "expectations": [
                {"type": e["type"], "kwargs": dict(e["kwargs"]), "meta": dict(e["meta"])}
                for e in self.expectations
            ],
        }

    @property
    def digest(self) -> str:
        """sha256 of the suite's canonical JSON: identifies the exact checks that ran."""
        canonical = json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@functools.cache
def known_expectation_types() -> frozenset[str]:
    """Snake-case names of every expectation type registered in Great Expectations.

    Read from GX's own registry (core expectations, plus any a plugin registered before the
    first call), e.g. ``expect_column_values_to_be_between``. Cached for the process.
    """
    from twinprov.validation._gx import expectation_registry

    return frozenset(expectation_registry())


def load_suite(
    *,
    suite_file: Path | None = None,
    inline: list[dict[str, Any]] | None = None,
    name: str,
) -> SuiteSpec:
    """Load and check a suite, from a GX suite JSON file or from an inline list of expectations.

    Args:
        suite_file: A GX 1.x suite JSON file. Exactly one of ``suite_file`` and ``inline``.
        inline: The expectations themselves, each ``{"type", "kwargs", "meta"?}``.
        name: The suite's name in records (a file's own ``name`` key is not used for this).

    Returns:
        The checked suite.

    Raises:
        SuiteError: The file is missing or not JSON, the suite has no expectations, an
            expectation has an unknown type (the message suggests the closest known one), lacks
            a ``kwargs`` mapping, or has kwargs its GX class refuses. The message names the file
            (or the inline suite) and the expectation.
    """
    if (suite_file is None) == (inline is None):
        raise SuiteError(
            "give exactly one of suite_file and inline expectations", source=_inline_source(name)
        )
    if suite_file is not None:
        source = str(suite_file)
        raw_list = _read_suite_file(Path(suite_file))
    else:
        source = _inline_source(name)
        if not isinstance(inline, list):
            raise SuiteError(
                f"inline expectations must be a list, not {type(inline).__name__}", source=source
            )
        raw_list = inline
    if not raw_list:
        raise SuiteError("the suite has no expectations (it would pass vacuously)", source=source)
    expectations = tuple(
        _check_expectation(raw, index, source) for index, raw in enumerate(raw_list)
    )
    return SuiteSpec(
        name=name,
        expectations=expectations,
        source=str(suite_file) if suite_file is not None else None,
    )


def _inline_source(name: str) -> str:
    return f"inline suite {name!r}"


def _read_suite_file(path: Path) -> list[Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise SuiteError("suite file does not exist", source=source) from e
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"cannot read suite file: {e}", source=source) from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SuiteError(
            f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", source=source
        ) from e
    if not isinstance(doc, dict):
        raise SuiteError(
            f"a suite file holds a JSON object, not {type(doc).__name__}", source=source
        )
    unknown = sorted(set(doc) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(
            f"unknown key(s) {', '.join(map(repr, unknown))} "
            f"(a suite has: {', '.join(sorted(_SUITE_KEYS))})",
            source=source,
        )
    expectations = doc.get("expectations")
    if not isinstance(expectations, list):
        raise SuiteError("'expectations' must be a list of expectations", source=source)
    return expectations


def _check_expectation(raw: Any, index: int, source: str) -> dict[str, Any]:
    where = f"expectation #{index + 1}"
    if not isinstance(raw, Mapping):
        raise SuiteError(f"{where} must be an object, not {type(raw).__name__}", source=source)
    etype = raw.get("type", raw.get("expectation_type"))
    if "type" in raw and "expectation_type" in raw and raw["type"] != raw["expectation_type"]:
        raise SuiteError(
            f"{where} has both 'type' {raw['type']!r} and 'expectation_type' "
            f"{raw['expectation_type']!r}",
            source=source,
        )
    if not isinstance(etype, str) or not etype:
        raise SuiteError(f"{where} has no 'type'", source=source)
    where = f"{where} ({etype})"
    unknown_keys = sorted(set(raw) - _EXPECTATION_KEYS - _IGNORED_EXPECTATION_KEYS)
    if unknown_keys:
        raise SuiteError(
            f"{where} has unknown key(s) {', '.join(map(repr, unknown_keys))} "
            "(an expectation has: type, kwargs, meta)",
            source=source,
            expectation=etype,
        )
    known = known_expectation_types()
    if etype not in known:
        suggestion = _closest(etype, known)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise SuiteError(
            f"{where}: unknown expectation type {etype!r}{hint}",
            source=source,
            expectation=etype,
            suggestion=suggestion,
        )
    kwargs = raw.get("kwargs")
    if not isinstance(kwargs, Mapping):
        got = "missing" if kwargs is None else f"a {type(kwargs).__name__}"
        raise SuiteError(
            f"{where} needs a 'kwargs' mapping of its arguments (got {got})",
            source=source,
            expectation=etype,
        )
    meta = raw.get("meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise SuiteError(f"{where}: 'meta' must be an object", source=source, expectation=etype)
    reserved = sorted(set(kwargs) & _RESERVED_KWARGS)
    if reserved:
        raise SuiteError(
            f"{where}: {', '.join(map(repr, reserved))} is not an argument of the expectation",
            source=source,
            expectation=etype,
        )
    try:
        plain_kwargs = json.loads(json.dumps(dict(kwargs), allow_nan=False))
        plain_meta = json.loads(json.dumps(dict(meta), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise SuiteError(
            f"{where}: kwargs and meta must be plain JSON values ({e})",
            source=source,
            expectation=etype,
        ) from e
    problem = _kwargs_problem(etype, plain_kwargs)
    if problem:
        raise SuiteError(f"{where}: {problem}", source=source, expectation=etype)
    return {"type": etype, "kwargs": plain_kwargs, "meta": plain_meta}


def _closest(name: str, known: frozenset[str]) -> str | None:
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()  # ExpectColumn... -> expect_column...
    if snake in known:
        return snake
    matches = difflib.get_close_matches(snake, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _kwargs_problem(etype: str, kwargs: dict[str, Any]) -> str | None:
    """Why GX's class for ``etype`` refuses these kwargs, in one line; None if it accepts them."""
    from twinprov.validation._gx import expectation_field_names, instantiate_expectation

    try:
        instantiate_expectation(etype, kwargs, {})
    except Exception as e:  # pydantic (v1) ValidationError, or GX's own config errors
        errors = getattr(e, "errors", None)
        if not callable(errors):
            return f"invalid arguments: {e}"
        fields = expectation_field_names(etype)
        by_field: dict[str, list[str]] = {}
        for err in errors():
            loc = ".".join(str(p) for p in err.get("loc", ())) or "__root__"
            by_field.setdefault(loc, []).append(str(err.get("msg", "")))
        parts = []
        for loc, msgs in by_field.items():
            if loc == "__root__":
                parts.extend(msgs)
            elif any("extra fields not permitted" in m for m in msgs):
                close = difflib.get_close_matches(loc, sorted(fields - _RESERVED_KWARGS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                parts.append(f"unknown argument {loc!r}{hint}")
            elif any(m == "field required" for m in msgs):
                parts.append(f"missing argument {loc!r}")
            elif len(msgs) == 1:
                parts.append(f"{loc}: {msgs[0]}")
            else:  # a Union field: one message per alternative type, say it once
                parts.append(f"{loc}: invalid value {kwargs.get(loc)!r}")
        return "; ".join(parts) or f"invalid arguments: {e}"
    return None
