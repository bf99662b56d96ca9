"""SPARQL at scale: 10,000 runs' PROV graphs (about 1M triples), three questions, three engines.

The graphs are made by the real publish path: ledger-shaped task events →
``twinprov.provenance.prov_model.build_document`` → Turtle (``twinprov.app.publish``'s serializer) →
``EmbeddedStore.replace_graph``, one named graph per run (made on all cores, loaded in one store
session for speed). The runs are also recorded in the ledger, as the endpoint asks the auth
manager about the DAGs the ledger knows. Then, in one run of this script:

  (a) runs that used entity X (``twinprov``'s own query, as ``twinprov demo`` asks it): an
      output read by one later run; then a reference file read by all 480 runs of one workflow,
      as the query is (ORDER BY the run id) and lean (run IRIs, no ORDER BY);
  (b) the lineage of an output 1,000 derivations deep — ``prov:wasDerivedFrom+`` across a chain
      of runs, each run deriving from the previous run's output;
  (c) failed validations by workflow — ``tp:Validation`` activities with verdict ``failed``;

each timed (SPARQL Results JSON, p50/p95) on:

  * **endpoint** — ``/twinprov/sparql`` of a real ``airflow api-server`` (HTTP, bearer token,
    auth manager, checks, the store-owner process, the row cap);
  * **embedded** — ``pyoxigraph.Store.query`` on the same store, in this process;
  * **rdflib** — rdflib's in-memory engine (``Dataset``, union default graph) on the same quads.

Goals (issue #6): (a) < 5 ms p50, (b) < 50 ms, and ≥ 100× faster than rdflib.

    python bench/sparql_scale.py [--runs 10000] [--iterations 30] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

BASE = "urn:twinprov:"
WORKFLOWS = 20
CHAIN_DAG = "lineage_chain"
REFERENCE_DAG = "wf_03"
PREFIXES = "PREFIX prov: <http://www.w3.org/ns/prov#>\nPREFIX tp: <urn:twinprov:vocab#>\n"


def sha(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


REFERENCE_SHA = sha("reference", REFERENCE_DAG)


def chain_output(i: int) -> str:
    return sha("chain", i)


def _step(
    dag: str, run: str, task: str, t0: float, inputs: list[dict], outputs: list[dict], **extra: Any
) -> list[Any]:
    from twinprov.provenance.ledger import TaskEvent

    start = f"2025-01-01T00:{int(t0) // 60 % 60:02d}:{int(t0) % 60:02d}+00:00"
    end = f"2025-01-01T01:{int(t0) // 60 % 60:02d}:{int(t0) % 60:02d}+00:00"
    payload = {
        "role": "step",
        "operator": "LocalStepOperator",
        "hostname": "bench",
        "target": "local",
        "image": "python:3.11-slim",
        "environment": {"kind": "python", "digest": "bench0001", "python_version": "3.11"},
        **extra,
    }
    running = TaskEvent(dag, run, task, -1, 1, "running", {**payload, "start_date": start})
    manifest = {
        "exit_code": 0,
        "duration_s": 1.5,
        "inputs": inputs,
        "outputs": outputs,
        "resource_usage": {"cpu_user_s": 1.0, "cpu_system_s": 0.1, "max_rss_kb": 20000},
    }
    done = TaskEvent(
        dag, run, task, -1, 1, "success", {**payload, "end_date": end, "manifest": manifest}
    )
    return [running, done]


def _file(name: str, digest: str) -> dict[str, Any]:
    return {"name": name, "sha256": digest, "size": 1000, "media_type": "text/csv"}


def run_events(i: int, chain: int) -> tuple[str, str, dict[str, Any], list[Any], str]:
    """The events of synthetic run ``i``: the first ``chain`` runs form a lineage chain."""
    from twinprov.provenance.ledger import TaskEvent

    if i < chain:
        dag, run = CHAIN_DAG, f"chain__{i:05d}"
    else:
        dag, run = f"wf_{i % WORKFLOWS:02d}", f"scheduled__{i:05d}"
    info = {
        "airflow_version": "3.3.2",
        "run_type": "scheduled",
        "run_start": "2025-01-01T00:00:00+00:00",
        "triggering_user": "bench",
        "params": {"seed": i, "region": ["alps", "andes", "atlas"][i % 3], "scale": 3},
        "spec_sha256": sha("spec", dag),
        "spec_path": f"/specs/{dag}.yaml",
        "workflow_version": "1.0",
    }
    events: list[Any] = []
    if i < chain:
        # three steps, three derivations: previous run's output → a → b → this run's output
        prev = [_file("seed", chain_output(i - 1))] if i else [_file("seed", sha("origin"))]
        a, b = _file("a", sha("a", i)), _file("b", sha("b", i))
        out = _file("out", chain_output(i))
        events += _step(dag, run, "first", i, prev, [a])
        events += _step(dag, run, "second", i, [a], [b])
        events += _step(dag, run, "third", i, [b], [out])
        return dag, run, info, events, "success"
    ref = _file("reference", REFERENCE_SHA if dag == REFERENCE_DAG else sha("reference", dag))
    grid = _file("grid", sha("grid", i))
    index = _file("index", sha("index", i))
    events += _step(dag, run, "generate", i, [ref], [grid])
    events += _step(dag, run, "compute", i, [grid], [index])
    failed = (i // WORKFLOWS) % 10 == 0  # one run in ten of every workflow
    check = {
        "output": "index",
        "step": "compute",
        "expected_sha256": index["sha256"],
        "success": not failed,
        "evaluated": 3,
        "successful": 2 if failed else 3,
        "failed": 1 if failed else 0,
        "policy": "warn",
        "gx_version": "1.0",
        "failed_expectations": ["expect_column_values_to_be_between(spi)"] if failed else [],
    }
    for ev in _step(dag, run, "validate_compute_index", i, [], [], validation=check):
        events.append(
            TaskEvent(
                ev.dag_id,
                ev.run_id,
                ev.task_id,
                ev.map_index,
                ev.try_number,
                ev.state,
                {**ev.payload, "role": "validation", "manifest": {}},
                ev.recorded_at,
            )
        )
    return dag, run, info, events, "success"


def build_turtle(i: int, chain: int) -> tuple[str, str, str, dict[str, Any], str]:
    """Run ``i`` through the real builder and serializer: (dag, run, graph, info, turtle)."""
    from twinprov.app.publish import _serialize
    from twinprov.provenance.ids import Ids
    from twinprov.provenance.prov_model import RunFacts, build_document

    dag, run, info, events, state = run_events(i, chain)
    doc = build_document(Ids(BASE), RunFacts(dag, run, info, state, info["run_start"]), events)
    return dag, run, Ids(BASE).run(dag, run), info, _serialize(doc, "turtle")


def _batch(args: tuple[int, int, int]) -> list[tuple[str, str, str, dict[str, Any], str]]:
    start, stop, chain = args
    return [build_turtle(i, chain) for i in range(start, stop)]


class _DeferredFlush:
    """The store as ``EmbeddedStore.replace_graph`` sees it, with its per-graph ``flush`` deferred
    to the end of the batch (10,000 flushes would write 10,000 tiny files)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def flush(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def synthesize(home: Path, runs: int, chain: int, workers: int) -> dict[str, Any]:
    """Build and load every run; returns counts and timings."""
    from twinprov.provenance.ledger import Ledger
    from twinprov.provenance.ledger import runs as runs_table
    from twinprov.provenance.store import EmbeddedStore

    ledger = Ledger(f"sqlite:///{home / 'ledger.sqlite'}")
    store = EmbeddedStore(home / "graph-store")
    started = time.perf_counter()
    chunks = [(s, min(s + 250, runs), chain) for s in range(0, runs, 250)]
    triples = 0
    with ProcessPoolExecutor(max_workers=workers) as pool, store.open():
        real = store.store
        store._store = _DeferredFlush(real)  # type: ignore[assignment]
        for n, batch in enumerate(pool.map(_batch, chunks), 1):
            for _dag, _run, graph, _info, ttl in batch:
                triples += store.replace_graph(graph, ttl)
            # the runs as the ledger records them (one transaction per batch)
            ledger._write([(runs_table, ledger._run_row(d, r, i)) for d, r, _g, i, _t in batch])
            done = min(n * 250, runs)
            rate = done / (time.perf_counter() - started)
            print(f"\r  {done}/{runs} runs, {triples} triples, {rate:.0f} runs/s", end="")
        real.flush()
        real.optimize()
        store._store = real
    print()
    return {"triples": triples, "load_s": time.perf_counter() - started}


# -- the questions -----------------------------------------------------------------------------


def queries(chain: int) -> dict[str, str]:
    from twinprov.app.summary import RUNS_USING_QUERY
    from twinprov.provenance.ids import Ids

    ids = Ids(BASE)
    x = ids.data(REFERENCE_SHA)
    lean = "SELECT DISTINCT ?run WHERE {{ ?a prov:used <{x}> ; prov:wasInformedBy ?run }}"
    return {
        "a": RUNS_USING_QUERY % {"entity": ids.data(chain_output(chain // 2))},
        "a-broad": RUNS_USING_QUERY % {"entity": x},
        "a-lean": PREFIXES + lean.format(x=x),
        "b": PREFIXES + f"SELECT DISTINCT ?ancestor WHERE {{ <{ids.data(chain_output(chain - 1))}> "
        "prov:wasDerivedFrom+ ?ancestor }",
        "c": PREFIXES
        + """SELECT ?dag (COUNT(DISTINCT ?check) AS ?failed) WHERE {
  ?check a tp:Validation ; tp:verdict "failed" ; prov:wasInformedBy ?r .
  ?r tp:dagId ?dag .
} GROUP BY ?dag ORDER BY ?dag""",
    }


LABELS = {
    "a": "(a) runs that used entity X — an output read by one later run",
    "a-broad": "(a, broad) runs that used entity X — a reference file read by 480 runs",
    "a-lean": "(a, broad, lean) the same as run IRIs, without twinprov's ORDER BY",
    "b": "(b) lineage, 1,000+ derivations deep",
    "c": "(c) failed validations by workflow",
}


def rows_of_json(body: bytes | str) -> int:
    data = json.loads(body)
    return len(data["results"]["bindings"]) if "results" in data else 1


def timed(fn: Callable[[], bytes | str], n: int) -> tuple[list[float], int]:
    fn()  # warm-up
    samples = []
    rows = 0
    for _ in range(n):
        t = time.perf_counter()
        body = fn()
        samples.append((time.perf_counter() - t) * 1000)
        rows = rows_of_json(body)
    return samples, rows


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


# -- the engines -------------------------------------------------------------------------------


def bench_embedded(home: Path, qs: dict[str, str], n: int) -> dict[str, Any]:
    import pyoxigraph as ox

    from twinprov.provenance.store import EmbeddedStore

    out: dict[str, Any] = {}
    t = time.perf_counter()
    with EmbeddedStore(home / "graph-store").open() as store:
        out["open_ms"] = (time.perf_counter() - t) * 1000
        for key, q in qs.items():

            def run(q: str = q) -> bytes:
                res = store.store.query(q, use_default_graph_as_union=True)
                return bytes(res.serialize(format=ox.QueryResultsFormat.JSON))

            out[key] = timed(run, n)
    return out


def _env(root: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "TWINPROV_"))}
    env.update(
        AIRFLOW_HOME=str(root / "airflow"),
        TWINPROV_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(root / "passwords.json"),
        AIRFLOW__API_AUTH__JWT_SECRET="twinprov-bench-" + "x" * 64,
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        AIRFLOW__API__WORKERS="1",
    )
    return env


def bench_endpoint(root: Path, home: Path, qs: dict[str, str], n: int) -> dict[str, Any]:
    import httpx

    airflow = str(Path(sys.executable).with_name("airflow"))
    (root / "passwords.json").write_text(json.dumps({"admin": "bench-pw"}))
    env = _env(root, home)
    subprocess.run(
        [airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (root / "api-server.log").open("wb")
    proc = subprocess.Popen(
        [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"api-server did not start; see {root / 'api-server.log'}")
            time.sleep(0.3)
        token = httpx.post(
            f"{base}/auth/token", json={"username": "admin", "password": "bench-pw"}, timeout=10
        ).json()["access_token"]
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/sparql-results+json",
        }
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:

            def ask(q: str) -> bytes:
                resp = client.get("/twinprov/sparql", params={"query": q})
                if resp.status_code != 200:
                    raise RuntimeError(f"endpoint answered {resp.status_code}: {resp.text}")
                if resp.headers.get("x-twinprov-cut"):
                    raise RuntimeError(f"answer cut: {resp.headers['x-twinprov-cut']}")
                return resp.content

            t = time.perf_counter()
            ask("ASK {}")
            out["first_ms"] = (time.perf_counter() - t) * 1000
            for key, q in qs.items():
                out[key] = timed(lambda q=q: ask(q), n)
            time.sleep(3)  # let the store owner close the store (idle), then one cold query
            t = time.perf_counter()
            ask(qs["a"])
            out["cold_ms"] = (time.perf_counter() - t) * 1000
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return out


class _Timeout(Exception):
    pass


def bench_rdflib(home: Path, qs: dict[str, str], n: int, limit_s: int) -> dict[str, Any]:
    import pyoxigraph as ox
    import rdflib

    from twinprov.provenance.store import EmbeddedStore

    dump = home / "dump.nq"
    with EmbeddedStore(home / "graph-store").open() as store:
        store.store.dump(str(dump), format=ox.RdfFormat.N_QUADS)
    t = time.perf_counter()
    ds = rdflib.Dataset(default_union=True)
    ds.parse(str(dump), format="nquads")
    out: dict[str, Any] = {"load_s": time.perf_counter() - t, "quads": len(ds)}

    def alarm(_sig: int, _frame: Any) -> None:
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    for key, q in qs.items():

        def run(q: str = q) -> str:
            return str(ds.query(q).serialize(format="json").decode())

        signal.alarm(limit_s)
        try:
            out[key] = timed(run, n)
        except _Timeout:
            out[key] = f"did not finish within {limit_s} s"
        except RecursionError as e:
            out[key] = f"failed: RecursionError ({e})"
        except Exception as e:  # report whatever rdflib does, do not stop the benchmark
            out[key] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        finally:
            signal.alarm(0)
    return out


# -- report ------------------------------------------------------------------------------------


def _cell(result: Any) -> str:
    if isinstance(result, tuple):
        samples, rows = result
        return f"p50 {pct(samples, 0.5):9.2f} ms  p95 {pct(samples, 0.95):9.2f} ms  ({rows} rows)"
    return f"{result}"


def report(results: dict[str, dict[str, Any]]) -> None:
    print()
    for key, label in LABELS.items():
        print(label)
        for engine in ("endpoint", "embedded", "rdflib"):
            if engine in results:
                print(f"  {engine:9s} {_cell(results[engine].get(key, 'skipped'))}")
        p50 = {e: pct(r[key][0], 0.5) for e, r in results.items() if isinstance(r.get(key), tuple)}
        ratios = []
        if "rdflib" in p50 and "embedded" in p50:
            ratios.append(f"rdflib/embedded {p50['rdflib'] / p50['embedded']:.0f}x")
        if "rdflib" in p50 and "endpoint" in p50:
            ratios.append(f"rdflib/endpoint {p50['rdflib'] / p50['endpoint']:.0f}x")
        if "endpoint" in p50 and "embedded" in p50:
            ratios.append(f"endpoint/embedded {p50['endpoint'] / p50['embedded']:.1f}x")
        if "rdflib" in results and not isinstance(results["rdflib"].get(key), tuple):
            ratios.append("rdflib: no time (see above)")
        if ratios:
            print("  ratios    " + ", ".join(ratios))
        goal = {"a": 5.0, "a-broad": 5.0, "a-lean": 5.0, "b": 50.0}.get(key)
        if goal is not None and "endpoint" in p50:
            verdict = "met" if p50["endpoint"] < goal else "NOT met"
            print(f"  goal      endpoint p50 < {goal:g} ms: {verdict}")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--chain", type=int, default=400, help="runs in the lineage chain (3 each)")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--rdflib-iterations", type=int, default=3)
    ap.add_argument("--rdflib-limit", type=int, default=300, help="seconds per rdflib query")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--keep", type=Path, help="use and keep this folder (reuses a loaded store)")
    ap.add_argument("--skip-endpoint", action="store_true")
    ap.add_argument("--skip-rdflib", action="store_true")
    ns = ap.parse_args()

    root = ns.keep or Path(tempfile.mkdtemp(prefix="twinprov-sparql-bench-"))
    home = root / "home"
    marker = home / "bench.json"
    try:
        if marker.is_file() and json.loads(marker.read_text()) == [ns.runs, ns.chain]:
            print(f"reusing the store in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            print(f"synthesizing {ns.runs} runs through build_document + replace_graph in {home}")
            info = synthesize(home, ns.runs, ns.chain, ns.workers)
            print(
                f"  {info['triples']} triples in {info['load_s']:.0f} s "
                f"({info['triples'] / ns.runs:.0f} per run)"
            )
            marker.write_text(json.dumps([ns.runs, ns.chain]))
        qs = queries(ns.chain)
        results: dict[str, dict[str, Any]] = {}
        if not ns.skip_endpoint:
            print("endpoint: airflow api-server …")
            results["endpoint"] = bench_endpoint(root, home, qs, ns.iterations)
            print(
                f"  first query (starts the store owner, opens the store) "
                f"{results['endpoint']['first_ms']:.0f} ms; after an idle close "
                f"{results['endpoint']['cold_ms']:.0f} ms"
            )
        print("embedded: pyoxigraph in this process …")
        results["embedded"] = bench_embedded(home, qs, ns.iterations)
        print(f"  opening the store: {results['embedded']['open_ms']:.0f} ms")
        if not ns.skip_rdflib:
            print("rdflib: loading the same quads into an in-memory Dataset …")
            results["rdflib"] = bench_rdflib(home, qs, ns.rdflib_iterations, ns.rdflib_limit)
            print(
                f"  {results['rdflib']['quads']} quads loaded in "
                f"{results['rdflib']['load_s']:.0f} s"
            )
        report(results)
    finally:
        if ns.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
