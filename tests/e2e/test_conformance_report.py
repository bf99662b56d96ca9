"""conformance/report.py: the figures of `make conformance` count a `should_fail` test that the
runner passed as failed, though cwltest's JUnit report records no failure for it (only its
console log does)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

CONFORMANCE = Path(os.environ.get("CWL_TESTS", REPO.parent / "shared" / "cwl-v1.2-conformance"))
SUITE = CONFORMANCE / "conformance_tests.yaml"


def _report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("report", REPO / "conformance" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not SUITE.is_file(), reason="the CWL v1.2 conformance tests are not here")
def test_a_should_fail_test_that_passed_counts_as_failed(tmp_path: Path) -> None:
    report = _report()
    from cwltest.utils import load_and_validate_tests

    tests, _ = load_and_validate_tests(str(SUITE))
    names = [t["id"].split("#")[-1] for t in tests]
    k = names.index("illegal_symlink") + 1  # cwltest numbers the suite's tests from 1
    # what cwltest 2.7 writes for it: a testcase with output and no <failure> ...
    junit = tmp_path / "report.xml"
    junit.write_text(
        '<testsuites><testsuite name="cwltest">'
        '<testcase name="symlink outside" file="illegal_symlink"><system-out>{}</system-out>'
        '</testcase><testcase name="symlink inside" file="legal_symlink"/>'
        "</testsuite></testsuites>"
    )
    # ... and on the console, the failure
    summary = tmp_path / "summary.txt"
    summary.write_text(
        f"Test [{k}/378] illegal_symlink: symlink should NOT be retrieved\n\n"
        f"Test [{k + 1}/378] legal_symlink: symlink should be retrieved\n\n"
        f"Test {k} failed: twinprov cwl-runner --quiet symlink-illegal.cwl empty.json\n"
        "symlink to file outside of working directory should NOT be retrieved\n"
        "Returned zero but it should be non-zero\n"
        f"Test [{k + 2}/378] next: …\n"
    )
    out = tmp_path / "RESULTS.md"
    assert report.main([str(SUITE), str(out), str(junit)]) == 0
    assert "`illegal_symlink`" not in out.read_text()  # JUnit alone: a pass
    assert report.main(["--summary", str(summary), str(SUITE), str(out), str(junit)]) == 0
    text = out.read_text()
    assert (
        "- `illegal_symlink` [command_line_tool, inputs_should_parse] failed: "
        "Returned zero but it should be non-zero"
    ) in text
    assert "`legal_symlink`" not in text.split("with the reason")[1]
    assert "| `all` | 1 | 1 | 0 | 376 | 378 |" in text
