"""`twinprov cwl-runner` against `cwltool --provenance` on the same CWL workflows, in one run:
wall time of each (their ratio) and how complete each one's provenance is.

Workflows: the example OGC application package (``dags/workflows/drought_hazard_package.cwl``,
a STAC catalog made here with pystac as its input) and the conformance workflow with a scatter
``wf_wc_scatter`` (``count-lines3-wf.cwl``; from ``CWL_TESTS``, default
``../shared/cwl-v1.2-conformance``). Both runners run the tools on this host: cwltool with
``--no-container`` (no container engine here), twinprov with its default ``cwl_docker_on_host``;
cwltool gets the package as ``…cwl#main`` (with ``--provenance`` it packs the workflow, and
packing a document that is already packed, a ``$graph``, fails in cwltool 3.3 with "'NoneType'
object is not subscriptable"), and with its DockerRequirements as hints (cwltool
``--no-container`` refuses a DockerRequirement under ``requirements``; twinprov runs it on the
host and records that it did).
Each run is a fresh process; the two runners alternate, after one untimed warm-up run each
(twinprov keeps one home, so its Airflow metadata DB is created once, as for a user).

Completeness, counted with the same SPARQL on each runner's PROV (twinprov's ``prov.ttl``,
cwltool's research object ``metadata/provenance/primary.cwlprov.ttl``): activities
(``prov:Activity``), entities identified by a content checksum (twinprov: ``tp:sha256``; cwltool:
``urn:hash::sha1:`` ids) and container image ids (any property named ``image…``).

    python bench/cwl_vs_cwltool.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pystac
import rdflib
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CWLTOOL = REPO / ".venv-cwl" / "bin" / "cwltool"
CWL_TESTS = Path(os.environ.get("CWL_TESTS", REPO.parent / "shared" / "cwl-v1.2-conformance"))

ACTIVITIES = """PREFIX prov: <http://www.w3.org/ns/prov#>
SELECT (COUNT(DISTINCT ?a) AS ?n) WHERE { ?a a prov:Activity }"""
TWINPROV_CHECKSUMMED = """PREFIX tp: <urn:twinprov:vocab#>
SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE { ?e tp:sha256 ?h }"""
CWLTOOL_CHECKSUMMED = """PREFIX prov: <http://www.w3.org/ns/prov#>
SELECT (COUNT(DISTINCT ?e) AS ?n) WHERE {
  { ?e a prov:Entity } UNION { ?x prov:used ?e } UNION { ?e prov:wasGeneratedBy ?x }
  FILTER(STRSTARTS(STR(?e), "urn:hash::sha1:"))
}"""
IMAGES = """SELECT (COUNT(DISTINCT ?i) AS ?n) WHERE {
  ?s ?p ?i FILTER(REGEX(STR(?p), "[#/:]image[A-Za-z]*$", "i"))
}"""


@dataclass
class Case:
    name: str
    document: Path
    job: Path
    for_cwltool: str = ""  # what cwltool runs, if not ``document`` (see the module docstring)


@dataclass
class Result:
    seconds: float
    activities: int
    checksummed: int
    images: int


def stac_catalog(root: Path) -> Path:
    """A small catalog like the drought demo's STAC output: a hazard map item and another."""
    catalog = pystac.Catalog(id="bench", description="input of the application package")
    for item_id in ("run1__hazard_map", "run1__spi"):
        item = pystac.Item(
            id=item_id,
            geometry=None,
            bbox=None,
            datetime=pystac.utils.str_to_datetime("2026-01-01T00:00:00Z"),
            properties={},
        )
        data = root / "stac" / item_id / "data.nc"
        data.parent.mkdir(parents=True, exist_ok=True)
        data.write_bytes(item_id.encode() * 1000)
        item.add_asset("data", pystac.Asset(href=str(data), media_type="application/netcdf"))
        catalog.add_item(item)
    catalog.normalize_and_save(str(root / "stac"), pystac.CatalogType.SELF_CONTAINED)
    return root / "stac"


def docker_as_hint(document: Path, dest: Path) -> Path:
    """A copy of a ``$graph`` document whose ``DockerRequirement``s are hints: what twinprov's
    ``cwl_docker_on_host`` does, and the only way cwltool ``--no-container`` runs such tools."""
    doc = yaml.safe_load(document.read_text())
    for process in doc.get("$graph", [doc]):
        docker = (process.get("requirements") or {}).pop("DockerRequirement", None)
        if docker is not None:
            process.setdefault("hints", {})["DockerRequirement"] = docker
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def cases(root: Path) -> list[Case]:
    job = root / "package.job.yml"
    job.write_text(f"stac_catalog: {{class: Directory, path: {stac_catalog(root)}}}\n")
    package = REPO / "dags/workflows/drought_hazard_package.cwl"
    hinted = docker_as_hint(package, root / package.name)
    out = [Case("application package", package, job, f"{hinted}#main")]
    scatter = CWL_TESTS / "tests" / "count-lines3-wf.cwl"
    if scatter.is_file():
        out.append(
            Case("scatter wf_wc_scatter", scatter, CWL_TESTS / "tests/count-lines3-job.json")
        )
    else:
        print(f"{CWL_TESTS}: no conformance tests, the scatter workflow is left out")
    return out


def count(ttl_files: Sequence[Path], query: str) -> int:
    graph = rdflib.Graph()
    for f in ttl_files:
        graph.parse(f, format="turtle")
    (row,) = graph.query(query)
    return int(row[0])  # type: ignore[index]


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def run_twinprov(case: Case, work: Path) -> Result:
    home = work.parent / "twinprov-home"  # one home: its Airflow DB is made once, as for a user
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "TWINPROV_"))}
    env["TWINPROV_HOME"] = str(home)
    out = work / "out"
    out.mkdir(parents=True)
    cmd = [str(BIN / "twinprov"), "cwl-runner", "--outdir", str(out), "--quiet"]
    seconds = _timed([*cmd, str(case.document), str(case.job)], env, work)
    show = subprocess.run(
        [str(BIN / "twinprov"), "show", "latest", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    ttl = [Path(json.loads(show.stdout)["prov"]["prov.ttl"])]
    return Result(
        seconds, count(ttl, ACTIVITIES), count(ttl, TWINPROV_CHECKSUMMED), count(ttl, IMAGES)
    )


def run_cwltool(case: Case, work: Path) -> Result:
    ro = work / "ro"
    out = work / "out"
    out.mkdir(parents=True)
    cmd = [str(CWLTOOL), "--no-container", "--quiet", "--provenance", str(ro)]
    cmd += ["--outdir", str(out), case.for_cwltool or str(case.document), str(case.job)]
    seconds = _timed(cmd, dict(os.environ), work)
    ttl = sorted((ro / "metadata" / "provenance").glob("*.cwlprov.ttl"))
    if not ttl:
        raise SystemExit(f"cwltool wrote no PROV (Turtle) under {ro}")
    return Result(
        seconds, count(ttl, ACTIVITIES), count(ttl, CWLTOOL_CHECKSUMMED), count(ttl, IMAGES)
    )


def _workdir(root: Path, case: Case, runner: str, label: str) -> Path:
    work = root / f"{case.name.split()[0]}-{runner}-{label}"
    work.mkdir()
    return work


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ns = ap.parse_args()
    if not CWLTOOL.is_file():
        raise SystemExit(f"{CWLTOOL}: missing (make creates .venv-cwl)")
    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-cwl-"))
    runners = {"twinprov": run_twinprov, "cwltool": run_cwltool}
    ratios = []
    for case in cases(root):
        got: dict[str, list[Result]] = {r: [] for r in runners}
        for name, run in runners.items():  # warm-up, not timed: the Airflow DB, disk caches
            run(case, _workdir(root, case, name, "warm"))
        for r in range(ns.rounds):
            for name, run in runners.items():
                res = run(case, _workdir(root, case, name, str(r)))
                got[name].append(res)
                print(
                    f"{case.name:>22} round {r + 1} {name:>8}: {res.seconds:6.1f} s, "
                    f"{res.activities} activities, {res.checksummed} entities with a checksum, "
                    f"{res.images} image ids",
                    flush=True,
                )
        med = {n: statistics.median(x.seconds for x in v) for n, v in got.items()}
        ratios.append(med["twinprov"] / med["cwltool"])
        print(
            f"{case.name}: medians twinprov {med['twinprov']:.1f} s, cwltool --provenance "
            f"{med['cwltool']:.1f} s, ratio twinprov/cwltool {ratios[-1]:.2f}"
        )
    print(
        "\nwall-time ratio twinprov cwl-runner / cwltool --provenance: "
        + ", ".join(f"{r:.2f}" for r in ratios)
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
