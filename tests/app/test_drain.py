"""Events that exist on one worker only (``twinprov.app.drain``): two workers, each with its own
``TWINPROV_HOME`` and spool, one ledger, one shared folder of run folders. Worker B's events wait
in B's spool because B cannot reach the ledger (its ledger URL names a file path that cannot
exist); the publication on worker A sees them missing, waits, publishes with the gap recorded;
B's drain moves them into the ledger and publishes the run again, complete."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fresh_settings
from tests.provenance.test_ledger import _events
from twinprov.app.drain import drain_spool, missing_events, wait_for_events
from twinprov.app.publish import publish_run
from twinprov.provenance.config import Settings
from twinprov.provenance.errors import ConfigError
from twinprov.provenance.ledger import Ledger, record_event


def _worker(tmp_path: Path, name: str, ledger_url: str) -> Settings:
    base = fresh_settings(tmp_path / name)
    return dataclasses.replace(base, ledger_url=ledger_url, shared=tmp_path / "shared")


def test_a_run_waits_for_another_workers_events_then_is_published_again(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    a, b = _worker(tmp_path, "a", url), _worker(tmp_path, "b", url)
    assert a.runs_dir == b.runs_dir == tmp_path / "shared" / "runs"
    (tmp_path / "blocker").write_text("not a folder")
    cut_off = f"sqlite:///{tmp_path / 'blocker' / 'ledger.sqlite'}"  # B's path to the ledger

    evs = _events("r1")  # t0, t1, t2: running + success each
    for e in evs:
        on_b = e.task_id == "t2"
        where = record_event(
            cut_off if on_b else url,
            b.spool_dir if on_b else a.spool_dir,
            e,
            {"params": {}},
            attempts=1,
        )
        assert where == ("spool" if on_b else "ledger")
    ended = {
        ("t0", -1): "success",
        ("t1", -1): "success",
        ("t2", -1): "success",
        ("never_ran", -1): "upstream_failed",
    }

    ledger = Ledger(url)
    assert missing_events(ledger, "dag", "r1", ended) == ["t2"]
    slept: list[float] = []
    assert wait_for_events(a, "dag", "r1", ended, 0.3, poll_s=0.1, sleep=slept.append) == ["t2"]
    assert slept, "it waited before giving up"

    first = publish_run(a, "dag", "r1", missing=["t2"])
    assert "t2" in first.gaps["events"]
    rec = ledger.run("dag", "r1")
    assert rec is not None and rec.publication["gaps"]["events"] == first.gaps["events"]
    assert first.tries == 2

    assert drain_spool(a).events == 0  # A's spool holds nothing of it
    done = drain_spool(b)
    assert done.events == 2 and not done.errors
    assert [(p.dag_id, p.run_id) for p in done.republished] == [("dag", "r1")]
    again = done.republished[0]
    assert again.tries == 3 and "events" not in again.gaps
    assert missing_events(ledger, "dag", "r1", ended) == []
    rec = ledger.run("dag", "r1")
    assert rec is not None and rec.published_digest == again.digest != first.digest
    prov = json.loads(Path(again.files["prov.json"]).read_text())
    assert any("t2" in key for key in prov.get("activity", {}))
    assert not list(b.spool_dir.glob("*.jsonl"))
    assert drain_spool(b).events == 0  # a second drain: nothing new, nothing republished


def test_a_run_whose_publish_task_has_not_run_is_left_to_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    b = _worker(tmp_path, "b", url)
    (tmp_path / "blocker").write_text("not a folder")
    for e in _events("r2", 1):
        record_event(
            f"sqlite:///{tmp_path / 'blocker' / 'x.sqlite'}", b.spool_dir, e, {}, attempts=1
        )
    done = drain_spool(b)
    assert done.events == 2 and done.republished == []
    rec = Ledger(url).run("dag", "r2")
    assert rec is not None and rec.published_at is None


def test_celery_workers_refuse_to_start_without_a_shared_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__TWINPROV__SHARED_DIR", str(tmp_path / "nfs"))
    assert Settings.load().stac_dir == tmp_path / "nfs" / "stac"
    from twinprov.airflow.celery_worker import check_storage  # checks at import: passes

    with pytest.raises(ConfigError, match=r"shared_dir \(AIRFLOW__TWINPROV__SHARED_DIR\)"):
        check_storage(fresh_settings(tmp_path))
    check_storage(dataclasses.replace(fresh_settings(tmp_path), shared=tmp_path / "nfs"))


def test_celery_config_preloads_the_capture_before_the_pool_forks(tmp_path: Path) -> None:
    """A fresh interpreter, as ``airflow celery worker`` is, that only builds its Celery
    configuration (``celery_config_options``) has then imported the capture's and the
    publication's modules, which its pool processes and their task forks inherit (the cost
    this saves is measured by bench/celery_scale.py)."""
    probe = (
        "import sys; sys.argv = ['airflow', 'celery', 'worker'];"
        "import twinprov.airflow.celery_worker as w; assert w.CELERY_CONFIG;"
        "print('LOADED', ' '.join(m for m in ('twinprov.airflow.listener', 'twinprov.app.publish',"
        " 'twinprov.ro_crates.crate', 'prov.serializers.provrdf') if m in sys.modules))"
    )
    env = dict(os.environ, AIRFLOW__TWINPROV__SHARED_DIR=str(tmp_path / "nfs"))
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("LOADED")]
    assert line.split()[1:] == [
        "twinprov.airflow.listener",
        "twinprov.app.publish",
        "twinprov.ro_crates.crate",
        "prov.serializers.provrdf",
    ]
