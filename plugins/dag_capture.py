"""Capture of hand-written DAGs (TaskFlow, BashOperator, KubernetesPodOperator…).

The listener calls :func:`captured` for every task try that is not a twinprov spec task; under
``[twinprov] capture = tagged`` (the default) only DAGs tagged ``twinprov`` are recorded, under
``all`` every DAG, under ``specs`` none. For a captured try it records what Airflow knows for
any operator (:func:`task_payload`, :func:`dag_run_info`), and after the try the files its
``file://`` inlets and outlets name, hashed, plus every asset it declared or emitted
(:func:`asset_payload`). Publication happens when the DAG run ends (:func:`publish_ended_run`,
from ``on_dag_run_success`` / ``on_dag_run_failed``). Plain values go down to the core.
"""

from __future__ import annotations

__all__ = [
    "DAG_KIND",
    "after_run",
    "announce_verdict",
    "asset_payload",
    "captured",
    "consumed_assets",
    "dag_run_info",
    "is_spec_dag",
    "may_capture",
    "publish_ended_run",
    "task_payload",
    "wait_published",
]

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from twinprov.provenance.assets import DAG_KIND, AssetRef, asset_entries, asset_label
from twinprov.provenance.config import CAPTURE_TAG, Settings, setting
from twinprov.provenance.spec import PUBLISH_TASK_ID

log = logging.getLogger(__name__)

MAX_TASKS_LISTED = 1000
"""A DAG's tasks are listed in the run record (for the crate's steps) up to this many."""

_file_digests: dict[tuple[str, int, int], str] = {}


def is_spec_dag(dag: Any) -> bool:
    """A DAG made by twinprov's factories: it ends in their publish task. Its tasks are recorded
    by the task processes that run them (which know their role); a copy of such a task without
    it (the scheduler's serialized one, failing a killed try) is not a hand-written task."""
    task_ids = getattr(dag, "task_ids", None) or ()
    return PUBLISH_TASK_ID in task_ids


def may_capture(task: Any) -> bool:
    """A quick first look, before any setting is parsed: a spec task, a DAG tagged
    ``twinprov``, or ``capture = all``. Other tasks cost the listener nothing more."""
    if getattr(task, "twinprov_role", None) is not None:
        return True
    dag = getattr(task, "dag", None)
    if is_spec_dag(dag):
        return False
    tags = getattr(dag, "tags", None) or ()
    return CAPTURE_TAG in tags or (setting("capture") or "").lower() == "all"


def captured(task: Any, settings: Settings) -> bool:
    """Whether this (non-spec) task's DAG is recorded under the ``capture`` setting."""
    if settings.capture == "specs":
        return False
    dag = getattr(task, "dag", None)
    if is_spec_dag(dag):
        return False
    return settings.captures(getattr(dag, "tags", None) or ())


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    sha = _file_digests.get(key)
    if sha is None:
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        _file_digests.clear()  # one DAG file per task process: keep the latest only
        _file_digests[key] = sha
    return sha


def _uri_of(obj: Any) -> str | None:
    uri = getattr(obj, "uri", None)
    if uri:
        return str(uri)
    if getattr(obj, "protocol", None) and hasattr(obj, "storage_options"):
        return str(obj)  # an ObjectStoragePath: ``file:///…`` for a local file
    return None


def _refs(objs: Any, direction: str) -> list[AssetRef]:
    out = []
    for obj in objs or ():
        uri = _uri_of(obj)
        if uri is None:  # an AssetAlias or a reference resolved only at run time
            continue
        extra = getattr(obj, "extra", None)
        out.append(
            AssetRef(
                uri=uri,
                name=str(getattr(obj, "name", "") or ""),
                direction=direction,
                extra=dict(extra) if isinstance(extra, dict) else {},
            )
        )
    return out


def _declared(ref: AssetRef) -> dict[str, str]:
    return {"uri": ref.uri, "name": asset_label(ref)}


def _dag_tasks(dag: Any) -> list[dict[str, Any]]:
    tasks = []
    for task_id, task in list((getattr(dag, "task_dict", None) or {}).items())[:MAX_TASKS_LISTED]:
        tasks.append(
            {
                "task_id": str(task_id),
                "operator": type(task).__name__,
                "upstream": sorted(str(u) for u in getattr(task, "upstream_task_ids", ()) or ()),
                "inlets": [_declared(r) for r in _refs(getattr(task, "inlets", None), "inlet")],
                "outlets": [_declared(r) for r in _refs(getattr(task, "outlets", None), "outlet")],
                "doc": str(getattr(task, "doc_md", None) or getattr(task, "doc", None) or "")[:500],
            }
        )
    return tasks


def _snapshot(settings: Settings, dag_id: str, run_id: str, src: Path, sha256: str) -> Path:
    """Keep the DAG file's bytes as the run started from them (the file may be edited later)."""
    from twinprov.provenance.workspace import run_dir

    dest = run_dir(settings.runs_dir, dag_id, run_id) / "dag" / src.name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".dag-")
    with os.fdopen(fd, "wb") as fh, src.open("rb") as fin:
        shutil.copyfileobj(fin, fh)
    if _file_sha256(Path(tmp)) != sha256:  # edited between hashing and copying
        os.unlink(tmp)
        raise OSError(f"{src} changed while it was copied")
    os.replace(tmp, dest)
    return dest


def dag_run_info(ti: Any, task: Any, settings: Settings, conf: Any) -> dict[str, Any]:
    """Run facts of a hand-written DAG: its file and sha256 (the code that ran), tags, tasks,
    conf. Kept from the run's first event on."""
    dag = getattr(task, "dag", None)
    info: dict[str, Any] = {"dag_kind": DAG_KIND}
    if dag is not None:
        info["dag_tags"] = sorted(str(t) for t in getattr(dag, "tags", None) or ())
        if getattr(dag, "description", None):
            info["dag_description"] = str(dag.description)
        info["dag_tasks"] = _dag_tasks(dag)
        fileloc = getattr(dag, "fileloc", None)
        if fileloc and Path(fileloc).is_file():
            path = Path(fileloc).resolve()
            info["dag_file"] = str(path)
            try:
                info["dag_file_sha256"] = sha = _file_sha256(path)
                info["dag_snapshot"] = str(_snapshot(settings, ti.dag_id, ti.run_id, path, sha))
            except OSError as e:
                info["dag_file_error"] = str(e)
    if isinstance(conf, dict) and conf:
        info["conf"] = conf
    return info


def consumed_assets(dag_run: Any) -> list[dict[str, Any]]:
    """The asset events that triggered a DAG run (data-aware scheduling), as plain dicts: URI,
    source DAG, run and task, and the event's extra — which, for twinprov's own outputs,
    carries the sha256 that links this run to the upstream output entity."""
    out = []
    for ev in getattr(dag_run, "consumed_asset_events", None) or ():
        asset = getattr(ev, "asset", None)
        uri = _uri_of(asset)
        if uri is None:
            continue
        extra = getattr(ev, "extra", None)
        out.append(
            {
                "uri": uri,
                "name": str(getattr(asset, "name", "") or ""),
                "source_dag_id": getattr(ev, "source_dag_id", None),
                "source_run_id": getattr(ev, "source_run_id", None),
                "source_task_id": getattr(ev, "source_task_id", None),
                "extra": dict(extra) if isinstance(extra, dict) else {},
            }
        )
    return out


def _pod_facts(task: Any) -> dict[str, Any]:
    """Pod name, namespace, node and image digest of a KubernetesPodOperator's last pod, as the
    operator last saw it (no call to the cluster)."""
    pod = getattr(task, "pod", None)
    meta = getattr(pod, "metadata", None)
    if meta is None:
        return {}
    facts: dict[str, Any] = {
        "pod": {
            "name": getattr(meta, "name", None),
            "namespace": getattr(meta, "namespace", None),
            "node": getattr(getattr(pod, "spec", None), "node_name", None),
        }
    }
    statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
    for st in statuses:
        if getattr(st, "name", None) == "base" or len(statuses) == 1:
            image_id = str(getattr(st, "image_id", "") or "")
            if "@sha256:" in image_id:
                facts["image_digest"] = "sha256:" + image_id.split("@sha256:", 1)[1]
            if getattr(st, "image", None):
                facts["image"] = str(st.image)
    return facts


def task_payload(task: Any, state: str) -> dict[str, Any]:
    """What a hand-written task's event adds to the common payload."""
    payload: dict[str, Any] = {}
    if state == "running":
        from twinprov.provenance.environment import python_environment

        payload["environment"] = python_environment()
        pool = getattr(task, "pool", None)
        if pool:
            payload["pool"] = str(pool)
    else:
        payload.update(_pod_facts(task))
    return payload


def _emitted(context: Any) -> list[AssetRef]:
    """Asset events the try emitted (``outlet_events[...].extra``, ``yield Metadata(…)``, assets
    added to an ``AssetAlias``)."""
    events = context.get("outlet_events") if hasattr(context, "get") else None
    if events is None:
        return []
    out = []
    for key in list(events):
        acc = events[key]
        uri = _uri_of(key)
        if uri is not None and acc.extra:
            out.append(AssetRef(uri, str(getattr(key, "name", "") or ""), "outlet", acc.extra))
        for alias_event in getattr(acc, "asset_alias_events", ()) or ():
            dest = getattr(alias_event, "dest_asset_key", None)
            if _uri_of(dest):
                out.append(
                    AssetRef(
                        str(dest.uri),
                        str(getattr(dest, "name", "") or ""),
                        "outlet",
                        dict(getattr(alias_event, "extra", None) or {}),
                    )
                )
    return out


def asset_payload(task: Any, context: Any) -> dict[str, Any]:
    """After a try: its ``file://`` inlets and outlets hashed (as a manifest's ``inputs`` and
    ``outputs``), and every asset it declared or emitted, with the event extras."""
    refs = _refs(getattr(task, "inlets", None), "inlet") + _refs(
        getattr(task, "outlets", None), "outlet"
    )
    try:
        emitted = _emitted(context)
    except Exception as e:  # the asset events are a convenience: keep the declared assets
        emitted = []
        log.debug("twinprov: asset events not read: %s", e)
    merged: dict[tuple[str, str], AssetRef] = {(r.direction, r.uri): r for r in refs}
    for e in emitted:
        old = merged.get((e.direction, e.uri))
        extra = {**(old.extra if old else {}), **e.extra}
        name = old.name if old else e.name
        merged[(e.direction, e.uri)] = AssetRef(e.uri, name, e.direction, extra)
    if not merged:
        return {}
    manifest, assets = asset_entries(merged.values(), hash_files=True)
    return {"manifest": manifest, "assets": assets}


def publish_ended_run(dag_id: str, run_id: str) -> None:
    """Publish a captured hand-written DAG's run when it ends (nothing to do for other runs:
    spec DAGs publish from their own task). The ledger keeps the events: a publication cut
    short here is finished by ``twinprov publish --pending``."""
    from twinprov.provenance.ledger import Ledger

    settings = Settings.load()
    ledger = Ledger(settings.ledger_url)
    rec = ledger.run(dag_id, run_id)
    if rec is None:
        ledger.ingest_spool(settings.spool_dir)
        rec = ledger.run(dag_id, run_id)
    if rec is None or rec.info.get("dag_kind") != DAG_KIND:
        return
    from twinprov.airflow.connections import yprov_connection
    from twinprov.app.publish import publish_run

    pub = publish_run(settings, dag_id, run_id, connection=yprov_connection)
    log.info("twinprov: published %s/%s (%s) to %s", dag_id, run_id, pub.state, pub.graph)


def announce_verdict(dag_id: str, run_id: str) -> int:
    """Attach a rerun's published verdict to its output assets: one asset event per compared
    output (:func:`twinprov.app.asset_events.verdict_events`), in Airflow's metadata DB. The
    event announces a check, not new data: it does not start the DAGs scheduled on the asset.
    Returns how many events were added (none for a run that is not a rerun)."""
    from twinprov.app.asset_events import verdict_events

    events = verdict_events(Settings.load(), dag_id, run_id)
    if not events:
        return 0
    from airflow.utils.session import create_session

    with create_session() as session:
        return _add_asset_events(session, dag_id, run_id, events)


def _add_asset_events(
    session: Any, dag_id: str, run_id: str, events: list[tuple[str, dict[str, Any]]]
) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    added = 0
    for uri, extra in events:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.uri == uri).limit(1))
        if asset_id is None:  # an asset Airflow does not know (yet): nothing to attach it to
            continue
        session.add(
            AssetEvent(
                asset_id=asset_id,
                extra=extra,
                source_dag_id=dag_id,
                source_run_id=run_id,
            )
        )
        added += 1
    return added


class _Publisher:
    """Publishes ended runs where the DAG-run hook runs (the scheduler's loop, or the end of
    ``dag.test()``), one at a time. The ledger holds every event first: a run whose
    publication a stopped process never did stays pending, and ``twinprov publish --pending``
    finishes it. (Publishing from a background thread was tried: it raced with the same
    process's later use of Airflow's SQLite metadata DB and of the settings, so it is not done.)
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        """Time spent publishing (read by bench/capture_overhead_dag)."""

    def submit(self, dag_id: str, run_id: str, publish: bool) -> None:
        import time

        t0 = time.perf_counter()
        try:
            if publish:
                publish_ended_run(dag_id, run_id)
            announce_verdict(dag_id, run_id)  # a rerun's verdict, on its output assets
        except Exception:
            log.warning(
                "twinprov: could not publish %s/%s (`twinprov publish --pending` finishes it)",
                dag_id,
                run_id,
                exc_info=True,
            )
        finally:
            self.seconds += time.perf_counter() - t0


_publisher = _Publisher()


def after_run(dag_id: str, run_id: str, *, publish: bool) -> None:
    """A DAG run ended: publish it (a hand-written DAG's run, ``publish``) and announce a
    rerun's verdict on its output assets (:class:`_Publisher`)."""
    _publisher.submit(dag_id, run_id, publish)


def wait_published() -> None:
    """Every run that ended in this process is published by then (publication happens in the
    DAG-run hook itself); kept for callers that wait for it."""


def publishing_seconds() -> float:
    """Time this process spent publishing ended runs."""
    return _publisher.seconds
