"""Attacks on reruns ("[hardening]" items 1 and 3), each reproduced for real.

1. ``rerun_of`` naming another workflow's run: refused before any step runs, and nothing of
   that run (its params, IRI, run id, output checksums) lands in the rerun's ledger rows, PROV
   files or crate.
3. Crates imported by ``twinprov rerun CRATE|ZIP``: names taken from crate content stay inside
   ``TWINPROV_HOME/imports``; absolute, ``..`` and symlinked names are refused without saying
   anything about files outside the crate; zips are unpacked within limits; a real crate zip
   written by ``twinprov crate RUN --zip`` reruns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest

from twinprov.provenance.config import Settings
from twinprov.provenance.ledger import Ledger

TP = [sys.executable, "-m", "twinprov.cli"]


def _tp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TWINPROV_HOME=str(home))
    env.pop("TWINPROV_WORKFLOWS_DIR", None)
    return subprocess.run([*TP, *args], capture_output=True, text=True, env=env, check=False)


TEAM_B = """
name: team_b
params:
  secret: {type: string, default: none}
steps:
  - id: make
    command: [python, -c, "import sys; open('b.txt', 'w').write('B ' + sys.argv[1])",
              "${params.secret}"]
    outputs: [{name: b, path: b.txt, media_type: text/plain}]
"""

TEAM_A = """
name: team_a
params:
  secret: {type: string, default: a-public}
steps:
  - id: first
    command: [python, -c, "import sys; open('a.txt', 'w').write('A ' + sys.argv[1])",
              "${params.secret}"]
    outputs: [{name: a, path: a.txt, media_type: text/plain}]
  - id: second
    needs: [first]
    command: [python, -c, "open('a2.txt', 'w').write('A2')"]
    outputs: [{name: a2, path: a2.txt, media_type: text/plain}]
"""

B_SECRET = "b-confidential-7f3a91"


def _rows_of(settings: Settings, dag_id: str) -> str:
    """Every ledger row of ``dag_id`` (runs and task events), as one string."""
    db = settings.ledger_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        out = []
        for table in ("twinprov_runs", "twinprov_task_events"):
            cur = con.execute(f"SELECT * FROM {table} WHERE dag_id = ?", (dag_id,))  # noqa: S608
            out += [json.dumps(row, default=str) for row in cur.fetchall()]
    return "\n".join(out)


def _files_text(folder: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()
    )


def test_rerun_of_another_workflows_run_is_refused_and_nothing_of_it_is_recorded(
    airflow_db: None, workflows_dir: Path, twinprov_home: Path
) -> None:
    from twinprov.dags.runner import run_workflow
    from twinprov.provenance.ids import Ids
    from twinprov.provenance.workspace import run_dir

    (workflows_dir / "team_b.yaml").write_text(TEAM_B)
    (workflows_dir / "team_a.yaml").write_text(TEAM_A)
    settings = Settings.load()
    ledger = Ledger(settings.ledger_url)

    b = run_workflow(str(workflows_dir / "team_b.yaml"), {"secret": B_SECRET})
    assert b.state == "success"
    b_rec = ledger.run("team_b", b.run_id)
    assert b_rec is not None and b_rec.publication.get("crate")
    b_shas = {
        str(o["sha256"])
        for e in ledger.events("team_b", b.run_id)
        for o in (e.payload.get("manifest") or {}).get("outputs") or []
    }
    assert b_shas
    b_iri = Ids(settings.base_iri).run("team_b", b.run_id)

    a = run_workflow(str(workflows_dir / "team_a.yaml"), {"rerun_of": f"team_b/{b.run_id}"})
    assert a.state == "failed"
    events = ledger.events("team_a", a.run_id)
    failed = [e for e in events if e.state == "failed"]
    assert [e.task_id for e in failed] == ["first"]  # refused before any step ran
    (error,) = {str(e.payload.get("error")) for e in failed}
    assert "rerun_of refused" in error and "\n" not in error.strip()
    assert not [e for e in events if e.task_id == "second" and e.state == "running"]

    a_rec = ledger.run("team_a", a.run_id)
    assert a_rec is not None
    assert a_rec.params.get("secret") == "a-public"  # A's own value, not B's
    assert "rerun_of refused" in str(a_rec.info.get("params_error"))

    # nothing of B anywhere in A's ledger rows, PROV files or crate
    recorded = _rows_of(settings, "team_a") + _files_text(
        run_dir(settings.runs_dir, "team_a", a.run_id)
    )
    assert a_rec.publication.get("crate")  # the refused run is still published (failed)
    for leak in (B_SECRET, b.run_id, quote(b.run_id, safe=""), b_iri, *b_shas):
        assert leak not in recorded, leak

    # the other spellings are refused too, before anything of B is read
    from twinprov.app.rerun import RerunRefused, resolve_original

    b_crate = str(b_rec.publication["crate"])
    for ref in (f"team_b/{b.run_id}", f"team_b__reproduce/{b.run_id}", b_crate):
        with pytest.raises(RerunRefused, match="rerun_of refused"):
            resolve_original(settings, ref, "team_a")
    with pytest.raises(RerunRefused):  # the scheduled-rerun DAG of A is still workflow A
        resolve_original(settings, f"team_b/{b.run_id}", "team_a__reproduce")
    with pytest.raises(Exception, match="no recorded run"):  # a bare run id: only A's runs
        resolve_original(settings, b.run_id, "team_a")

    # a run of the same workflow is still accepted, from A or from A__reproduce
    ok = run_workflow(str(workflows_dir / "team_a.yaml"), {})
    assert ok.state == "success"
    for dag in ("team_a", "team_a__reproduce"):
        assert resolve_original(settings, f"team_a/{ok.run_id}", dag).run_id == ok.run_id
        assert resolve_original(settings, ok.run_id, dag).run_id == ok.run_id


# -- crate import -------------------------------------------------------------------------------

TINY = """
name: tiny_wf
steps:
  - id: only
    command: [python, -c, "open('t.txt', 'w').write('tiny')"]
    outputs: [{name: t, path: t.txt, media_type: text/plain}]
"""


@pytest.fixture
def tiny_crate(airflow_db: None, workflows_dir: Path, twinprov_home: Path, tmp_path: Path) -> Path:
    """A copy (outside TWINPROV_HOME) of the crate of a real run of a tiny workflow."""
    from twinprov.dags.runner import run_workflow

    (workflows_dir / "tiny.yaml").write_text(TINY)
    run = run_workflow(str(workflows_dir / "tiny.yaml"), {})
    rec = Ledger(Settings.load().ledger_url).run("tiny_wf", run.run_id)
    assert rec is not None
    crate = tmp_path / "mailed" / "crate"
    shutil.copytree(Path(rec.publication["crate"]), crate)
    return crate


def _edit_metadata(crate: Path, edit: object) -> None:
    meta = crate / "ro-crate-metadata.json"
    doc = json.loads(meta.read_text())
    for entity in doc["@graph"]:
        edit(entity)  # type: ignore[operator]
    meta.write_text(json.dumps(doc))


def _outside(tmp_path: Path, home: Path) -> set[Path]:
    """Everything under tmp_path (and its parent) that is not inside the home or the sources."""
    found = set()
    for root in (tmp_path, tmp_path.parent):
        for p in root.iterdir():
            if p.name.startswith(("outside", "evil", "planted")):
                found.add(p)
    return found


def _no_leftovers(home: Path) -> None:
    imports = home / "imports"
    assert not imports.exists() or not list(imports.iterdir()), list(imports.iterdir())


def test_crate_folder_with_traversing_run_id_stays_inside_imports(
    tiny_crate: Path, twinprov_home: Path, tmp_path: Path
) -> None:
    from twinprov.app.rerun import RerunError, import_crate

    def traverse(e: dict) -> None:  # type: ignore[type-arg]
        if e.get("@id") == "#run":
            e["identifier"] = "urn:twinprov:run/..%2F..%2Foutside/x"

    _edit_metadata(tiny_crate, traverse)
    (tiny_crate / "planted.sh").write_text("echo planted\n")
    with pytest.raises(RerunError, match="valid DAG id"):
        import_crate(Settings.load(), tiny_crate)
    assert not _outside(tmp_path, twinprov_home)
    _no_leftovers(twinprov_home)
    proc = _tp(twinprov_home, "rerun", str(tiny_crate))
    assert proc.returncode == 2 and "valid DAG id" in proc.stderr
    assert not _outside(tmp_path, twinprov_home)


def test_crate_main_entity_outside_the_crate_is_refused_without_a_hint(
    tiny_crate: Path, twinprov_home: Path, tmp_path: Path
) -> None:
    from twinprov.app.rerun import RerunError, import_crate, read_crate

    secret = tmp_path / "secret.yaml"
    secret.write_text("name: not_yours\n")
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    spec = next((tiny_crate / "workflow").glob("*.yaml"))
    main_id = f"workflow/{spec.name}"

    for ident, recorded in (
        (str(secret), "0" * 64),  # absolute, wrong sha: today the error leaks the real one
        (str(secret), digest),  # absolute, right sha: today the spec is read from outside
        (secret.as_uri(), digest),
        ("../secret.yaml", digest),
    ):

        def point(e: dict, ident: str = ident, recorded: str = recorded) -> None:  # type: ignore[type-arg]
            if e.get("@id") == "./":
                e["mainEntity"] = {"@id": ident}
            elif e.get("@id") in (main_id, ident, str(secret)):
                e["@id"], e["sha256"] = ident, recorded

        crate = tmp_path / f"c{abs(hash(ident + recorded))}"
        shutil.copytree(tiny_crate, crate)
        _edit_metadata(crate, point)
        with pytest.raises(RerunError, match="refused") as err:
            read_crate(crate)
        assert digest[:8] not in str(err.value)
        with pytest.raises(RerunError, match="refused"):
            import_crate(Settings.load(), crate)
        _no_leftovers(twinprov_home)

    # the spec a symlink (to the same bytes, outside the crate): refused
    outside_spec = tmp_path / "outside-spec.yaml"
    shutil.copy(spec, outside_spec)
    linked = tmp_path / "linked"
    shutil.copytree(tiny_crate, linked)
    (linked / "workflow" / spec.name).unlink()
    (linked / "workflow" / spec.name).symlink_to(outside_spec)
    with pytest.raises(RerunError, match="symlink: refused"):
        read_crate(linked)
    with pytest.raises(RerunError, match="symlink: refused"):
        import_crate(Settings.load(), linked)
    _no_leftovers(twinprov_home)


def test_crate_output_symlinked_out_of_the_crate_is_refused(
    tiny_crate: Path, twinprov_home: Path, tmp_path: Path
) -> None:
    from twinprov.app.rerun import RerunError, import_crate, read_crate

    (out,) = [p for p in tiny_crate.rglob("t.txt")]
    victim = tmp_path / "victim.txt"
    victim.write_text("not in the crate")
    out.unlink()
    out.symlink_to(victim)
    with pytest.raises(RerunError, match="symlink: refused"):
        read_crate(tiny_crate)
    with pytest.raises(RerunError, match="symlink: refused"):
        import_crate(Settings.load(), tiny_crate)
    _no_leftovers(twinprov_home)


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def _real_entries(crate: Path) -> list[tuple[zipfile.ZipInfo | str, bytes]]:
    return [
        (p.relative_to(crate).as_posix(), p.read_bytes())
        for p in sorted(crate.rglob("*"))
        if p.is_file()
    ]


def test_crafted_zips_are_refused_and_write_nothing_outside(
    tiny_crate: Path, twinprov_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import twinprov.app.crate_unpack as crate_unpack
    from twinprov.app.rerun import RerunError, import_crate

    good = _real_entries(tiny_crate)
    link = zipfile.ZipInfo("workspace/evil-link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    evil_abs = tmp_path / "evil-absolute.txt"
    cases = {
        "traversal": (
            [
                *good,
                ("../../../../evil-traversal.txt", b"x"),
                ("a/../../../../outside/planted.sh", b"x"),
            ],
            "unsafe name",
        ),
        "absolute": ([*good, (str(evil_abs), b"x")], "absolute name"),
        "symlink": ([*good, (link, b"/etc/passwd")], "is a symlink"),
        "too many files": (
            [*good, *[(f"extra/{i}.txt", b"") for i in range(5)]],
            "more than .* files",
        ),
    }
    monkeypatch.setattr(crate_unpack, "MAX_CRATE_FILES", len(good) + 2, raising=False)
    for name, (entries, message) in cases.items():
        archive = _zip(tmp_path / f"{name.replace(' ', '-')}.zip", entries)
        with pytest.raises(RerunError, match=message):
            import_crate(Settings.load(), archive)
        assert not _outside(tmp_path, twinprov_home), name
        assert not evil_abs.exists()
        _no_leftovers(twinprov_home)

    # too many bytes: the real bytes count, whatever the archive declares
    monkeypatch.setattr(crate_unpack, "MAX_CRATE_BYTES", 1000, raising=False)
    archive = _zip(tmp_path / "big.zip", [*good, ("workspace/big.bin", b"\0" * 5000)])
    with pytest.raises(RerunError, match="more than 1000 bytes"):
        import_crate(Settings.load(), archive)
    _no_leftovers(twinprov_home)

    # the CLI says so in one line
    archive = tmp_path / "traversal.zip"
    proc = _tp(twinprov_home, "rerun", str(archive))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unsafe name" in proc.stderr and "Traceback" not in proc.stderr
    assert not _outside(tmp_path, twinprov_home)


def test_crate_zip_written_by_twinprov_crate_reruns(airflow_db: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "wf" / "tiny.yaml"
    spec.parent.mkdir()
    spec.write_text(TINY)
    first = _tp(home, "run", str(spec), "--json")
    assert first.returncode == 0, first.stderr[-2000:]
    run_id = json.loads(first.stdout)["run_id"]
    zipped = _tp(home, "crate", f"tiny_wf/{run_id}", "--zip")
    assert zipped.returncode == 0, zipped.stderr[-2000:]
    archive = tmp_path / "mailed.zip"
    shutil.copy(Path(zipped.stdout.strip().splitlines()[-1]), archive)

    elsewhere = tmp_path / "elsewhere"
    proc = _tp(elsewhere, "rerun", str(archive), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["status"] == "reproduced"
    (imported,) = (elsewhere / "imports").iterdir()
    assert imported.name.startswith("tiny_wf-") and (imported / "ro-crate-metadata.json").is_file()
