"""A self-contained HTML page of validation records, for people (the records are for machines).

No external assets, no scripts: one page with inline CSS that can be attached to a run crate or
served as is. The markup is the Jinja template ``templates/report.html``, rendered with
autoescaping; this module only decides what to show, as a small view model of plain values.
Every value shown comes from the records and is escaped (column names, data values, errors and
titles are untrusted: they come from the outputs and the specs); nothing derived from a record is
marked safe.
"""

from __future__ import annotations

__all__ = ["render_html"]

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, Template, select_autoescape

from twinprov.validation.run import ValidationRecord, _exception_message

_TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class _Part:
    """One line of the observed / unexpected cell: ``text`` then, if any, ``code`` as code."""

    text: str
    code: str | None = None


@dataclass(frozen=True)
class _Row:
    """One expectation of one record."""

    n: int
    type: str | None
    columns: str
    arguments: str
    ok: bool
    observed: tuple[_Part, ...]
    error: str | None
    chunks: Any
    why: Any


@dataclass(frozen=True)
class _Output:
    """One record: what its summary row and its section show."""

    anchor: str
    record: ValidationRecord
    css: str
    label: str
    sha_matches: bool | None  # None: no digest recorded when the output was produced
    ran: bool  # False: Great Expectations did not run (no expectation results)
    rows: tuple[_Row, ...]

    @property
    def sha_short(self) -> str:
        return (self.record.sha256 or "")[:16]

    @property
    def note(self) -> str:
        return self.record.error or self.record.skip_reason or ""


@cache
def _template() -> Template:
    """The page template, compiled once per process."""
    env = Environment(
        loader=FileSystemLoader(str(_TEMPLATES)),
        autoescape=select_autoescape(["html", "xml"], default=True),
        finalize=lambda value: "" if value is None else value,  # None shows as nothing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html")


def _verdict(record: ValidationRecord) -> tuple[str, str]:
    if record.skipped:
        return "skipped", "SKIPPED — not validated"
    return ("passed", "PASSED") if record.success else ("failed", "FAILED")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _observed(result: Mapping[str, Any]) -> tuple[_Part, ...]:
    """What GX saw: the observed value, or the unexpected count and a few unexpected values."""
    parts: list[_Part] = []
    if "observed_value" in result:
        parts.append(_Part("observed: ", _json(result["observed_value"])))
    if "unexpected_count" in result and result.get("unexpected_count") is not None:
        total = result.get("element_count")
        pct = result.get("unexpected_percent")
        text = f"unexpected: {result.get('unexpected_count')}"
        if total is not None:
            text += f" of {total}"
        if isinstance(pct, int | float):
            text += f" ({pct:.4g}%)"
        parts.append(_Part(text))
        if result.get("missing_count"):
            parts.append(_Part(f"missing: {result['missing_count']}"))
        sample = list(result.get("partial_unexpected_list") or [])[:5]
        if sample:
            parts.append(_Part("e.g. ", _json(sample)))
    absent = list(result.get("partial_missing_list") or [])[:5]
    if absent:  # set expectations: expected values the data lacks
        parts.append(_Part("expected but absent: ", _json(absent)))
    details = result.get("details")
    if not parts and details:
        parts.append(_Part("", _json(details)))
    return tuple(parts)


def _row(n: int, doc: Mapping[str, Any]) -> _Row:
    config = doc.get("expectation_config") or {}
    kwargs = dict(config.get("kwargs") or {})
    kwargs.pop("batch_id", None)
    columns = [str(kwargs.pop(k)) for k in ("column", "column_A", "column_B") if k in kwargs]
    if isinstance(kwargs.get("column_list"), list):
        columns += [str(c) for c in kwargs.pop("column_list")]
    return _Row(
        n=n,
        type=config.get("type"),
        columns=", ".join(columns),
        arguments=_json(kwargs) if kwargs else "",
        ok=bool(doc.get("success")),
        observed=_observed(doc.get("result") or {}),
        error=_exception_message(doc),
        chunks=((doc.get("meta") or {}).get("twinprov") or {}).get("chunks"),
        why=(config.get("meta") or {}).get("why"),
    )


def _output(n: int, record: ValidationRecord) -> _Output:
    css, label = _verdict(record)
    results = record.result.get("results") or []
    return _Output(
        anchor=f"output-{n}",
        record=record,
        css=css,
        label=label,
        sha_matches=(
            None if record.expected_sha256 is None else record.expected_sha256 == record.sha256
        ),
        ran=bool(results),
        rows=tuple(_row(i, doc) for i, doc in enumerate(results, start=1)),
    )


def render_html(records: Sequence[ValidationRecord], *, title: str) -> str:
    """A self-contained HTML page describing validation records.

    Per output: the verdict, the file's sha256 (and whether it matches the one recorded when it
    was produced), counts, the failed expectations, any error or skip reason, and a table of
    every expectation with its result and observed value or unexpected count.

    Args:
        records: The records, shown in this order.
        title: The page title (escaped like every other value).

    Returns:
        The HTML document.
    """
    failed = sum(1 for r in records if not r.success and not r.skipped)
    skipped = sum(1 for r in records if r.skipped)
    return _template().render(
        title=title,
        outputs=[_output(n, r) for n, r in enumerate(records, start=1)],
        passed=len(records) - failed - skipped,
        failed=failed,
        skipped=skipped,
        total=len(records),
    )
