"""Catch-up of the graph store in batches (``twinprov.app.publish.catch_up``) on the embedded store
and a SQLite ledger: every pending run loaded exactly once per graph, the ledger marked in one
transaction per batch, replays never duplicating, runs without files left pending."""

from __future__ import annotations

import pytest

import twinprov.app.publish as publish
from twinprov.app.publish import catch_up
from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger
from twinprov.provenance.store import EmbeddedStore

DAG = "dag"


def _turtle(i: int) -> str:
    run = f"<urn:twinprov:run/{DAG}/r{i}>"
    lines = [f"{run} a <http://www.w3.org/ns/prov#Activity> ."]
    lines += [f'{run} <urn:x:n> "{j}" .' for j in range(i % 4)]  # r0: one triple
    if i % 3 == 0:  # blank nodes: one per graph, never shared between graphs
        lines.append(f'{run} <urn:x:used> [ <urn:x:label> "b{i}" ] .')
    return "\n".join(lines) + "\n"


def _expected(i: int) -> int:
    return 1 + i % 4 + (2 if i % 3 == 0 else 0)




def _publish(settings: Settings, n: int) -> list[str]:
    """``n`` runs published to files (not stored); their graph IRIs."""
    ledger = Ledger(settings.ledger_url)
    graphs = []
    for i in range(n):
        path = settings.home / "files" / f"r{i}.ttl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_turtle(i), encoding="utf-8")
        graph = f"urn:twinprov:run/{DAG}/r{i}"
        ledger.ensure_run(DAG, f"r{i}", {})
        ledger.update_run(
            DAG,
            f"r{i}",
            published_digest=f"d{i}",
            publication={"files": {"prov.ttl": str(path)}, "graph": graph},
        )
        graphs.append(graph)
    return graphs


def _pending(settings: Settings) -> list[str]:
    return sorted(
        r.run_id
        for r in Ledger(settings.ledger_url).runs()
        if r.published_digest and r.published_digest != r.stored_digest
    )


def test_batches_load_each_graph_exactly_and_mark_the_ledger(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "CATCH_UP_BATCH_RUNS", 4)
    graphs = _publish(settings, 11)
    marks: list[int] = []
    real_mark = Ledger.mark_stored

    def counting_mark(self: Ledger, stored: list[tuple[str, str, str]]) -> None:
        marks.append(len(stored))
        real_mark(self, stored)

    monkeypatch.setattr(Ledger, "mark_stored", counting_mark)
    store = EmbeddedStore(settings.store_path)
    with store.open() as st:
        assert catch_up(settings, st) == 11
        assert st.graphs() == sorted(graphs)
        for i, g in enumerate(graphs):
            assert st.graph_size(g) == _expected(i), g
    assert marks == [4, 4, 3]  # one ledger transaction per batch
    assert _pending(settings) == []
    runs = {r.run_id: r for r in Ledger(settings.ledger_url).runs()}
    assert all(r.stored_digest == r.published_digest for r in runs.values())
    with store.open() as st:
        assert catch_up(settings, st) == 0  # nothing pending: nothing loaded


def test_replay_replaces_never_adds(settings: Settings) -> None:
    graphs = _publish(settings, 7)
    store = EmbeddedStore(settings.store_path)
    with store.open() as st:
        assert catch_up(settings, st) == 7
        sizes = [st.graph_size(g) for g in graphs]
    Ledger(settings.ledger_url).mark_stored([(DAG, f"r{i}", "stale") for i in range(7)])
    assert len(_pending(settings)) == 7
    with store.open() as st:
        assert catch_up(settings, st) == 7
        assert [st.graph_size(g) for g in graphs] == sizes
        assert sum(sizes) == len(list(st.store.quads_for_pattern(None, None, None, None)))


def test_a_run_without_its_file_stays_pending(settings: Settings) -> None:
    _publish(settings, 3)
    (settings.home / "files" / "r1.ttl").unlink()
    with EmbeddedStore(settings.store_path).open() as st:
        assert catch_up(settings, st) == 2
    assert _pending(settings) == ["r1"]


def test_mark_stored_sets_only_the_named_runs(settings: Settings) -> None:
    _publish(settings, 3)
    ledger = Ledger(settings.ledger_url)
    ledger.mark_stored([])
    ledger.mark_stored([(DAG, "r0", "d0"), (DAG, "r2", "x")])
    got = {r.run_id: r.stored_digest for r in ledger.runs()}
    assert got == {"r0": "d0", "r1": None, "r2": "x"}
