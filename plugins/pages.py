"""Provenance pages of the twinprov app: the run page, the index with a SPARQL box.

* ``/twinprov/`` — recent runs the user may read, a SPARQL query box, example queries.
* ``/twinprov/runs/{dag_id}/{run_id}`` — a run at a glance: the PROV graph as an SVG picture
  (Graphviz), steps (state, target, image and its digest, HPC/pod facts), outputs with sha256 and
  validation verdicts, links to the PROV files, the crate (zip), STAC Items and MLflow runs.
  Registered in the Airflow UI as the "Provenance" tab of a DAG run (``external_views``).

Pages are server-rendered HTML (Jinja2, autoescaped: every value shown comes from runs, i.e. from
untrusted params and outputs); they work without JavaScript, inside the UI's iframe too. Files are
served only when the run's record names them and they lie inside ``TWINPROV_HOME``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from twinprov.airflow.access import PageUser, readable_dags
from twinprov.airflow.endpoint import answer_or_raise, cut_headers
from twinprov.airflow.picture import PictureError, prov_svg
from twinprov.airflow.service import service
from twinprov.provenance.ids import VOCAB, Ids
from twinprov.provenance.ledger import Ledger, RunRecord

HERE = Path(__file__).resolve().parent
router = APIRouter()
_env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(["html", "xml"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)

PROV_MEDIA = {
    "prov.json": "application/json",
    "prov.provn": "text/provenance-notation",
    "prov.ttl": "text/turtle",
}
HPC_TERMS = (
    "hpcJobId",
    "partition",
    "walltime",
    "slurmFlags",
    "hpcNode",
    "podName",
    "namespace",
    "node",
    "imagePinned",
)
RECENT_RUNS = 50

PREFIXES = (
    "PREFIX prov: <http://www.w3.org/ns/prov#>\n"
    "PREFIX rdfs: <http://www.w3.org/2000/01/rdf-schema#>\n"
    f"PREFIX tp: <{VOCAB}>\n"
)
# prov:label is written as rdfs:label in PROV-O (the prov library's RDF serializer)
RUN_QUERY = (
    PREFIXES
    + """SELECT ?step ?try ?state ?output ?sha256 ?input WHERE {
  GRAPH <%(graph)s> {
    ?act a tp:TaskTry ; tp:taskId ?step ; tp:tryNumber ?try ; tp:state ?state .
    OPTIONAL {
      ?out prov:wasGeneratedBy ?act ; tp:sha256 ?sha256 . OPTIONAL { ?out rdfs:label ?output }
      OPTIONAL { ?out prov:wasDerivedFrom ?in . ?in rdfs:label ?input }
    }
  }
} ORDER BY ?step ?try ?output ?input"""
)


def static_files() -> StaticFiles:
    """The app's CSS."""
    return StaticFiles(directory=str(HERE / "static"))


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def run_path(base: str, dag_id: str, run_id: str) -> str:
    """Path of a run page (``base`` is the app's mount path)."""
    return f"{base}/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


def _html(template: str, request: Request, **context: Any) -> HTMLResponse:
    body = _env.get_template(template).render(base=_base(request), **context)
    return HTMLResponse(
        body,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'self'"
            ),
        },
    )


def _visible_run(user: Any, dag_id: str, run_id: str) -> RunRecord:
    """The run, if it exists and the user may read its DAG (else 404, the same either way)."""
    rec = Ledger(service().settings.ledger_url).run(dag_id, run_id)
    if rec is None or dag_id not in readable_dags(user, {dag_id}):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {dag_id}/{run_id} to show you")
    return rec


def _summary(rec: RunRecord) -> dict[str, Any]:
    from twinprov.app.summary import run_summary

    return run_summary(service().settings, rec)


def _inside_home(path: str | Path | None) -> Path | None:
    if not path:
        return None
    settings = service().settings
    p = Path(path).resolve()
    for root in {settings.home.resolve(), settings.shared_root.resolve()}:
        if p == root or root in p.parents:
            return p if p.exists() else None
    return None


# -- run page ----------------------------------------------------------------------------------


def _hpc_facts(prov_json: Path | None) -> dict[tuple[str, int], dict[str, str]]:
    """HPC / pod facts of each task try (and the HPC site it ran at), from the PROV document."""
    if prov_json is None:
        return {}
    from prov.model import ProvActivity, ProvAgent, ProvAssociation, ProvDocument

    try:
        doc = ProvDocument.deserialize(source=str(prov_json), format="json")
    except Exception:  # a broken file only costs the facts; the picture route says why
        return {}

    def terms(rec: Any) -> dict[str, Any]:
        return {
            str(getattr(k, "uri", k)).removeprefix(VOCAB): v
            for k, v in rec.attributes
            if str(getattr(k, "uri", k)).startswith(VOCAB)
        }

    sites = {
        str(a.identifier): str(a.label or a.identifier)
        for a in doc.get_records(ProvAgent)
        if terms(a).get("role") == "hpc-site"
    }
    site_of: dict[str, str] = {}
    for assoc in doc.get_records(ProvAssociation):
        activity, agent = assoc.args[0], assoc.args[1]
        if agent is not None and str(agent) in sites:
            site_of[str(activity)] = sites[str(agent)]
    facts: dict[tuple[str, int], dict[str, str]] = {}
    for rec in doc.get_records(ProvActivity):
        attrs = terms(rec)
        if "taskId" not in attrs:
            continue
        found = {t: str(attrs[t]) for t in HPC_TERMS if t in attrs}
        if str(rec.identifier) in site_of:
            found["hpcSite"] = site_of[str(rec.identifier)]
        if found:
            facts[(str(attrs["taskId"]), int(attrs.get("tryNumber", 0)))] = found
    return facts


def _link(value: Any, fallback_label: str) -> dict[str, str | None]:
    """Label and href of a link field (a URL, a path, or a record with url/href/path)."""
    if isinstance(value, Mapping):
        href = value.get("url") or value.get("href") or value.get("uri")
        if href and not str(href).startswith(("http://", "https://")):
            href = None  # e.g. runs:/… or file: URIs are not links a browser can follow
        label = (
            value.get("item_id")
            or value.get("run_id")
            or value.get("id")
            or value.get("name")
            or fallback_label
        )
        path = value.get("path")
        return {"label": str(label), "href": str(href) if href else None, "path": path}
    text = str(value)
    if text.startswith(("http://", "https://")):
        return {"label": text, "href": text, "path": None}
    return {"label": Path(text).name or text, "href": None, "path": text}


def _run_context(request: Request, summary: dict[str, Any]) -> dict[str, Any]:
    base = _base(request)
    here = run_path(base, summary["dag_id"], summary["run_id"])
    prov = summary.get("prov") or {}
    prov_json = _inside_home(prov.get("prov.json"))
    validations = []
    by_sha: dict[str, list[dict[str, Any]]] = {}
    for i, v in enumerate(summary.get("validations") or []):
        if not isinstance(v, Mapping):
            continue
        entry = dict(v)
        entry["verdict"] = (
            "skipped" if v.get("skipped") else "passed" if v.get("success") else "failed"
        )
        entry["report_href"] = f"{here}/validation/{i}" if _inside_home(v.get("report")) else None
        validations.append(entry)
        if v.get("sha256"):
            by_sha.setdefault(str(v["sha256"]), []).append(entry)
    hpc = _hpc_facts(prov_json)
    steps, outputs = [], []
    for s in summary.get("steps") or []:
        facts = dict(hpc.get((s.get("task_id"), s.get("try_number")), {}))
        for key in ("hpc", "pod"):
            if isinstance(s.get(key), Mapping):
                facts.update({str(k): str(v) for k, v in s[key].items() if v not in (None, "")})
        steps.append({**s, "facts": facts})
        for o in s.get("outputs") or []:
            outputs.append(
                {
                    **o,
                    "task_id": s.get("task_id"),
                    "try_number": s.get("try_number"),
                    "file_name": Path(str(o.get("path") or "")).name,
                    "validations": by_sha.get(str(o.get("sha256")), []),
                }
            )
    files = [
        {"name": name, "href": f"{here}/prov/{quote(name)}"} for name in sorted(prov) if prov[name]
    ]
    if prov:
        files.append({"name": "prov.jsonld", "href": f"{here}/prov/prov.jsonld"})
    crate = summary.get("crate")
    stac = [
        {**_link(item, f"item {i + 1}"), "local": f"{here}/stac/{i}"}
        for i, item in enumerate(summary.get("stac_items") or [])
    ]
    mlflow_runs = summary.get("mlflow_runs") or []
    mlflow = [_link(item, f"run {i + 1}") for i, item in enumerate(mlflow_runs)]
    graph = summary.get("graph")
    query = None
    if graph:
        query = f"{base}/?" + urlencode({"query": RUN_QUERY % {"graph": graph}})
    return {
        "run": summary,
        "here": here,
        "steps": steps,
        "outputs": outputs,
        "validations": validations,
        "files": files,
        "crate": crate,
        "stac": stac,
        "mlflow": mlflow,
        "picture": f"{here}/graph.svg" if prov_json else None,
        "validation_report": f"{here}/validation-report"
        if _inside_home(summary.get("validation_report"))
        else None,
        "query_link": query,
        "params": summary.get("params") or {},
    }


@router.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, name="run_page")
async def run_page(request: Request, dag_id: str, run_id: str, user: PageUser) -> HTMLResponse:
    """A run's provenance at a glance."""

    def build() -> dict[str, Any]:
        return _run_context(request, _summary(_visible_run(user, dag_id, run_id)))

    return _html("run.html", request, **await run_in_threadpool(build))


@router.get("/runs/{dag_id}/{run_id}/graph.svg", name="run_graph")
async def run_graph(request: Request, dag_id: str, run_id: str, user: PageUser) -> Response:
    """The run's PROV graph drawn by Graphviz."""

    def draw() -> bytes:
        summary = _summary(_visible_run(user, dag_id, run_id))
        prov_json = _inside_home((summary.get("prov") or {}).get("prov.json"))
        if prov_json is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "this run has no PROV document yet")
        try:
            return prov_svg(prov_json)
        except PictureError as e:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from e

    svg = await run_in_threadpool(draw)
    return Response(
        svg,
        media_type="image/svg+xml",
        headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
    )


@router.get("/runs/{dag_id}/{run_id}/prov/{name}", name="run_prov_file")
async def run_prov_file(dag_id: str, run_id: str, name: str, user: PageUser) -> Response:
    """One of the run's PROV files (``prov.json``, ``prov.provn``, ``prov.ttl``, or
    ``prov.jsonld`` made on demand)."""

    def find() -> Response:
        rec = _visible_run(user, dag_id, run_id)
        if name == "prov.jsonld":
            from twinprov.app.publish import export_run

            text = export_run(service().settings, rec.dag_id, rec.run_id, "jsonld")
            return Response(text, media_type="application/ld+json")
        files = rec.publication.get("files", {}) if rec.publication else {}
        path = _inside_home(files.get(name)) if name in PROV_MEDIA else None
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no PROV file {name} for this run")
        return FileResponse(path, media_type=PROV_MEDIA[name], filename=name)

    return await run_in_threadpool(find)


def _zip_folder(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.is_symlink():
                zf.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


@router.get("/runs/{dag_id}/{run_id}/crate.zip", name="run_crate")
async def run_crate(dag_id: str, run_id: str, user: PageUser) -> Response:
    """The run's RO-Crate as a zip."""

    def pack() -> Response:
        summary = _summary(_visible_run(user, dag_id, run_id))
        crate = summary.get("crate")
        where = _inside_home(_link(crate, "crate")["path"] if crate else None)
        if where is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "this run has no crate")
        name = f"{dag_id}-{run_id}-crate.zip".replace(":", "_").replace("+", "_")
        if where.is_file():
            return FileResponse(where, media_type="application/zip", filename=name)
        body = _zip_folder(where)
        disposition = f'attachment; filename="{quote(name)}"'
        return Response(
            body, media_type="application/zip", headers={"Content-Disposition": disposition}
        )

    return await run_in_threadpool(pack)


@router.get("/runs/{dag_id}/{run_id}/stac/{index}", name="run_stac")
async def run_stac(dag_id: str, run_id: str, index: int, user: PageUser) -> Response:
    """One of the run's STAC Items (a local file named by the run's record)."""

    def find() -> Response:
        items = _summary(_visible_run(user, dag_id, run_id)).get("stac_items") or []
        if not 0 <= index < len(items):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such STAC Item for this run")
        path = _inside_home(_link(items[index], "item")["path"])
        if path is None or not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, "this STAC Item is not a local file")
        return FileResponse(path, media_type="application/geo+json")

    return await run_in_threadpool(find)


_REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@router.get("/runs/{dag_id}/{run_id}/validation-report", name="run_validation_report")
async def run_validation_report(dag_id: str, run_id: str, user: PageUser) -> Response:
    """The run's data-quality report (HTML, shown without scripts)."""

    def find() -> Response:
        summary = _summary(_visible_run(user, dag_id, run_id))
        path = _inside_home(summary.get("validation_report"))
        if path is None or not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, "this run has no validation report")
        return FileResponse(
            path, media_type="text/html", headers={"Content-Security-Policy": _REPORT_CSP}
        )

    return await run_in_threadpool(find)


@router.get("/runs/{dag_id}/{run_id}/validation/{index}", name="run_validation_result")
async def run_validation_result(dag_id: str, run_id: str, index: int, user: PageUser) -> Response:
    """One validation's Great Expectations result (JSON)."""

    def find() -> Response:
        checks = _summary(_visible_run(user, dag_id, run_id)).get("validations") or []
        if not 0 <= index < len(checks) or not isinstance(checks[index], Mapping):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such validation for this run")
        path = _inside_home(checks[index].get("report"))
        if path is None or not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, "this validation has no result file")
        return FileResponse(path, media_type="application/json")

    return await run_in_threadpool(find)


# -- index and query box -----------------------------------------------------------------------


def _examples(settings: Any, runs: list[RunRecord], summary: dict[str, Any] | None) -> list[Any]:
    from twinprov.app.summary import RUNS_USING_QUERY

    ids = Ids(settings.base_iri)
    outputs = [o for s in (summary or {}).get("steps") or [] for o in s.get("outputs") or []]
    last = next((o for o in reversed(outputs) if o.get("sha256")), None)
    first = next((o for o in outputs if o.get("sha256")), None)
    entity = ids.data(last["sha256"]) if last else ids.data("<sha256 of an output>")
    used = ids.data(first["sha256"]) if first else ids.data("<sha256 of an input>")
    return [
        {
            "title": "Lineage of an output",
            "about": "everything an output was derived from, however many steps and runs back, "
            "with the step and run that made each ancestor",
            "query": PREFIXES
            + f"""SELECT DISTINCT ?ancestor ?name ?sha256 ?step ?run WHERE {{
  <{entity}> prov:wasDerivedFrom+ ?ancestor .
  OPTIONAL {{ ?ancestor rdfs:label ?name }}
  OPTIONAL {{ ?ancestor tp:sha256 ?sha256 }}
  OPTIONAL {{ ?ancestor prov:wasGeneratedBy ?act .
             ?act tp:taskId ?step ; prov:wasInformedBy ?r . ?r tp:runId ?run }}
}}""",
        },
        {
            "title": "Runs that used an input",
            "about": "every run with a step that read these exact bytes",
            "query": RUNS_USING_QUERY % {"entity": used},
        },
        {
            "title": "Failed validations",
            "about": "data-quality checks that failed, per workflow and run: the output "
            "(by sha256) and the expectations it did not meet",
            "query": PREFIXES
            + """SELECT ?dag ?run ?output ?sha256 ?policy
       (GROUP_CONCAT(DISTINCT ?expectation; separator=", ") AS ?failed) WHERE {
  ?check a tp:Validation ; tp:verdict "failed" ; tp:validatedOutput ?output ;
         prov:wasInformedBy ?r .
  ?r tp:dagId ?dag ; tp:runId ?run .
  OPTIONAL { ?check prov:used ?data . ?data tp:sha256 ?sha256 }
  OPTIONAL { ?check tp:policy ?policy }
  OPTIONAL { ?check tp:failedExpectation ?expectation }
} GROUP BY ?dag ?run ?output ?sha256 ?policy ORDER BY ?dag ?run ?output""",
        },
        {
            "title": "Runs by image digest",
            "about": "which runs ran which container image, by digest where it was pinned",
            "query": PREFIXES
            + """SELECT ?image ?digest (COUNT(DISTINCT ?r) AS ?runs)
       (GROUP_CONCAT(DISTINCT ?run; separator=" ") AS ?run_ids) WHERE {
  ?try tp:image ?image ; prov:wasInformedBy ?r .
  ?r tp:runId ?run .
  OPTIONAL { ?try tp:imageDigest ?digest }
} GROUP BY ?image ?digest ORDER BY DESC(?runs)""",
        },
    ]


def _result_table(body: bytes, media_type: str) -> dict[str, Any]:
    if media_type == "application/sparql-results+json":
        data = json.loads(body)
        if "boolean" in data:
            return {"boolean": data["boolean"]}
        head = data["head"]["vars"]
        rows = [
            [(b.get(v) or {}).get("value", "") for v in head] for b in data["results"]["bindings"]
        ]
        return {"head": head, "rows": rows}
    return {"text": body.decode("utf-8", "replace")}


@router.get("/", response_class=HTMLResponse, name="index")
async def index(request: Request, user: PageUser) -> HTMLResponse:
    """Recent runs, a SPARQL box, example queries; with ``?query=`` the answer as a table."""
    query = request.query_params.get("query")

    def build() -> dict[str, Any]:
        svc = service()
        ledger = Ledger(svc.settings.ledger_url)
        runs = ledger.runs()
        allowed = readable_dags(user, {r.dag_id for r in runs})
        visible = sorted(
            (r for r in runs if r.dag_id in allowed), key=lambda r: r.first_seen, reverse=True
        )
        latest = _summary(visible[0]) if visible else None
        base = _base(request)
        context: dict[str, Any] = {
            "runs": [
                {
                    "dag_id": r.dag_id,
                    "run_id": r.run_id,
                    "state": r.state or "running",
                    "start": r.info.get("run_start") or r.first_seen,
                    "end": r.ended,
                    "href": run_path(base, r.dag_id, r.run_id),
                }
                for r in visible[:RECENT_RUNS]
            ],
            "more": max(len(visible) - RECENT_RUNS, 0),
            "examples": [
                {**e, "href": f"{base}/?" + urlencode({"query": e["query"]})}
                for e in _examples(svc.settings, visible, latest)
            ],
            "query": query or "",
            "limits": svc.limits,
        }
        if query:
            try:
                rendered = answer_or_raise(user, query, accept="application/sparql-results+json")
            except HTTPException as e:
                if e.status_code != status.HTTP_406_NOT_ACCEPTABLE:
                    context["error"] = {"status": e.status_code, "detail": e.detail}
                    return context
                rendered = answer_or_raise(user, query, fmt="turtle")
            names = ("json", "xml", "csv", "tsv")
            if rendered.form in ("CONSTRUCT", "DESCRIBE"):
                names = ("turtle", "ntriples", "jsonld")
            context["downloads"] = [
                {"name": n, "href": f"{base}/sparql?" + urlencode({"query": query, "format": n})}
                for n in names
            ]
            context["result"] = _result_table(rendered.body, rendered.media_type)
            context["cut"] = cut_headers(rendered)
        return context

    return _html("index.html", request, **await run_in_threadpool(build))
