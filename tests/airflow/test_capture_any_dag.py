"""The listener and hand-written DAGs: which ones it records under ``capture`` (no Airflow run
needed: task instances are stand-ins with the attributes the listener reads)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger


def _ti(tags: list[str], tmp_path: Path, run_id: str = "manual__1") -> Any:
    dag_file = tmp_path / "my_dag.py"
    dag_file.write_text("# a DAG\n")
    out = tmp_path / "out.txt"
    out.write_text("result\n")
    outlet = SimpleNamespace(uri=out.as_uri(), name="result", extra={})
    task = SimpleNamespace(task_id="work", inlets=[], outlets=[outlet], upstream_task_ids=set())
    dag = SimpleNamespace(
        tags=tags, fileloc=str(dag_file), description="d", task_dict={"work": task}
    )
    task.dag = dag
    ctx = {"params": {"who": "me"}, "outlet_events": []}
    return SimpleNamespace(
        task=task,
        dag_id="my_dag",
        run_id=run_id,
        task_id="work",
        map_index=-1,
        try_number=1,
        hostname="h",
        start_date=None,
        end_date=None,
        max_tries=0,
        _cached_template_context=ctx,
    )


@pytest.mark.parametrize(
    ("capture", "tags", "recorded"),
    [
        ("tagged", ["other"], False),  # untagged DAGs are untouched under the default
        ("tagged", ["twinprov"], True),
        ("specs", ["twinprov"], False),
        ("all", [], True),
    ],
)
def test_capture_follows_the_setting_and_tags(
    twinprov_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capture: str,
    tags: list[str],
    recorded: bool,
) -> None:
    from twinprov.airflow import listener

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", capture)
    ti = _ti(tags, tmp_path)
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_success(None, ti)
    settings = Settings.load()
    runs = Ledger(settings.ledger_url).runs()
    assert [r.dag_id for r in runs] == (["my_dag"] if recorded else [])
    if not recorded:
        assert not settings.runs_dir.exists()  # nothing of it anywhere under the home
        return
    rec = runs[0]
    assert rec.info["dag_kind"] == "airflow" and rec.info["dag_file"].endswith("my_dag.py")
    assert Path(rec.info["dag_snapshot"]).read_text() == "# a DAG\n"
    events = Ledger(settings.ledger_url).events("my_dag", "manual__1")
    final = events[-1].payload
    assert final["role"] == "task" and final["manifest"]["outputs"][0]["name"] == "result"
    assert len(final["manifest"]["outputs"][0]["sha256"]) == 64
    assert events[0].payload["environment"]["kind"] == "python"


def test_dag_run_end_publishes_only_captured_hand_written_runs(
    twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinprov.airflow import dag_capture, listener

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "tagged")
    ti = _ti(["twinprov"], tmp_path)
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_success(None, ti)
    listener.on_dag_run_success(SimpleNamespace(dag_id="my_dag", run_id="manual__1"), "ok")
    listener.on_dag_run_failed(SimpleNamespace(dag_id="other", run_id="r"), "nothing here")
    dag_capture.wait_published()  # publication runs in the background
    settings = Settings.load()
    rec = Ledger(settings.ledger_url).run("my_dag", "manual__1")
    assert rec is not None and rec.published_digest and rec.state == "success"
    assert rec.publication["crate"] and not rec.publication["gaps"]
    assert [r.dag_id for r in Ledger(settings.ledger_url).runs()] == ["my_dag"]


def test_failed_try_and_failed_run_are_published_with_the_error(
    twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinprov.airflow import dag_capture, listener

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "all")
    ti = _ti([], tmp_path, run_id="manual__2")
    (tmp_path / "out.txt").unlink()  # the try failed before writing its outlet
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_failed(None, ti, error=RuntimeError("disk full"))
    listener.on_dag_run_failed(SimpleNamespace(dag_id="my_dag", run_id="manual__2"), "failed")
    dag_capture.wait_published()  # publication runs in the background
    settings = Settings.load()
    rec = Ledger(settings.ledger_url).run("my_dag", "manual__2")
    assert rec is not None and rec.state == "failed" and rec.published_digest
    provn = Path(rec.publication["files"]["prov.provn"]).read_text()
    assert 'twinprov:error="disk full"' in provn
    assert "twinprov:content=" in provn  # the unwritten outlet: named, its content not read


def test_pod_facts_of_a_kubernetes_pod_operator(
    twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twinprov.airflow import listener

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "all")
    ti = _ti([], tmp_path, run_id="manual__3")
    ti.task.pod = SimpleNamespace(
        metadata=SimpleNamespace(name="work-abc", namespace="dt"),
        spec=SimpleNamespace(node_name="node-7"),
        status=SimpleNamespace(
            container_statuses=[
                SimpleNamespace(
                    name="base",
                    image="ghcr.io/x/y:1",
                    image_id="ghcr.io/x/y@sha256:" + "b" * 64,
                )
            ]
        ),
    )
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_success(None, ti)
    final = Ledger(Settings.load().ledger_url).events("my_dag", "manual__3")[-1].payload
    assert final["pod"] == {"name": "work-abc", "namespace": "dt", "node": "node-7"}
    assert final["image_digest"] == "sha256:" + "b" * 64


def test_a_run_started_by_an_output_asset_links_to_the_upstream_entity_by_checksum(
    twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workflow B scheduled on workflow A's output asset: the asset event's extra carries the
    sha256 (twinprov's output assets do), so B's run used A's very output entity."""
    from twinprov.airflow import dag_capture, listener
    from twinprov.provenance.store import EmbeddedStore

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "tagged")
    sha = "c" * 64
    event = SimpleNamespace(
        asset=SimpleNamespace(uri="twinprov://wf_a/make/table", name="twinprov://wf_a/make/table"),
        extra={"sha256": sha, "size": 12, "media_type": "text/csv", "run": "urn:twinprov:run/x"},
        source_dag_id="wf_a",
        source_run_id="manual__a",
        source_task_id="make",
    )
    ti = _ti(["twinprov"], tmp_path, run_id="asset_triggered__b")
    ti._ti_context_from_server = SimpleNamespace(
        dag_run=SimpleNamespace(
            triggering_user_name=None,
            run_type="asset_triggered",
            start_date=None,
            logical_date=None,
            conf={},
            consumed_asset_events=[event],
        )
    )
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_success(None, ti)
    listener.on_dag_run_success(SimpleNamespace(dag_id="my_dag", run_id="asset_triggered__b"), "")
    dag_capture.wait_published()  # publication runs in the background
    settings = Settings.load()
    rec = Ledger(settings.ledger_url).run("my_dag", "asset_triggered__b")
    assert rec is not None and rec.info["consumed_assets"][0]["source_dag_id"] == "wf_a"
    with EmbeddedStore(settings.store_path).open() as store:
        rows = list(
            store.query(
                "PREFIX prov: <http://www.w3.org/ns/prov#> SELECT ?run WHERE { "
                f"?run prov:used <urn:twinprov:data/sha256-{sha}> }}"
            )
        )
        assert [r["run"].value for r in rows] == [rec.publication["graph"]]
        informed = list(
            store.query(
                "PREFIX prov: <http://www.w3.org/ns/prov#> SELECT ?up WHERE { "
                f"<{rec.publication['graph']}> prov:wasInformedBy ?up }}"
            )
        )
    assert [r["up"].value for r in informed] == ["urn:twinprov:run/wf_a/manual__a"]


def test_a_run_whose_end_was_never_heard_is_published_by_the_pending_catch_up(
    twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler died before (or during) the DAG-run hook: the events are in the ledger,
    and ``twinprov publish --pending`` publishes the run."""
    from twinprov.airflow import listener
    from twinprov.app.publish import publish_pending

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "tagged")
    ti = _ti(["twinprov"], tmp_path, run_id="manual__4")
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_success(None, ti)
    settings = Settings.load()
    assert Ledger(settings.ledger_url).run("my_dag", "manual__4").published_digest is None
    (pub,) = publish_pending(settings)
    assert (pub.dag_id, pub.run_id, pub.state) == ("my_dag", "manual__4", "success")
    assert Path(pub.files["prov.ttl"]).is_file() and not pub.gaps


def test_object_storage_paths_as_inlets_and_outlets(
    twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import ObjectStoragePath

    from twinprov.airflow import listener

    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "all")
    ti = _ti([], tmp_path, run_id="manual__5")
    ti.task.outlets = [
        ObjectStoragePath((tmp_path / "out.txt").as_uri()),
        ObjectStoragePath("s3://bucket/key.csv"),
    ]
    listener.on_task_instance_running(None, ti)
    listener.on_task_instance_success(None, ti)
    final = Ledger(Settings.load().ledger_url).events("my_dag", "manual__5")[-1].payload
    (out,) = final["manifest"]["outputs"]
    assert out["name"] == "out.txt" and len(out["sha256"]) == 64
    remote = next(a for a in final["assets"] if a["uri"].startswith("s3://"))
    assert "sha256" not in remote and "not recorded" in remote["content"]


def test_untagged_dag_run_end_costs_no_ledger_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from twinprov.airflow import dag_capture, listener

    calls: list[str] = []
    monkeypatch.setattr(dag_capture, "publish_ended_run", lambda d, r: calls.append(d))
    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "tagged")
    untagged = SimpleNamespace(dag_id="plain", run_id="r", dag=SimpleNamespace(tags=["etl"]))
    tagged = SimpleNamespace(dag_id="mine", run_id="r", dag=SimpleNamespace(tags=["twinprov"]))
    listener.on_dag_run_success(untagged, "")
    listener.on_dag_run_failed(tagged, "")
    dag_capture.wait_published()  # publication runs in the background
    assert calls == ["mine"]
    monkeypatch.setenv("AIRFLOW__TWINPROV__CAPTURE", "all")
    listener.on_dag_run_success(untagged, "")
    dag_capture.wait_published()  # publication runs in the background
    assert calls == ["mine", "plain"]
