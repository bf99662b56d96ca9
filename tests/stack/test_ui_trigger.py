"""The trigger path as a user takes it: a real browser (headless Chromium, Debian ``chromium``)
against the native stack's Airflow UI.

Log in on Airflow's login page, open the demo DAG, open the Trigger dialog, change two params in
the form fields (not the JSON editor), trigger with *Rerun of* left empty (before the params fix
that field was required and kept the Trigger button disabled), let the real scheduler run it, and
find the values typed on the run's Provenance tab (the plugin's external view).

On the way: the seed field refuses ``-1`` (its spec says ``minimum: 0``; Airflow's number field
shows no message but brings the value back to the minimum when the field is left), and in graph
mode, where Airflow draws the run's tabs as icons alone, the Provenance tab has its own icon.

Skipped, with the reason, when no Chromium binary is installed (``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.endpoint.browser import Browser, find_chromium
from tests.stack.services import ServiceError, Stack

DAG_ID = "drought_early_warning"
DIALOG = "[role=dialog][data-state=open]"
SEED = "[name=element_seed]"
SPI_SCALE = "[name=element_spi_scale]"
RERUN_OF = "[name=element_rerun_of]"
PROV_TAB = "a[title=Provenance]"

# the dialog's Trigger button: null while there is none, else whether it can be pressed
TRIGGER_BUTTON = f"""(() => {{
    const b = Array.from(document.querySelectorAll('{DIALOG} button'))
        .find(e => e.innerText.trim() === 'Trigger');
    return b ? {{enabled: !b.disabled}} : null;
}})()"""

TRIGGER_ENABLED = "the Trigger button to be enabled with 'Rerun of' empty"

# the Parameters table of the run page shown in the Provenance tab's iframe, once it is there
PROV_PARAMS = """(() => {
    const frame = document.querySelector('iframe');
    const doc = frame && frame.contentDocument;
    const table = doc && doc.getElementById('params');
    if (!table) return null;
    return Object.fromEntries(Array.from(table.rows).slice(1)
        .map(tr => [tr.cells[0].innerText.trim(), tr.cells[1].innerText.trim()]));
})()"""

# the Provenance tab's icon in graph mode (the tab holds nothing else there)
PROV_TAB_ICON = f"""(() => {{
    const tab = document.querySelector('{PROV_TAB}');
    const img = tab && tab.querySelector('img');
    if (!img || !img.complete || img.naturalWidth === 0) return null;
    return {{src: img.getAttribute('src'), text: tab.innerText.trim()}};
}})()"""


def _value(browser: Browser, selector: str) -> Any:
    return browser.evaluate(f"document.querySelector({json.dumps(selector)}).value")


def _run_ids(stack: Stack) -> set[str]:
    page = stack.rest("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 500})
    return {r["dag_run_id"] for r in page["dag_runs"]}


def test_trigger_form_runs_the_values_typed_and_the_provenance_tab_shows_them(
    stack: Stack, tmp_path: Path
) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    stack.wait_dag(DAG_ID, timeout=180)
    runs_before = _run_ids(stack)
    browser = Browser(binary, tmp_path / "chromium-profile", tmp_path / "chromium.log")
    try:
        # 1. a visitor without a session is sent to the login page; log in on its form
        browser.open(f"{stack.api}/dags/{DAG_ID}")
        browser.wait_for("location.pathname.endsWith('/auth/login')", what="the login page")
        browser.type_into("input[name=username]", "admin")
        browser.type_into("input[name=password]", stack.passwords["admin"])
        browser.click("button[type=submit]")
        browser.wait_for(f"location.pathname === '/dags/{DAG_ID}'", what="the DAG page")

        # 2. the Trigger dialog, with the spec's params as form fields
        browser.click("button", "Trigger")
        browser.wait_for(f"!!document.querySelector('{DIALOG} {SEED}')", what="the params form")
        assert _value(browser, SEED) == "42"
        assert _value(browser, RERUN_OF) == ""
        # the fix: a normal run needs nothing in "Rerun of" (before it, the field was required
        # and the button stayed disabled)
        browser.wait_for(f"({TRIGGER_BUTTON} || {{}}).enabled", 10, TRIGGER_ENABLED)

        # 3. seed = -1 is refused before any run starts: once the field is left it holds the
        # spec's minimum again (Airflow shows no message; the button stays enabled)
        browser.type_into(SEED, "-1")
        assert _value(browser, SEED) == "-1"
        browser.press("Tab", 9)
        browser.wait_for(
            f"document.querySelector('{SEED}').value !== '-1'", 5, "the seed field to refuse -1"
        )
        assert _value(browser, SEED) == "0", "the seed field kept a value below its minimum"
        assert _run_ids(stack) == runs_before
        # and had -1 come as JSON, the API refuses it too (the minimum is in the Param schema)
        with pytest.raises(ServiceError, match="less than the minimum of 0"):
            stack.trigger(DAG_ID, {"seed": -1})
        assert _run_ids(stack) == runs_before

        # 4. the values of this run, typed into the fields
        browser.type_into(SEED, "7")
        browser.type_into(SPI_SCALE, "6")
        browser.press("Tab", 9)
        assert (_value(browser, SEED), _value(browser, SPI_SCALE)) == ("7", "6")
        assert _value(browser, RERUN_OF) == ""
        browser.wait_for(f"({TRIGGER_BUTTON} || {{}}).enabled", 10, TRIGGER_ENABLED)
        browser.click(f"{DIALOG} button", "Trigger")

        # 5. the UI goes to the new run; the scheduler runs it
        path = browser.wait_for(
            f"location.pathname.startsWith('/dags/{DAG_ID}/runs/') && location.pathname",
            what="the new run's page",
        )
        match = re.fullmatch(rf"/dags/{DAG_ID}/runs/([^/]+)", path)
        assert match, path
        run_id = unquote(match.group(1))
        assert _run_ids(stack) - runs_before == {run_id}
        assert stack.wait_runs(DAG_ID, [run_id], timeout=300) == {run_id: "success"}
        conf = stack.rest("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["conf"]
        assert conf["seed"] == 7 and conf["spi_scale"] == 6, conf
        assert conf["region"] == "alps" and conf["fault"] == "none", conf
        assert conf.get("rerun_of") is None, conf

        # 6. the run's Provenance tab (the plugin's page in an iframe) shows those values
        browser.click(PROV_TAB)
        browser.wait_for(
            "location.pathname.endsWith('/plugin/twinprov-run')", what="the Provenance tab"
        )
        params = browser.wait_for(PROV_PARAMS, 60, "the run's parameters on the Provenance tab")
        assert params["seed"] == "7" and params["spi_scale"] == "6", params
        browser.screenshot(tmp_path / "provenance-tab.png")

        # 7. graph mode: the details panel is narrow, Airflow draws each tab as its icon only;
        # the Provenance tab's is the plugin's own, not Airflow's generic plugin icon
        browser.click("button[aria-label^='Show Graph']")
        icon = browser.wait_for(PROV_TAB_ICON, 30, "the Provenance tab's icon in graph mode")
        assert icon["text"] == "" and icon["src"].startswith("data:image/svg+xml,"), icon
        browser.wait_for(PROV_PARAMS, 60, "the Provenance tab beside the graph")
        browser.wait_for(
            "document.querySelectorAll('.react-flow__node').length > 0", 30, "the graph"
        )
        shot = browser.screenshot(tmp_path / "run-graph-mode.png")
    except BaseException:
        with contextlib.suppress(Exception):  # the browser may be what failed
            failure = browser.screenshot(tmp_path / "failure.png")
            print(f"\nscreenshot at the failure: {failure}")
        raise
    finally:
        browser.close()
    print(f"\nrun {run_id} triggered from the form; graph mode screenshot: {shot}")
