"""A real browser opens the run page: headless Chromium (Debian ``chromium``) started by the test.

Skipped, with the reason, when no Chromium binary is installed (``apt-get install chromium``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.endpoint.browser import Browser, find_chromium
from tests.endpoint.conftest import Stack


def test_run_page_renders_the_graph_picture_and_the_output_table(
    stack: Stack,
    tmp_path: Path,
    summaries: dict[str, object],
    record_property: Callable[[str, object], None],
) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    run = stack.runs["prov_alpha"]
    url = f"{stack.base}/twinprov/runs/prov_alpha/{quote(run['run_id'], safe='')}"
    browser = Browser(binary, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        browser.open(url, cookies={"_token": stack.tokens["admin"]})
        picture = browser.evaluate(
            """(() => { const img = document.getElementById('prov-graph');
                 return img ? {complete: img.complete, width: img.naturalWidth,
                               height: img.naturalHeight, src: img.currentSrc} : null; })()"""
        )
        rows = browser.evaluate(
            """Array.from(document.querySelectorAll('#outputs tr')).slice(1)
                 .map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))"""
        )
        title = browser.evaluate("document.title")
        shot = browser.screenshot(tmp_path / "run-page.png")
    finally:
        browser.close()
    print(f"\nscreenshot of the run page: {shot}")
    record_property("screenshot", str(shot))
    assert picture is not None, "the page has no PROV graph picture"
    assert picture["complete"] and picture["width"] > 100 and picture["height"] > 100, picture
    assert picture["src"].endswith("/graph.svg")
    summary: dict = summaries["prov_alpha"]  # type: ignore[assignment]
    expected = {(o["name"], o["sha256"]) for s in summary["steps"] for o in s["outputs"]}
    assert {(r[1], r[3]) for r in rows} == expected, rows
    assert "prov_alpha" in title
    assert shot.stat().st_size > 10_000
