"""The ledger: idempotent appends, separate runs, and the spool when the database is down."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from provenance.ids import Ids
from provenance.ledger import Ledger, TaskEvent, record_event
from provenance.prov_model import RunFacts, build_document


def _events(run_id: str, n: int = 3) -> list[TaskEvent]:
    evs = []
    for i in range(n):
        evs.append(
            TaskEvent(
                "dag",
                run_id,
                f"t{i}",
                -1,
                1,
                "running",
                {"start_date": f"2026-01-01T00:{i:02d}:00+00:00"},
                "2026-01-01T00:00:00",
            )
        )
        evs.append(
            TaskEvent(
                "dag",
                run_id,
                f"t{i}",
                -1,
                1,
                "success",
                {
                    "end_date": f"2026-01-01T00:{i:02d}:30+00:00",
                    "manifest": {
                        "exit_code": 0,
                        "inputs": [],
                        "outputs": [
                            {
                                "name": "o",
                                "path": "o",
                                "sha256": f"{run_id}{i}".ljust(64, "0"),
                                "size": 1,
                                "media_type": "text/plain",
                            }
                        ],
                    },
                },
                "2026-01-01T00:00:01",
            )
        )
    return evs


def test_replaying_events_changes_nothing(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    evs = _events("r1")
    assert all(ledger.append(e, {"params": {}}) for e in evs)
    first = build_document(Ids(), RunFacts("dag", "r1", {}, "success"), ledger.events("dag", "r1"))
    assert not any(ledger.append(e, {"params": {}}) for e in evs)  # replay: all no-ops
    again = ledger.events("dag", "r1")
    assert len(again) == len(evs)
    second = build_document(Ids(), RunFacts("dag", "r1", {}, "success"), again)
    assert first == second
    activities = [r for r in second.get_records() if r.get_type().localpart == "Activity"]
    assert len(activities) == 1 + 3  # the run + one per task try


def _writer(url: str, run_id: str) -> None:
    ledger = Ledger(url)
    for e in _events(run_id, 20):
        ledger.append(e, {"params": {"run": run_id}})


def test_two_runs_written_in_parallel_do_not_mix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    Ledger(url)  # create tables once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, r)) for r in ("run-alpha", "run-bravo")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    ledger = Ledger(url)
    for run in ("run-alpha", "run-bravo"):
        evs = ledger.events("dag", run)
        assert len(evs) == 40 and {e.run_id for e in evs} == {run}
        assert ledger.run("dag", run).info == {"params": {"run": run}}
        doc = build_document(Ids(), RunFacts("dag", run, {}, "success"), evs)
        other = "run-bravo" if run == "run-alpha" else "run-alpha"
        assert other not in doc.serialize(format="json")


def test_unreachable_ledger_spools_and_nothing_is_lost(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the ledger's folder should be")
    bad_url = f"sqlite:///{blocker / 'ledger.sqlite'}"  # cannot be created or opened
    spool = tmp_path / "spool"
    evs = _events("r9")
    assert {record_event(bad_url, spool, e, {"params": {"p": 1}}) for e in evs} == {"spool"}
    assert len(list(spool.glob("*.jsonl"))) == len(evs)
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite'}")
    assert ledger.ingest_spool(spool) == len(evs)
    assert len(ledger.events("dag", "r9")) == len(evs)
    assert ledger.run("dag", "r9").info == {"params": {"p": 1}}
    assert not list(spool.glob("*.jsonl"))
