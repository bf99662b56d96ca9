"""The CWL conformance figures of `twinprov cwl-runner`, from cwltest's JUnit reports.

Usage (``make conformance`` runs it)::

    python conformance/report.py [--summary SUMMARY.txt] CONFORMANCE_TESTS.yaml OUT.md \
        REPORT.xml [REPORT.xml ...]

Reads the suite (for every test's tags) and one or more JUnit reports written by
``cwltest --junit-xml`` (a later report overrides an earlier one for the tests it ran, so a
partial re-run can be merged into a whole one). Writes OUT.md: per tag, passed / failed /
unsupported / not run out of the tests with that tag, the overall percentage (and without the
``docker`` tests: there is no container engine here), and every failing test with the reason
the runner gave (its last ``twinprov:`` or ``ERROR`` line on stderr).

cwltest's JUnit report has no ``<failure>`` for a ``should_fail`` test that the runner passed
(cwltest 2.7: the case only has its output); its console log does ("Test N failed: …",
"Returned zero but it should be non-zero"). ``--summary`` reads that log, so such a test counts
as failed, with that reason.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from cwltest.utils import load_and_validate_tests

ORDER = [
    "required",
    "command_line_tool",
    "expression_tool",
    "workflow",
    "scatter",
    "subworkflow",
    "inline_javascript",
    "initial_work_dir",
    "shell_command",
    "resource",
    "schema_def",
    "step_input",
    "multiple_input",
    "conditional",
    "secondary_files",
    "env_var",
    "timelimit",
    "networkaccess",
    "inplace_update",
    "load_listing",
    "format_checking",
    "work_reuse",
    "docker",
]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason(case: ET.Element) -> str:
    """The runner's own last word on stderr, else cwltest's failure message."""
    err = _ANSI.sub("", case.findtext("system-err") or "")
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith("twinprov:")]
    if ours:
        return ours[-1][len("twinprov:") :].strip()
    failure = case.find("failure")
    message = (failure.get("message") if failure is not None else "") or ""
    errors = [line for line in lines if "ERROR" in line]
    return (errors[-1] if errors else message or "no reason on stderr")[:300]


def results(reports: list[Path]) -> dict[str, tuple[str, str]]:
    """short name -> (passed | failed | unsupported, reason)."""
    out: dict[str, tuple[str, str]] = {}
    for report in reports:
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("file") or case.get("name") or ""
            if case.find("failure") is not None or case.find("error") is not None:
                out[name] = ("failed", _reason(case))
            elif case.find("skipped") is not None:
                out[name] = ("unsupported", _reason(case))
            else:
                out[name] = ("passed", "")
    return out


_FAILED = re.compile(r"^Test (\d+) failed: ")


def console_failures(summary: Path) -> dict[int, str]:
    """Test number (1-based, in the suite's order) -> the last line cwltest wrote about its
    failure, from cwltest's console log."""
    out: dict[int, str] = {}
    current: int | None = None
    for line in _ANSI.sub("", summary.read_text(encoding="utf-8", errors="replace")).splitlines():
        m = _FAILED.match(line)
        if m:
            current = int(m.group(1))
            out[current] = "failed (cwltest's console log)"
        elif line.startswith("Test ["):
            current = None
        elif current is not None and line.strip():
            out[current] = line.strip()[:300]
    return out


def main(argv: list[str]) -> int:
    summary: Path | None = None
    if argv[:1] == ["--summary"]:
        summary, argv = Path(argv[1]), argv[2:]
    suite, target, reports = Path(argv[0]), Path(argv[1]), [Path(p) for p in argv[2:]]
    tests, _ = load_and_validate_tests(str(suite))
    tags_of = {t["id"].split("#")[-1]: list(t.get("tags") or ["required"]) for t in tests}
    got = results([r for r in reports if r.is_file()])
    if summary is not None and summary.is_file():
        names = list(tags_of)
        for number, reason in console_failures(summary).items():
            name = names[number - 1] if 0 < number <= len(names) else ""
            if got.get(name, ("",))[0] == "passed":  # a should_fail test the JUnit calls passed
                got[name] = ("failed", reason)
    total: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {}
    for name, tags in tags_of.items():
        state = got.get(name, ("not run", ""))[0]
        for tag in [*tags, "all"]:
            total[tag] += 1
            counts.setdefault(tag, Counter())[state] += 1
    no_docker = [n for n, tags in tags_of.items() if "docker" not in tags]
    ran = sum(1 for n in tags_of if n in got)
    lines = [
        "# CWL v1.2 conformance of `twinprov cwl-runner`",
        "",
        f"Written by `make conformance` (conformance/report.py) from {len(reports)} cwltest "
        f"report(s); {ran} of the suite's {len(tags_of)} tests ran.",
        "",
        "| tag | passed | failed | unsupported | not run | total |",
        "|---|---|---|---|---|---|",
    ]
    extra = sorted(t for t in total if t not in ORDER and t != "all")
    for tag in [*ORDER, *extra, "all"]:
        if tag not in total:
            continue
        c = counts[tag]
        lines.append(
            f"| `{tag}` | {c['passed']} | {c['failed']} | {c['unsupported']} | {c['not run']} "
            f"| {total[tag]} |"
        )
    passed = sum(1 for n in tags_of if got.get(n, ("",))[0] == "passed")
    passed_nd = sum(1 for n in no_docker if got.get(n, ("",))[0] == "passed")
    lines += [
        "",
        f"Overall: {passed} / {len(tags_of)} passed ({100 * passed / len(tags_of):.1f} %); "
        f"without the `docker` tests: {passed_nd} / {len(no_docker)} "
        f"({100 * passed_nd / max(len(no_docker), 1):.1f} %).",
        "",
        "## Tests that did not pass, with the reason",
        "",
    ]
    bad = [(n, got[n]) for n in tags_of if n in got and got[n][0] != "passed"]
    if not bad:
        lines.append("None.")
    for name, (state, reason) in bad:
        docker = " (needs a Docker engine: tag `docker`)" if "docker" in tags_of[name] else ""
        lines.append(f"- `{name}` [{', '.join(tags_of[name])}] {state}{docker}: {reason}")
    missing = [n for n in tags_of if n not in got]
    if missing:
        lines += ["", f"## Not run ({len(missing)})", "", ", ".join(f"`{n}`" for n in missing)]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[: lines.index("## Tests that did not pass, with the reason")]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
