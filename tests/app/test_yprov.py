"""yProv publication (``twinprov.app.yprov``): runs pushed through the real Airflow publish task
and ``twinprov publish``, with the account in an Airflow connection (``AIRFLOW_CONN_*``).

The server is a stand-in (``tests/app/yprov_standin.py``): yProvStore needs an object store and
a PID service that cannot run here, so only its login and upload routes are implemented, with
the shapes of the yProvStore sources that module names. Everything on twinprov's side is real.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.yprov_standin import YProvStandIn
from tests.secret_sweep import files_under, find_secrets
from twinprov.app.yprov import YProvConnection, YProvError, env_connection, push_document
from twinprov.cli import main
from twinprov.dags.runner import run_workflow
from twinprov.provenance.config import Settings, airflow_home
from twinprov.provenance.ids import VOCAB
from twinprov.provenance.ledger import Ledger

PASSWORD = "yProv-pa55word-Planted-7"
EMAIL = "twin@example.org"
SPEC = """
name: pushed_wf
steps:
  - id: only
    command: [python, -c, "open('o.txt', 'w').write('pushed')"]
    outputs: [{name: o, path: o.txt, media_type: text/plain}]
"""


def _connect(monkeypatch: pytest.MonkeyPatch, port: int, password: str = PASSWORD) -> None:
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": port, "login": EMAIL}
    monkeypatch.setenv("AIRFLOW_CONN_TWINPROV_YPROV", json.dumps({**conn, "password": password}))


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[YProvStandIn]:
    server = YProvStandIn(EMAIL, PASSWORD).start()
    _connect(monkeypatch, server.port)
    yield server
    server.stop()


def _copy_in_prov(prov_json: Path) -> dict[str, object]:
    """The entity of the PROV document that records the yProv copy."""
    doc = json.loads(prov_json.read_text())
    prefix = next(p for p, iri in doc["prefix"].items() if iri == VOCAB)
    copies = [e for e in doc["entity"].values() if f"{prefix}:yprovPid" in e]
    assert len(copies) == 1, copies
    return copies[0]


def _value(attr: object) -> object:
    return attr["$"] if isinstance(attr, dict) else attr


@pytest.mark.usefixtures("airflow_db", "twinprov_home")
def test_a_run_and_its_rerun_are_pushed_and_chain(
    workflows_dir: Path, standin: YProvStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__TWINPROV__YPROV_PUBLISH", "true")
    (workflows_dir / "pushed.yaml").write_text(SPEC)
    run = run_workflow(str(workflows_dir / "pushed.yaml"), {})
    assert run.state == "success"
    settings = Settings.load()
    ledger = Ledger(settings.ledger_url)
    rec = ledger.run(run.dag_id, run.run_id)
    assert rec is not None and rec.publication["gaps"] == {}
    copy = rec.publication["yprov"]
    pid = copy["pid"]
    # the stand-in got the run's PROV-JSON document, with a bearer token (not the password)
    got = standin.documents[pid]
    assert got.parent_pid is None and got.version == 1
    assert got.authorization.removeprefix("Bearer ") in standin.tokens
    activities = got.document["activity"]
    assert any(run.run_id in str(a) for a in activities.values()), "not this run's document"
    assert copy["location"] == f"{standin.url}/documents/{pid}"
    # the published PROV records where its copy is
    entity = _copy_in_prov(Path(rec.publication["files"]["prov.json"]))
    assert _value(entity["prov:type"]) == "prov:Bundle"
    assert _value(entity["prov:location"]) == copy["location"]  # prov:atLocation in PROV-O
    # …and so does the crate, on its PROV-JSON file
    crate = json.loads((Path(rec.publication["crate"]) / "ro-crate-metadata.json").read_text())
    prov_file = next(e for e in crate["@graph"] if e["@id"] == "prov/prov.json")
    assert prov_file["identifier"] == pid
    assert prov_file["sameAs"] == {"@id": copy["location"]}

    again = run_workflow(str(workflows_dir / "pushed.yaml"), {"rerun_of": run.run_id})
    assert again.state == "success"
    rerun = ledger.run(again.dag_id, again.run_id)
    assert rerun is not None and rerun.publication["gaps"] == {}
    second = rerun.publication["yprov"]
    assert second["parent_pid"] == pid != second["pid"]
    assert standin.documents[second["pid"]].parent_pid == pid
    assert standin.documents[second["pid"]].version == 2
    entity = _copy_in_prov(Path(rerun.publication["files"]["prov.json"]))
    parent_key = next(k for k in entity if k.endswith(":yprovParentPid"))
    assert _value(entity[parent_key]) == pid

    # publishing again keeps the pid: yProv is not sent the same run twice
    assert main(["publish", run.run_id, "--to", "yprov"]) == 0
    assert len(standin.documents) == 2
    rec = ledger.run(run.dag_id, run.run_id)
    assert rec is not None and rec.publication["yprov"]["pid"] == pid

    # the secrets sweep: neither the password nor a token is in any file twinprov or Airflow
    # wrote (ledger, PROV, crate, logs)
    blobs = {**files_under(settings.home), **files_under(airflow_home())}
    planted = {"yProv password": PASSWORD, **{f"token {t[:4]}…": t for t in standin.tokens}}
    assert find_secrets(blobs, planted) == []


@pytest.mark.usefixtures("airflow_db", "twinprov_home")
def test_unreachable_yprov_is_a_gap_that_publish_pending_fills(
    workflows_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:  # a port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _connect(monkeypatch, port)
    (workflows_dir / "pushed.yaml").write_text(SPEC)
    run = run_workflow(str(workflows_dir / "pushed.yaml"), {})
    assert run.state == "success", "an unreachable yProv must not fail the run"
    settings = Settings.load()
    ledger = Ledger(settings.ledger_url)
    rec = ledger.run(run.dag_id, run.run_id)
    assert rec is not None and "yprov" not in rec.publication
    assert rec.publication["gaps"] == {}, "not asked for: the setting is off"

    assert main(["publish", run.run_id, "--to", "yprov"]) == 1
    rec = ledger.run(run.dag_id, run.run_id)
    assert rec is not None
    gap = rec.publication["gaps"]["yprov"]
    assert gap.startswith(f"yProv at http://127.0.0.1:{port} unreachable"), gap
    assert "twinprov_yprov" in gap and "\n" not in gap
    assert Path(rec.publication["files"]["prov.json"]).is_file(), "the PROV files are published"

    server = YProvStandIn(EMAIL, PASSWORD, port=port).start()
    try:
        capsys.readouterr()
        assert main(["publish", "--pending"]) == 0  # the gap is retried without flags
        rec = ledger.run(run.dag_id, run.run_id)
        assert rec is not None and rec.publication["gaps"] == {}
        pid = rec.publication["yprov"]["pid"]
        assert pid in server.documents
        assert f"yProv: pid {pid}" in capsys.readouterr().out
        assert main(["show", run.run_id, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["yprov"]["pid"] == pid
        _copy_in_prov(Path(rec.publication["files"]["prov.json"]))
    finally:
        server.stop()


def test_refusals_are_one_line_and_never_quote_the_password(standin: YProvStandIn) -> None:
    wrong = YProvConnection("twinprov_yprov", standin.url, EMAIL, "not-" + PASSWORD)
    with pytest.raises(YProvError) as refused:
        push_document(wrong, {"entity": {}})
    assert "refused the login of twin@example.org (401)" in str(refused.value)
    assert "password of Airflow connection 'twinprov_yprov'" in str(refused.value)
    standin.fail_with = 503
    conn = env_connection("twinprov_yprov")
    assert conn is not None and conn.url == standin.url
    with pytest.raises(YProvError) as failed:
        push_document(conn, {"entity": {}})
    assert f"yProv at {standin.url} failed on POST /auth/login (503)" in str(failed.value)
    for e in (refused.value, failed.value):
        assert "\n" not in str(e) and PASSWORD not in str(e) and PASSWORD not in repr(conn)
