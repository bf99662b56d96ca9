"""The provenance pages in a real ``airflow api-server``: run page, picture, files, index."""

from __future__ import annotations

import io
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import rdflib

from tests.endpoint.conftest import Stack


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._text).strip(), self._href))
            self._href = None


def links(html: str) -> dict[str, str]:
    p = _Links()
    p.feed(html)
    return dict(p.links)


def page(stack: Stack, path: str, user: str = "admin") -> httpx.Response:
    return httpx.get(f"{stack.base}{path}", cookies={"_token": stack.tokens[user]}, timeout=30)


def run_path(stack: Stack, dag_id: str) -> str:
    return f"/twinprov/runs/{dag_id}/{quote(stack.runs[dag_id]['run_id'], safe='')}"


def test_run_page_shows_steps_outputs_picture_and_files(
    stack: Stack, summaries: dict[str, Any]
) -> None:
    path = run_path(stack, "prov_alpha")
    resp = page(stack, path)
    assert resp.status_code == 200, resp.text
    html = resp.text
    summary = summaries["prov_alpha"]
    for step in summary["steps"]:
        assert step["task_id"] in html and step["environment_digest"] in html
        for out in step["outputs"]:
            assert out["sha256"] in html and out["name"] in html
    assert 'id="outputs"' in html and 'id="steps"' in html and 'id="prov-graph"' in html
    rerun_ref = f"{summary['dag_id']}/{summary['run_id']}"
    assert 'id="rerun"' in html and f"twinprov rerun {rerun_ref}" in html
    found = links(html)
    svg = page(stack, found["open full size"])
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in svg.content and b"derive" in svg.content
    # the PROV files as published, and JSON-LD made on demand
    published = page(stack, found["prov.json"])
    assert published.content == Path(summary["prov"]["prov.json"]).read_bytes()
    ttl = rdflib.Graph().parse(data=page(stack, found["prov.ttl"]).content, format="turtle")
    jsonld = rdflib.Graph().parse(data=page(stack, found["prov.jsonld"]).content, format="json-ld")
    assert len(ttl) > 20 and len(jsonld) > 20
    assert page(stack, found["prov.provn"]).text.startswith("document")
    # the crate, as a zip made from the run's crate folder
    assert summary["crate"], "the publish task writes a crate"
    crate = page(stack, found["RO-Crate (zip)"])
    assert crate.status_code == 200 and crate.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(crate.content)).namelist()
    assert "ro-crate-metadata.json" in names
    # validations: the table's check failed (warn policy), the run went on
    table = next(o for s in summary["steps"] for o in s["outputs"] if o["name"] == "table")
    (check,) = summary["validations"]
    assert check["sha256"] == table["sha256"] and check["success"] is False
    assert 'id="validations"' in html and "expect_column_values_to_be_between" in html
    assert 'class="verdict verdict-failed"' in html
    if summary.get("validation_report"):
        report = page(stack, found["Data-quality report"])
        assert report.status_code == 200 and "script-src" not in report.headers.get(
            "content-security-policy", "script-src"
        )
    # the "query this run" link answers
    answer = page(stack, found["Query this run (SPARQL)"])
    assert answer.status_code == 200 and 'id="query-error"' not in answer.text
    assert summary["steps"][0]["outputs"][0]["sha256"] in answer.text


def test_pages_follow_dag_permissions(stack: Stack) -> None:
    beta = run_path(stack, "prov_beta")
    assert page(stack, beta, user="admin").status_code == 200
    for suffix in ("", "/graph.svg", "/prov/prov.json", "/prov/prov.jsonld", "/crate.zip"):
        assert page(stack, beta + suffix, user="alice").status_code == 404, suffix
    assert page(stack, run_path(stack, "prov_alpha"), user="alice").status_code == 200
    index = page(stack, "/twinprov/", user="alice").text
    assert "prov_alpha" in index and "prov_beta" not in index
    index = page(stack, "/twinprov/", user="admin").text
    assert "prov_alpha" in index and "prov_beta" in index
    missing = page(stack, "/twinprov/runs/prov_alpha/no-such-run")
    assert missing.status_code == 404


def test_index_examples_answer_and_query_box_shows_results_and_errors(
    stack: Stack, summaries: dict[str, Any]
) -> None:
    html = page(stack, "/twinprov/", user="alice").text
    found = links(html)
    titles = [
        "Lineage of an output",
        "Runs that used an input",
        "Failed validations",
        "Runs by image digest",
    ]
    for title in titles:
        resp = page(stack, found[title], user="alice")
        assert resp.status_code == 200 and 'id="query-error"' not in resp.text, title
        assert 'id="query-result"' in resp.text, title
    # alice's latest run is prov_alpha: its last output derives from its first
    lineage = page(stack, found["Lineage of an output"], user="alice").text
    raw = summaries["prov_alpha"]["steps"]
    first = next(o for s in raw for o in s["outputs"] if o["name"] == "raw")
    assert first["sha256"] in lineage
    used = page(stack, found["Runs that used an input"], user="alice").text
    assert stack.runs["prov_alpha"]["run_id"] in used
    failed = page(stack, found["Failed validations"], user="alice").text
    assert "expect_column_values_to_be_between" in failed and "prov_alpha" in failed
    bad = page(stack, "/twinprov/?query=" + quote("DELETE WHERE { ?s ?p ?o }"), user="alice")
    assert 'id="query-error"' in bad.text and "read-only" in bad.text
    graph = page(stack, "/twinprov/?query=" + quote("CONSTRUCT WHERE { ?s ?p ?o } LIMIT 3"))
    assert "<pre>" in graph.text and 'id="query-error"' not in graph.text
