"""Which expectation results can be combined across chunks, and how.

Sound to combine (the verdict on the whole equals the combination of the verdicts on the
parts):

* **row-local** checks — each row is judged on its own values (value ranges, sets, patterns,
  nulls, pairs of columns within a row). Their per-chunk counts are summed (``element_count``,
  ``unexpected_count``, ``missing_count``) and success is recomputed from the sums with GX's own
  rule, ``(considered - unexpected) / considered >= mostly`` where ``considered`` is the rows
  not missing (so ``mostly`` keeps its meaning over the whole output).
* **schema** checks — the column set, which every chunk shares: success iff every chunk passes.

Everything else needs the whole column at once (row counts, uniqueness, ordering, min/max/mean
and other aggregates, distinct-value sets, types — pandas infers a type per chunk) and is not
combined: an output too large for memory whose suite holds such a check is *skipped*, with the
checks named, rather than given a verdict that might be wrong.
"""

from __future__ import annotations

__all__ = ["MAX_PARTIAL", "combinable", "combine"]

import json
from typing import Any

MAX_PARTIAL = 20  # GX's own cap on partial_unexpected_* lists

ROW_LOCAL = frozenset(
    {
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_be_null",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_match_regex",
        "expect_column_values_to_not_match_regex",
        "expect_column_values_to_match_regex_list",
        "expect_column_values_to_not_match_regex_list",
        "expect_column_values_to_match_like_pattern",
        "expect_column_values_to_not_match_like_pattern",
        "expect_column_values_to_match_like_pattern_list",
        "expect_column_values_to_not_match_like_pattern_list",
        "expect_column_values_to_match_strftime_format",
        "expect_column_values_to_be_dateutil_parseable",
        "expect_column_values_to_be_json_parseable",
        "expect_column_values_to_match_json_schema",
        "expect_column_value_lengths_to_be_between",
        "expect_column_value_lengths_to_equal",
        "expect_column_pair_values_to_be_equal",
        "expect_column_pair_values_a_to_be_greater_than_b",
        "expect_column_pair_values_to_be_in_set",
        "expect_multicolumn_sum_to_equal",
        "expect_select_column_values_to_be_unique_within_record",
    }
)
SCHEMA = frozenset(
    {
        "expect_column_to_exist",
        "expect_table_columns_to_match_set",
        "expect_table_columns_to_match_ordered_list",
        "expect_table_column_count_to_equal",
        "expect_table_column_count_to_be_between",
    }
)


def combinable(expectation_type: str) -> bool:
    """Whether results of this expectation type on chunks combine into the whole's result."""
    return expectation_type in ROW_LOCAL or expectation_type in SCHEMA


def _raised(doc: dict[str, Any]) -> bool:
    info = doc.get("exception_info") or {}
    if "raised_exception" in info:
        return bool(info.get("raised_exception"))
    # GX keys metric-resolution failures by metric id: {id: {"raised_exception": ...}}
    return any(isinstance(v, dict) and v.get("raised_exception") for v in info.values())


def combine(etype: str, kwargs: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One GX-shaped result for an expectation from its per-chunk results (in chunk order).

    Raises:
        ValueError: ``etype`` is not combinable (callers check :func:`combinable` first).
    """
    if not combinable(etype):
        raise ValueError(f"{etype} results cannot be combined across chunks")
    chunk_meta = {"twinprov": {"chunks": len(docs), "combined": True}}
    failed = [d for d in docs if _raised(d)]
    if failed:  # an exception on any chunk: report the first, as GX would for the whole
        return {**failed[0], "success": False, "meta": chunk_meta}
    if etype in SCHEMA:
        first_bad = next((d for d in docs if not d.get("success")), None)
        base = first_bad or docs[0]
        return {**base, "success": first_bad is None, "meta": chunk_meta}

    results = [d.get("result") or {} for d in docs]
    element = sum(int(r.get("element_count") or 0) for r in results)
    unexpected = sum(int(r.get("unexpected_count") or 0) for r in results)
    has_missing = any("missing_count" in r for r in results)
    missing = sum(int(r.get("missing_count") or 0) for r in results)
    considered = element - missing
    mostly = float(kwargs.get("mostly", 1.0))
    success = considered == 0 or (considered - unexpected) / considered >= mostly

    def pct(num: int, den: int) -> float | None:
        return num / den * 100 if den else None

    combined: dict[str, Any] = {
        "element_count": element,
        "unexpected_count": unexpected,
        "unexpected_percent": pct(unexpected, considered),
    }
    if has_missing:
        combined.update(
            missing_count=missing,
            missing_percent=pct(missing, element),
            unexpected_percent_total=pct(unexpected, element),
            unexpected_percent_nonmissing=pct(unexpected, considered),
        )
    values: list[Any] = []
    indices: list[Any] = []
    counts: dict[str, list[Any]] = {}  # json(value) -> [value, count]
    for r in results:
        values.extend(r.get("partial_unexpected_list") or [])
        indices.extend(r.get("partial_unexpected_index_list") or [])
        for item in r.get("partial_unexpected_counts") or []:
            key = json.dumps(item.get("value"), sort_keys=True, default=str)
            counts.setdefault(key, [item.get("value"), 0])[1] += int(item.get("count") or 0)
    if any("partial_unexpected_list" in r for r in results):
        combined["partial_unexpected_list"] = values[:MAX_PARTIAL]
    if any("partial_unexpected_index_list" in r for r in results):
        combined["partial_unexpected_index_list"] = indices[:MAX_PARTIAL]
    if any("partial_unexpected_counts" in r for r in results):
        ranked = sorted(counts.values(), key=lambda vc: -vc[1])[:MAX_PARTIAL]
        combined["partial_unexpected_counts"] = [{"value": v, "count": c} for v, c in ranked]
    return {
        **docs[0],
        "success": success,
        "result": combined,
        "meta": chunk_meta,
    }
