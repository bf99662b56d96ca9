"""A self-contained HTML page of validation records, for people (the records are for machines).

No external assets, no scripts: one page with inline CSS that can be attached to a run crate or
served as is. Every value shown comes from the records and goes through :func:`html.escape`
(column names and data values are untrusted: they come from the outputs).
"""

from __future__ import annotations

__all__ = ["render_html"]

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from twinprov.validation.run import ValidationRecord, _exception_message

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .25rem; }
h2 { font-size: 1.25rem; margin-top: 2.5rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; width: 100%; margin: .75rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem;
              word-break: break-all; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: .75rem; color: #fff;
         font-weight: 600; font-size: .85rem; }
.passed { background: #1a7f37; } .failed { background: #cf222e; }
.skipped { background: #9a6700; }
.ok { color: #1a7f37; font-weight: 600; } .ko { color: #cf222e; font-weight: 600; }
.error { background: #ffebe9; border: 1px solid #ff8182; padding: .5rem .75rem; }
.note { background: #fff8c5; border: 1px solid #d4a72c; padding: .5rem .75rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dt { font-weight: 600; } dd { margin: 0; }
.muted { color: #656d76; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _verdict(record: ValidationRecord) -> tuple[str, str]:
    if record.skipped:
        return "skipped", "SKIPPED — not validated"
    return ("passed", "PASSED") if record.success else ("failed", "FAILED")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _observed(result: Mapping[str, Any]) -> str:
    """What GX saw: the observed value, or the unexpected count and a few unexpected values."""
    parts: list[str] = []
    if "observed_value" in result:
        parts.append(f"observed: <code>{_e(_json(result['observed_value']))}</code>")
    if "unexpected_count" in result and result.get("unexpected_count") is not None:
        count = result.get("unexpected_count")
        total = result.get("element_count")
        pct = result.get("unexpected_percent")
        text = f"unexpected: {_e(count)}"
        if total is not None:
            text += f" of {_e(total)}"
        if isinstance(pct, int | float):
            text += f" ({pct:.4g}%)"
        parts.append(text)
        if result.get("missing_count"):
            parts.append(f"missing: {_e(result['missing_count'])}")
        sample = list(result.get("partial_unexpected_list") or [])[:5]
        if sample:
            parts.append(f"e.g. <code>{_e(_json(sample))}</code>")
    absent = list(result.get("partial_missing_list") or [])[:5]
    if absent:  # set expectations: expected values the data lacks
        parts.append(f"expected but absent: <code>{_e(_json(absent))}</code>")
    details = result.get("details")
    if not parts and details:
        parts.append(f"<code>{_e(_json(details))}</code>")
    return "<br>".join(parts) or '<span class="muted">—</span>'


def _expectation_rows(record: ValidationRecord) -> str:
    results = record.result.get("results") or []
    if not results:
        return '<p class="muted">Great Expectations did not run for this output.</p>'
    rows = []
    for n, doc in enumerate(results, start=1):
        config = doc.get("expectation_config") or {}
        kwargs = dict(config.get("kwargs") or {})
        kwargs.pop("batch_id", None)
        columns = [str(kwargs.pop(k)) for k in ("column", "column_A", "column_B") if k in kwargs]
        if isinstance(kwargs.get("column_list"), list):
            columns += [str(c) for c in kwargs.pop("column_list")]
        ok = bool(doc.get("success"))
        mark = '<span class="ok">✓ pass</span>' if ok else '<span class="ko">✗ fail</span>'
        observed = _observed(doc.get("result") or {})
        raised = _exception_message(doc)
        if raised:
            observed += f'<br><span class="ko">error: {_e(raised)}</span>'
        chunks = ((doc.get("meta") or {}).get("twinprov") or {}).get("chunks")
        if chunks:
            observed += f'<br><span class="muted">combined over {_e(chunks)} chunks</span>'
        why = (config.get("meta") or {}).get("why")
        rows.append(
            "<tr>"
            f"<td>{n}</td>"
            f"<td><code>{_e(config.get('type'))}</code></td>"
            f"<td class='mono'>{_e(', '.join(columns))}</td>"
            f"<td class='mono'>{_e(_json(kwargs)) if kwargs else ''}</td>"
            f"<td>{mark}</td>"
            f"<td>{observed}</td>"
            f"<td>{_e(why)}</td>"
            "</tr>"
        )
    head = (
        "<tr><th>#</th><th>expectation</th><th>column(s)</th><th>arguments</th>"
        "<th>result</th><th>observed / unexpected</th><th>why</th></tr>"
    )
    return f"<table>{head}{''.join(rows)}</table>"


def _section(record: ValidationRecord, anchor: str) -> str:
    css, label = _verdict(record)
    sha = _e(record.sha256) if record.sha256 else '<span class="muted">unreadable</span>'
    if record.expected_sha256 is None:
        expected = '<span class="muted">not recorded</span>'
    elif record.expected_sha256 == record.sha256:
        expected = f'{_e(record.expected_sha256)} <span class="ok">(matches)</span>'
    else:
        expected = f'{_e(record.expected_sha256)} <span class="ko">(differs)</span>'
    out = [
        f'<section id="{anchor}">',
        f'<h2>{_e(record.output)} <span class="badge {css}">{_e(label)}</span></h2>',
        "<dl>",
        f"<dt>file</dt><dd class='mono'>{_e(record.path)}</dd>",
        f"<dt>media type</dt><dd>{_e(record.media_type)}</dd>",
        f"<dt>sha256</dt><dd class='mono'>{sha}</dd>",
        f"<dt>sha256 when produced</dt><dd class='mono'>{expected}</dd>",
        f"<dt>suite</dt><dd>{_e(record.suite)}</dd>",
        f"<dt>expectations</dt><dd>{_e(record.successful)} passed, {_e(record.failed)} failed, "
        f"{_e(record.evaluated)} evaluated</dd>",
        f"<dt>Great Expectations</dt><dd>{_e(record.gx_version)}</dd>",
        "</dl>",
    ]
    if record.error:
        out.append(f'<p class="error"><strong>error:</strong> {_e(record.error)}</p>')
    if record.skip_reason:
        out.append(f'<p class="note"><strong>skipped:</strong> {_e(record.skip_reason)}</p>')
    if record.failed_expectations:
        items = "".join(f"<li><code>{_e(f)}</code></li>" for f in record.failed_expectations)
        out.append(f"<p><strong>failed expectations:</strong></p><ul>{items}</ul>")
    out.append(_expectation_rows(record))
    out.append("</section>")
    return "\n".join(out)


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
    summary_rows = []
    sections = []
    for n, record in enumerate(records, start=1):
        anchor = f"output-{n}"
        css, label = _verdict(record)
        summary_rows.append(
            "<tr>"
            f'<td><a href="#{anchor}">{_e(record.output)}</a></td>'
            f'<td><span class="badge {css}">{_e(label)}</span></td>'
            f"<td>{_e(record.successful)} / {_e(record.evaluated)}</td>"
            f"<td class='mono'>{_e((record.sha256 or '')[:16])}</td>"
            f"<td>{_e(record.error or record.skip_reason or '')}</td>"
            "</tr>"
        )
        sections.append(_section(record, anchor))
    failed = sum(1 for r in records if not r.success and not r.skipped)
    skipped = sum(1 for r in records if r.skipped)
    passed = len(records) - failed - skipped
    summary = (
        f"<p>{passed} passed, {failed} failed, {skipped} skipped "
        f"of {len(records)} output(s).</p>"
        "<table><tr><th>output</th><th>verdict</th><th>expectations passed</th>"
        f"<th>sha256</th><th>note</th></tr>{''.join(summary_rows)}</table>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_e(title)}</h1>\n{summary}\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )
