"""Markup in spec values and errors is text in ``ro-crate-preview.html`` and the crate's README."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import yaml

from tests.ro_crates.conftest import StepRun, record_run
from tests.ro_crates.test_assemble import RUN, mini_spec
from twinprov.provenance.config import Settings
from twinprov.ro_crates.assemble import crate_input_from_ledger
from twinprov.ro_crates.crate import build_crate

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
BAD = f"{SCRIPT} {IMG}"
ERROR = f"boom {BAD}\n| a | b | [x](javascript:alert(1))"
RAW = ("<script", "<img", "onerror=alert(1)>")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def hostile_spec(tmp_path: Path) -> Path:
    spec = mini_spec(tmp_path)
    doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
    doc["description"] = f"desc {BAD}"
    doc["version"] = f"1.0 {BAD}"
    doc["authors"][0]["name"] = f"Ada {BAD}"
    doc["license"] = f"MIT {BAD}"
    doc["params"]["seed"]["description"] = f"seed {BAD}"
    for step in doc["steps"]:
        step["description"] = f"step {BAD}"
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return spec


def test_preview_and_readme_escape_markup(settings: Settings, tmp_path: Path) -> None:
    spec = hostile_spec(tmp_path)
    record_run(
        settings,
        spec,
        RUN,
        [
            StepRun("make", {"raw": b"1 2 3\n", "big": b"\0" * 5000}),
            StepRun("summarise", state="failed", error=ERROR, exit_code=1),
        ],
    )
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    crate = build_crate(data, tmp_path / "crate")
    preview = (crate / "ro-crate-preview.html").read_text(encoding="utf-8")
    for raw in RAW:
        assert raw not in preview, raw
    # the values are there, as text: an HTML parser sees no script or img element
    parsed = _Page()
    parsed.feed(preview)
    assert not parsed.tags & {"script", "img"}, parsed.tags
    assert f"1.0 {BAD}" in "".join(parsed.text)
    readme = (crate / "README.md").read_text(encoding="utf-8")
    for raw in RAW:
        assert raw not in readme, raw
    assert "1.0 &lt;script&gt;alert(1)&lt;/script&gt;" in readme
    assert "boom &lt;script&gt;" in readme
    assert "[x](javascript:" not in readme and "\\[x\\](javascript:" in readme
    # the error's newline and pipe do not break the Markdown list out of its line
    failure = next(line for line in readme.splitlines() if "boom" in line)
    assert failure.startswith("- step `summarise`") and "| a |" not in failure
