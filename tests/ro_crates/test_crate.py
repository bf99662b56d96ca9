"""CrateInput → crate folder: content, links, payload, determinism and atomic replacement."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from tests.ro_crates.conftest import ODD_NAME, StepRun, load_failing_demo, record_run
from tests.ro_crates.test_assemble import RUN, mini_spec, mini_success
from twinprov.provenance.config import Settings
from twinprov.ro_crates.assemble import crate_input_from_ledger, workflow_info
from twinprov.ro_crates.crate import ACTION_STATUS, PROFILES, build_crate, write_crate
from twinprov.ro_crates.errors import CrateInputError, SpecChangedError
from twinprov.ro_crates.images import parse_image
from twinprov.ro_crates.model import (
    CrateInput,
    FileRecord,
    MlflowRunRef,
    RunInfo,
    StacItemRef,
    TaskTry,
    ValidationReport,
)

COMPLETED, FAILED = ACTION_STATUS["completed"], ACTION_STATUS["failed"]
SMALL = 1000  # copy threshold for the tests: big.bin (5000 bytes) is referenced


def graph(crate: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads((crate / "ro-crate-metadata.json").read_text(encoding="utf-8"))
    return {e["@id"]: e for e in doc["@graph"]}


def ids(value: Any) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v["@id"] for v in values]


def types(entity: dict[str, Any]) -> set[str]:
    t = entity["@type"]
    return set(t if isinstance(t, list) else [t])


@pytest.fixture
def mini_crate(settings: Settings, tmp_path: Path) -> tuple[CrateInput, Path]:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    return data, build_crate(data, tmp_path / "crate", copy_threshold_bytes=SMALL)


def test_workflow_steps_and_tools(mini_crate: tuple[CrateInput, Path]) -> None:
    _data, crate = mini_crate
    g = graph(crate)
    root = g["./"]
    assert set(ids(root["conformsTo"])) == {p[0] for p in PROFILES}
    assert "https://w3id.org/ro/wfrun/provenance/0.5" in ids(root["conformsTo"])
    assert "https://w3id.org/workflowhub/workflow-ro-crate/1.0" in ids(root["conformsTo"])
    for uri, _name, version in PROFILES:
        assert g[uri]["@type"] == "CreativeWork" and g[uri]["version"] == version
    assert set(ids(g["ro-crate-metadata.json"]["conformsTo"])) == {
        "https://w3id.org/ro/crate/1.1",
        "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
    }
    main = g[ids(root["mainEntity"])[0]]
    assert main["@id"] == "workflow/mini.yaml"
    assert types(main) == {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"}
    assert main["version"] == "2.1.0"
    assert main["sha256"] == hashlib.sha256((crate / "workflow/mini.yaml").read_bytes()).hexdigest()
    steps = [g[i] for i in ids(main["step"])]
    assert [(s["name"], s["position"]) for s in steps] == [
        ("make", 0),
        ("summarise", 1),
        ("report", 2),
    ]
    tools = ids(main["hasPart"])
    for s in steps:
        tool = g[ids(s["workExample"])[0]]
        assert tool["@type"] == "SoftwareApplication" and tool["@id"] in tools
        for fp in ids(tool.get("input", [])) + ids(tool.get("output", [])):
            assert g[fp]["@type"] == "FormalParameter" and g[fp]["additionalType"]
    # the pinned image of 'make', split into its parts
    make_tool = g["#tool/make"]
    image = g[ids(make_tool["containerImage"])[0]]
    assert image["@type"] == "ContainerImage"
    assert (image["registry"], image["name"], image["tag"]) == ("ghcr.io", "example/maker", "1.2")
    assert image["sha256"] == "a" * 64
    # step programs ship beside the spec
    assert (crate / "workflow/mini/step.py").is_file()
    assert ids(make_tool["mainEntity"]) == ["workflow/mini/step.py"]
    # params: formal parameters of the workflow, values as PropertyValues
    assert [g[i]["name"] for i in ids(main["input"])] == ["seed", "mode", "threshold"]
    assert g["#param/seed"]["additionalType"] == "Integer"
    assert g["#param/threshold"]["additionalType"] == "Number"
    assert g["#pv/seed"]["value"] == 7
    assert "#param/seed" in ids(g["#pv/seed"]["exampleOfWork"])


def test_actions(mini_crate: tuple[CrateInput, Path]) -> None:
    _data, crate = mini_crate
    g = graph(crate)
    root = g["./"]
    organize = g["#engine-run"]
    assert organize["@type"] == "OrganizeAction"
    engine = g[ids(organize["instrument"])[0]]
    assert engine["name"] == "twinprov" and engine["@type"] == "SoftwareApplication"
    airflow = g[ids(engine["softwareRequirements"])[0]]
    assert airflow["name"] == "Apache Airflow" and airflow["softwareVersion"] == "3.3.2"
    run = g[ids(organize["result"])[0]]
    assert run["@type"] == "CreateAction"
    assert ids(run["instrument"]) == ids(root["mainEntity"])
    assert run["actionStatus"] == COMPLETED and "error" not in run
    person = g[ids(run["agent"])[0]]
    assert person["@type"] == "Person" and person["name"] == "ada"
    assert {"#pv/seed", "#pv/mode", "#pv/threshold"} <= set(ids(run["object"]))
    assert len(ids(run["result"])) == 4
    controls = [g[i] for i in ids(organize["object"])]
    assert [c["@type"] for c in controls] == ["ControlAction"] * 3
    for control in controls:
        step = g[ids(control["instrument"])[0]]
        assert step["@type"] == "HowToStep"
        for action_id in ids(control["object"]):
            action = g[action_id]
            assert action["@type"] == "CreateAction"
            assert ids(action["instrument"]) == ids(step["workExample"])
            assert action["actionStatus"] == COMPLETED
            assert action["startTime"].endswith("+00:00") and action["endTime"]
            assert action_id in ids(root["mentions"])
            for pv in ids(action["resourceUsage"]):
                assert g[pv]["propertyID"].startswith("urn:twinprov:vocab#")
    summarise = g["#try/summarise/1"]
    env = [g[i] for i in ids(summarise["environment"])]
    assert [(e["name"], e["value"]) for e in env] == [("MINI_MODE", "fast")]
    # the local backend does not run the image: no containerImage on what actually ran
    assert "containerImage" not in summarise
    assert g["#control/summarise"]["actionStatus"] == COMPLETED


def test_files(mini_crate: tuple[CrateInput, Path]) -> None:
    data, crate = mini_crate
    g = graph(crate)
    outputs = [o for t in data.tries for o in t.outputs]
    for rec in outputs:
        entity = next(e for e in g.values() if e.get("sha256") == rec.sha256)
        assert entity["@type"] == "File"
        assert entity["contentSize"] == str(rec.size)
        assert entity["encodingFormat"] == rec.media_type
        assert entity["identifier"] == rec.iri
    for name, media in (("prov.json", "application/json"), ("prov.ttl", "text/turtle")):
        prov = g[f"prov/{name}"]
        assert prov["encodingFormat"] == media and ids(prov["about"]) == ["#run"]
        assert (crate / "prov" / name).is_file()
    assert (g["prov/prov.provn"]["encodingFormat"]) == "text/provenance-notation"
    assert (crate / "ro-crate-preview.html").is_file()
    assert "mini_crate run" in (crate / "README.md").read_text(encoding="utf-8")
    assert g["README.md"]["about"] == {"@id": "./"}


def test_large_outputs_referenced_small_copied(mini_crate: tuple[CrateInput, Path]) -> None:
    data, crate = mini_crate
    g = graph(crate)
    big = next(o for t in data.tries for o in t.outputs if o.name == "big")
    entity = g[f"#sha256-{big.sha256}"]  # by checksum; where it was written, only a hint
    uri = entity["contentUrl"]
    assert uri == big.path.resolve().as_uri() and uri not in g
    assert entity["sha256"] == big.sha256 and entity["contentSize"] == "5000"
    assert not (crate / "workspace" / "big.bin").exists()
    assert Path(unquote(urlsplit(uri).path)).read_bytes() == b"\0" * 5000
    for rec in (o for t in data.tries for o in t.outputs if o.name != "big"):
        copied = crate / "workspace" / rec.rel_path  # type: ignore[operator]
        assert copied.read_bytes() == rec.path.read_bytes()


def test_unusual_path_survives(mini_crate: tuple[CrateInput, Path]) -> None:
    data, crate = mini_crate
    g = graph(crate)
    copied = crate / "workspace" / ODD_NAME
    assert copied.read_text(encoding="utf-8") == "1 2 3\n"
    entity_id = next(i for i, e in g.items() if e.get("name") == ODD_NAME)
    assert entity_id == "workspace/data%20dir/r%C3%A9%23sult%201.txt"
    assert unquote(entity_id) == f"workspace/{ODD_NAME}"
    assert entity_id in ids(g["./"]["hasPart"])
    # and the summarise step read the very same entity
    assert entity_id in ids(g["#try/summarise/1"]["object"])


def test_same_input_same_metadata(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    a = build_crate(data, tmp_path / "a", copy_threshold_bytes=SMALL)
    again = crate_input_from_ledger(settings, "mini_crate", RUN)
    b = build_crate(again, tmp_path / "b", copy_threshold_bytes=SMALL)

    def without_date(crate: Path) -> str:
        doc = json.loads((crate / "ro-crate-metadata.json").read_text(encoding="utf-8"))
        for e in doc["@graph"]:
            if e["@id"] == "./":
                assert e.pop("datePublished")
        return json.dumps(doc, sort_keys=True)

    assert without_date(a) == without_date(b)
    assert (a / "README.md").read_bytes() == (b / "README.md").read_bytes()
    # no random identifiers anywhere
    assert "#urn:uuid" not in without_date(a) and "arcp://" not in without_date(a)


def test_failed_run_names_the_failed_step(settings: Settings, tmp_path: Path) -> None:
    dag_id, run_id, _ws = load_failing_demo(settings, tmp_path)
    crate = build_crate(crate_input_from_ledger(settings, dag_id, run_id), tmp_path / "crate")
    g = graph(crate)
    run = g["#run"]
    assert run["actionStatus"] == FAILED
    assert "step 'second' failed" in run["error"]
    assert g["#engine-run"]["actionStatus"] == FAILED
    assert g["#control/second"]["actionStatus"] == FAILED
    assert g["#control/first"]["actionStatus"] == COMPLETED
    second = g["#try/second/1"]
    assert second["actionStatus"] == FAILED
    assert second["error"] == "step second failed: exit code 3"
    assert "exit code 3" in second["description"]
    assert "error" not in g["#try/first/1"]
    # the step that never ran is described, but has no action and is not an orchestrated tool
    assert g["#step/third"]["position"] == 2
    assert "#control/third" not in g
    assert "#tool/third" not in ids(g["workflow/failing.yaml"]["hasPart"])
    assert "second" in (crate / "README.md").read_text(encoding="utf-8")


def test_overwritten_bytes_are_described_not_shipped(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    record_run(
        settings,
        spec,
        RUN,
        [
            StepRun("make", {"raw": b"first try\n"}, state="failed", error="boom", exit_code=1),
            StepRun("make", {"raw": b"second try\n", "big": b"x" * 10}, try_number=2),
        ],
    )
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    build = write_crate(data, tmp_path / "crate")
    g = graph(build.path)
    first = hashlib.sha256(b"first try\n").hexdigest()
    gone = g[f"#sha256-{first}"]
    assert gone["@type"] == "File" and "overwritten" in gone["description"]
    assert build.files_missing == 1
    assert (build.path / "workspace" / ODD_NAME).read_bytes() == b"second try\n"
    assert g["#try/make/1"]["actionStatus"] == FAILED
    assert ids(g["#try/make/1"]["result"]) == [gone["@id"]]
    assert ids(g["#control/make"]["object"]) == ["#try/make/1", "#try/make/2"]
    assert g["#control/make"]["actionStatus"] == COMPLETED


def test_rebuild_replaces_and_a_failed_build_keeps_the_old_crate(
    settings: Settings, tmp_path: Path
) -> None:
    spec = mini_spec(tmp_path)
    mini_success(settings, spec)
    data = crate_input_from_ledger(settings, "mini_crate", RUN)
    dest = tmp_path / "out" / "crate"
    build_crate(data, dest)
    (dest / "stale.txt").write_text("from an older build", encoding="utf-8")
    build_crate(data, dest)
    assert not (dest / "stale.txt").exists()
    spec.write_text(spec.read_text(encoding="utf-8") + "# edited\n", encoding="utf-8")
    with pytest.raises(SpecChangedError):
        build_crate(data, dest)
    assert (dest / "ro-crate-metadata.json").is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["crate"]


def test_try_of_unknown_step_is_refused(settings: Settings, tmp_path: Path) -> None:
    spec = mini_spec(tmp_path)
    data = CrateInput(
        workflow=workflow_info(spec),
        run=RunInfo("mini_crate", "r1", "success"),
        tries=(TaskTry("not_a_step", 1, "success"),),
    )
    with pytest.raises(CrateInputError, match="not_a_step"):
        build_crate(data, tmp_path / "crate")
    assert not (tmp_path / "crate").exists()


def hand_built(tmp_path: Path) -> CrateInput:
    """A run described by hand (no ledger), with files under an awkward folder name."""
    spec = mini_spec(tmp_path)
    ws = tmp_path / "work space #1 ü"
    (ws / "data dir").mkdir(parents=True)
    raw = ws / ODD_NAME
    raw.write_bytes(b"raw\n")
    big = ws / "big.bin"
    big.write_bytes(b"B" * 4096)
    summary = ws / "summary.csv"
    summary.write_bytes(b"a,b\n1,2\n")

    def rec(name: str, path: Path, media: str) -> FileRecord:
        data = path.read_bytes()
        return FileRecord(
            name,
            path,
            hashlib.sha256(data).hexdigest(),
            len(data),
            media,
            path.relative_to(ws).as_posix(),
        )

    raw_rec = rec("raw", raw, "text/plain")
    report_json = tmp_path / "gx.json"
    report_json.write_text('{"success": false}', encoding="utf-8")
    stac = tmp_path / "item.json"
    stac.write_text('{"type": "Feature"}', encoding="utf-8")
    return CrateInput(
        workflow=workflow_info(spec),
        run=RunInfo(
            "mini_crate",
            "hand-made",
            "success",
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:01:00.5+00:00",
            "grace",
            {"seed": 1, "mode": "fast", "threshold": 0.25},
            "0.1.0",
            "3.3.2",
        ),
        tries=(
            TaskTry(
                "make",
                1,
                "success",
                "2026-01-01T00:00:01Z",
                "2026-01-01T00:00:10Z",
                outputs=(raw_rec, rec("big", big, "application/octet-stream")),
                target="kubernetes",
                image="ghcr.io/example/maker:1.2",
                image_digest="ghcr.io/example/maker@sha256:" + "b" * 64,
            ),
            TaskTry(
                "summarise",
                1,
                "success",
                "2026-01-01T00:00:11",
                "2026-01-01T00:00:20",
                inputs=(raw_rec,),
                outputs=(rec("summary", summary, "text/csv"),),
                resource_usage={"max_rss_kb": 1024.0, "gpu_seconds": 3.0},
            ),
            TaskTry("report", 1, "upstream_failed"),
        ),
        validations=(
            ValidationReport("summary", rec("s", summary, "text/csv").sha256, False, report_json),
        ),
        stac_items=(StacItemRef("summary-item", stac, raw_rec.sha256),),
        mlflow_runs=(MlflowRunRef("abc123", "file:///tmp/mlruns", "1", task_id="make"),),
    )


def test_hand_built_input(tmp_path: Path) -> None:
    data = hand_built(tmp_path)
    build = write_crate(data, tmp_path / "crate", copy_threshold_bytes=1024)
    g = graph(build.path)
    assert (build.files_copied, build.files_referenced, build.files_missing) == (2, 1, 0)
    big_uri = (tmp_path / "work space #1 ü" / "big.bin").as_uri()
    assert "%20" in big_uri and "%23" in big_uri and "%C3%BC" in big_uri
    (big,) = [e for e in g.values() if e.get("contentUrl") == big_uri]  # a hint beside the sha
    assert big["@id"] == f"#sha256-{big['sha256']}"
    assert Path(unquote(urlsplit(big_uri).path)).is_file()
    # what ran on Kubernetes names the image it ran, with the digest the cluster reported
    image = g[ids(g["#try/make/1"]["containerImage"])[0]]
    assert image["sha256"] == "b" * 64 and image["registry"] == "ghcr.io"
    # times normalised to UTC with millisecond precision
    assert g["#try/summarise/1"]["startTime"] == "2026-01-01T00:00:11.000+00:00"
    assert g["#run"]["endTime"] == "2026-01-01T00:01:00.500+00:00"
    # a try that never ran gets no action
    assert "#try/report/1" not in g and "#control/report" not in g
    usage = {g[i]["name"]: g[i] for i in ids(g["#try/summarise/1"]["resourceUsage"])}
    assert usage["maxRssKilobytes"]["unitCode"].endswith("KibiBYTE")
    assert "unitCode" not in usage["gpuSeconds"]
    report = g["validation/summary/gx.json"]
    assert ids(report["about"]) == ["workspace/summary.csv"]
    assert "failed" in report["name"]
    stac = g[(tmp_path / "item.json").as_uri()]
    assert ids(stac["about"]) == ["workspace/data%20dir/r%C3%A9%23sult%201.txt"]
    assert not (build.path / "stac").exists()
    assert g["#mlflow/abc123"]["about"] == {"@id": "#try/make/1"}
    assert g["./"]["author"] == {"@id": "https://orcid.org/0000-0002-1825-0097"}


@pytest.mark.parametrize(
    ("ref", "digest", "expected"),
    [
        ("python:3.11-slim", None, ("docker.io", "library/python", "3.11-slim", None)),
        ("ubuntu", None, ("docker.io", "library/ubuntu", "latest", None)),
        ("quay.io/org/tool:v1", None, ("quay.io", "org/tool", "v1", None)),
        ("localhost:5000/x/y", None, ("localhost:5000", "x/y", "latest", None)),
        ("org/tool@sha256:" + "c" * 64, None, ("docker.io", "org/tool", None, "c" * 64)),
        ("org/tool:2", "sha256:" + "d" * 64, ("docker.io", "org/tool", "2", "d" * 64)),
        ("org/tool:2", "not-a-digest", ("docker.io", "org/tool", "2", None)),
    ],
)
def test_parse_image(ref: str, digest: str | None, expected: tuple[Any, ...]) -> None:
    img = parse_image(ref, digest)
    assert (img.registry, img.name, img.tag, img.sha256) == expected
