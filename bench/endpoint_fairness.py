"""Fairness of the SPARQL endpoint: latency of a well-behaved user while two others run heavy
queries.

A real ``airflow api-server`` (the deployment of ``tests/endpoint``: two teams, users ``admin``,
``alice``, ``bob``) over an embedded store of ``--triples`` synthetic triples. ``alice`` sends a
simple query (``SELECT ?s WHERE { ?s ?p ?o } LIMIT 1``) one after the other, first alone, then while
``admin`` and ``bob`` each keep ``--heavy-clients`` heavy queries in flight (a COUNT over the
three-way product of the store, about a second or two of CPU each: they end normally, under the
time limit). Printed: p50/p95 of alice's query, alone and under load, her successes, and what the
heavy users got (200, 429 at their per-user limit, 503…).

    python bench/endpoint_fairness.py [--triples 200] [--seconds 30] [--heavy-clients 3]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.endpoint.conftest import (  # noqa: E402
    AIRFLOW,
    _environment,
    _run,
    start_api_server,
    token,
)

SIMPLE_Q = "SELECT ?s WHERE { ?s ?p ?o } LIMIT 1"
HEAVY_Q = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triples", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--heavy-clients", type=int, default=3, help="per heavy user (limit: 2)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="twinprov-fairness-"))
    airflow_home, home = root / "airflow", root / "home"
    airflow_home.mkdir()
    for team in ("team_a", "team_b"):
        (root / team).mkdir()
    (root / "passwords.json").write_text(
        '{"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"}'
    )
    env = _environment(root, airflow_home, home)
    env["AIRFLOW__TWINPROV__QUERY_TIME_LIMIT_SECONDS"] = "10"
    print(f"deployment under {root}: migrating the Airflow DB…", flush=True)
    _run([AIRFLOW, "db", "migrate"], env, root / "migrate.log", 300)
    for team in ("team_a", "team_b"):
        _run([AIRFLOW, "teams", "create", team], env, root / f"team-{team}.log", 60)

    import pyoxigraph as ox

    from twinprov.provenance import ledger

    ledger._create_tables(ledger._engine(f"sqlite:///{home / 'ledger.sqlite'}"))
    store = ox.Store(str(home / "graph-store"))
    g, p = ox.NamedNode("urn:bench:graph"), ox.NamedNode("urn:bench:p")
    store.extend(
        ox.Quad(ox.NamedNode(f"urn:bench:s{i}"), p, ox.Literal(str(i)), g)
        for i in range(args.triples)
    )
    store.flush()
    del store

    server = start_api_server(env, root / "api-server.log")
    try:
        base = server.base
        tokens = {u: token(base, u, f"{u}-pw") for u in ("admin", "alice", "bob")}

        def ask(user: str, query: str, client: httpx.Client) -> tuple[int, float]:
            started = time.perf_counter()
            resp = client.get(
                f"{base}/twinprov/sparql",
                params={"query": query},
                headers={"Authorization": f"Bearer {tokens[user]}"},
                timeout=120,
            )
            return resp.status_code, time.perf_counter() - started

        def alice_for(seconds: float) -> tuple[list[float], collections.Counter[int]]:
            took, codes = [], collections.Counter[int]()
            with httpx.Client() as client:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    code, t = ask("alice", SIMPLE_Q, client)
                    codes[code] += 1
                    if code == 200:
                        took.append(t)
                    time.sleep(0.05)
            return took, codes

        with httpx.Client() as c:
            code, heavy_s = ask("admin", HEAVY_Q, c)
            print(f"one heavy query alone: {heavy_s:.2f} s (HTTP {code})")
        alone, _ = alice_for(min(args.seconds, 10))
        stop = threading.Event()
        heavy_codes: collections.Counter[int] = collections.Counter()

        def hog(user: str) -> None:
            with httpx.Client() as client:
                while not stop.is_set():
                    code, _ = ask(user, HEAVY_Q, client)
                    heavy_codes[code] += 1
                    if code == 429:
                        time.sleep(0.2)

        hogs = [
            threading.Thread(target=hog, args=(u,), daemon=True)
            for u in ("admin", "bob")
            for _ in range(args.heavy_clients)
        ]
        for t in hogs:
            t.start()
        time.sleep(1.0)
        loaded, codes = alice_for(args.seconds)
        stop.set()
        for t in hogs:
            t.join(120)

        def ms(xs: list[float], q: float) -> str:
            return f"{pct(xs, q) * 1000:.0f} ms" if xs else "-"

        print(f"alice alone:      p50 {ms(alone, 50)}, p95 {ms(alone, 95)} ({len(alone)} queries)")
        print(
            f"alice under load: p50 {ms(loaded, 50)}, p95 {ms(loaded, 95)} "
            f"({len(loaded)} answered of {sum(codes.values())}; HTTP {dict(codes)})"
        )
        print(f"heavy users (admin, bob): HTTP {dict(heavy_codes)}")
        if loaded:
            print(f"alice under load, mean {statistics.mean(loaded) * 1000:.0f} ms")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
