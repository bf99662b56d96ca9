"""The HTML report: readable verdicts, every expectation, and escaped values."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import escape

from tests.validation.conftest import CSV, NETCDF, sha256_of, spi_dataset, suite_of, write_nc
from twinprov.validation.report import render_html
from twinprov.validation.run import validate_file
from twinprov.validation.suites import SuiteSpec

EVIL = '<script>alert("x")</script>&'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_shows_verdicts_and_failed_expectations(
    tmp_path: Path, spi_suite: SuiteSpec
) -> None:
    good = write_nc(spi_dataset(), tmp_path / "good.nc")
    bad = write_nc(spi_dataset(nan_cells=9), tmp_path / "bad.nc")
    records = [
        validate_file(
            good,
            output="spi_ok",
            media_type=NETCDF,
            suite=spi_suite,
            expected_sha256=sha256_of(good),
        ),
        validate_file(
            bad,
            output="spi_nan",
            media_type=NETCDF,
            suite=spi_suite,
            expected_sha256=sha256_of(bad),
        ),
        validate_file(
            good, output="spi_tif", media_type="image/tiff", suite=spi_suite, expected_sha256=None
        ),
    ]
    page = render_html(records, title="Drought run 42")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>Drought run 42</title>" in page
    assert "1 passed, 1 failed, 1 skipped of 3 output(s)" in page
    assert "expect_column_values_to_not_be_null(spi)" in page  # the failed one, listed
    assert "unexpected: 9 of 1152" in page  # and its count in the table
    assert records[1].sha256 is not None and records[1].sha256 in page
    assert page.count("<tr>") >= 3 + 4 + 4  # summary rows + one row per expectation
    assert "SKIPPED" in page and "no reader for media type" in page
    # self-contained: no external assets, no scripts
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page


def test_report_escapes_a_malicious_column_name(tmp_path: Path) -> None:
    path = tmp_path / "evil.csv"
    pd.DataFrame({EVIL: [1.0, np.nan], "b": [EVIL, "ok"]}).to_csv(path, index=False)
    suite = suite_of(
        ("expect_column_values_to_not_be_null", {"column": EVIL}),
        ("expect_column_values_to_be_in_set", {"column": "b", "value_set": ["ok"]}),
        name=EVIL,
    )
    record = validate_file(path, output=EVIL, media_type=CSV, suite=suite, expected_sha256=None)
    assert record.failed_expectations == (
        f"expect_column_values_to_not_be_null({EVIL})",
        "expect_column_values_to_be_in_set(b)",
    )
    missing = validate_file(
        path,
        output="missing",
        media_type=CSV,
        suite=suite_of(("expect_column_values_to_not_be_null", {"column": EVIL + "2"})),
        expected_sha256=None,
    )
    page = render_html([record, missing], title=EVIL)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;" in page  # Jinja's escaping
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.tags
    text = "".join(parser.text)
    assert f"expect_column_values_to_not_be_null({EVIL})" in text  # readable once unescaped
    assert EVIL in text  # the unexpected value, shown as text


# markup that runs if it reaches the page unescaped: a script element, and one that closes an
# attribute value and opens an element with an event handler
PLANTED = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'


class _Elements(_Tags):
    """Every element and attribute the parser sees (what would be live in a browser)."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        self.attrs += [name for name, _ in attrs]


def test_report_escapes_planted_markup_in_every_value(tmp_path: Path) -> None:
    path = tmp_path / "evil.csv"
    pd.DataFrame({PLANTED: [1.0, np.nan], "b": [PLANTED, "ok"]}).to_csv(path, index=False)
    suite = suite_of(
        ("expect_column_values_to_not_be_null", {"column": PLANTED}),  # a planted column name
        ("expect_column_most_common_value_to_be_in_set", {"column": "b", "value_set": ["x"]}),
        ("expect_column_values_to_be_in_set", {"column": "b", "value_set": ["ok"]}),
        name=PLANTED,
    )
    ran = validate_file(path, output=PLANTED, media_type=CSV, suite=suite, expected_sha256=None)
    assert ran.failed_expectations[0] == f"expect_column_values_to_not_be_null({PLANTED})"
    results = [dict(doc) for doc in ran.result["results"]]
    assert results[1]["result"]["observed_value"] == [PLANTED, "ok"]  # a planted observed value
    results[0]["exception_info"] = {"raised_exception": True, "exception_message": PLANTED}
    record = dataclasses.replace(
        ran,
        error=PLANTED,  # a planted error message
        expected_sha256=PLANTED,
        result={**ran.result, "results": results},
    )
    skipped = dataclasses.replace(ran, skipped=True, success=False, skip_reason=PLANTED)

    page = render_html([record, skipped], title=PLANTED)

    assert "<script" not in page and "<img" not in page and PLANTED not in page
    assert str(escape(PLANTED)) in page  # shown, escaped (Jinja/markupsafe): &lt;script&gt;…
    parser = _Elements()
    parser.feed(page)
    assert not {"script", "img"} & set(parser.tags)
    assert not [a for a in parser.attrs if a.startswith("on") or a == "src"]
    text = "".join(parser.text)  # what a reader sees: every planted value, as text
    for shown in (
        PLANTED,  # title, output name, suite, error, skip reason
        f"expect_column_values_to_not_be_null({PLANTED})",  # a failed expectation
        f"error: {PLANTED}",  # an expectation's exception message
        json.dumps([PLANTED, "ok"], ensure_ascii=False),  # an observed value
        f"e.g. {json.dumps([PLANTED], ensure_ascii=False)}",  # unexpected values
    ):
        assert shown in text, shown
    assert text.count(PLANTED) >= 12
