"""CWL documents as plain records (Airflow-free): parsing, data flow between steps, hashing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import REPO, run_without_airflow
from twinprov.provenance.cwl_doc import (
    dag_steps,
    describe_values,
    directory_digest,
    document_files,
    job_beside,
    load_cwl,
    load_job,
    step_job,
    subworkflow_job,
    workflow_outputs,
)
from twinprov.provenance.errors import CwlError, CwlUnsupportedError

CATALOG = REPO / "tests" / "data" / "cwl" / "catalog.cwl"


def test_workflow_steps_images_and_inputs() -> None:
    doc = load_cwl(CATALOG)
    assert doc.kind == "Workflow" and doc.dag_id == "cwl_catalog"
    assert [(s.id, s.kind, s.upstream) for s in doc.steps] == [
        ("make", "CommandLineTool", ()),
        ("count", "CommandLineTool", ("make",)),
    ]
    assert doc.step("make").image == "docker.io/library/bash:5.2"
    assert {i.name: i.default for i in doc.inputs} == {"title": "alps", "items": 3}


def test_job_beside_and_sources() -> None:
    job = load_job(job_beside(CATALOG))
    assert job == {"title": "tyrol", "items": 4}
    doc = load_cwl(CATALOG)
    assert step_job(doc, "make", {"title": "x"}, {}) == {"title": "x", "items": 3}
    made = {"make": {"catalog": {"class": "Directory", "location": "file:///d"}}}
    assert step_job(doc, "count", {}, made) == {"dir": made["make"]["catalog"]}
    out = workflow_outputs(doc, {}, {**made, "count": {"lines": 4}})
    assert out == {"catalog": made["make"]["catalog"], "lines": 4}


def test_directory_is_hashed_as_the_manifest_of_its_files(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("bb")
    a, b = (hashlib.sha256(x).hexdigest() for x in (b"a", b"bb"))
    expected = hashlib.sha256(f"{a}  a.txt\n{b}  sub/b.txt".encode()).hexdigest()
    assert directory_digest(d) == (expected, 3, 2)
    recs = describe_values(
        {
            "out": {"class": "Directory", "path": str(d)},
            "files": [{"class": "File", "location": (d / "a.txt").as_uri()}],
        },
        tmp_path,
    )
    assert [(r["name"], r["path"], r["sha256"]) for r in recs] == [
        ("out", "cat", expected),
        ("files[0]", "cat/a.txt", a),
    ]
    # the same bytes under another name are the same entity
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a.txt").write_text("a")
    (tmp_path / "copy" / "sub").mkdir()
    (tmp_path / "copy" / "sub" / "b.txt").write_text("bb")
    assert directory_digest(tmp_path / "copy")[0] == expected


def test_invalid_document_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cwl"
    bad.write_text("cwlVersion: v1.2\nclass: CommandLineTool\ninputs: 3\n")
    with pytest.raises(CwlError, match="bad.cwl"):
        load_cwl(bad)


def test_cwl_modules_import_no_airflow() -> None:
    run_without_airflow(
        "import sys\n"
        "from twinprov.provenance.cwl_doc import load_cwl\n"
        "from twinprov.ro_crates.cwl_crate import cwl_workflow_info\n"
        f"info = cwl_workflow_info({str(CATALOG)!r})\n"
        "assert info.language == 'cwl' and [s.id for s in info.steps] == ['make', 'count']\n"
    )


def test_unsupported_requirement_names_feature_file_and_line(tmp_path: Path) -> None:
    """A requirement CWL v1.2 does not define (here inside an inline step) is refused as
    unsupported, with the file and the line where it is written; a hint would be fine."""
    doc = tmp_path / "wf.cwl"
    doc.write_text(
        "cwlVersion: v1.2\n"
        "class: Workflow\n"
        "inputs: []\n"
        "outputs: []\n"
        "steps:\n"
        "  s:\n"
        "    in: []\n"
        "    out: []\n"
        "    run:\n"
        "      class: CommandLineTool\n"
        "      requirements:\n"
        "        - class: InlineJavascriptRequirement\n"
        "        - class: GpuRequirement\n"
        "      hints:\n"
        "        - class: AnyHintAtAll\n"
        "      baseCommand: 'true'\n"
        "      inputs: []\n"
        "      outputs: []\n"
    )
    with pytest.raises(CwlUnsupportedError) as err:
        load_cwl(doc)
    assert str(err.value).startswith(f"{doc}:13:11: unsupported requirement GpuRequirement")
    assert "AnyHintAtAll" not in str(err.value)


@pytest.mark.parametrize(
    ("where", "group"),
    [("requirements", "requirements"), ("hints", "hints"), (None, None)],
)
def test_where_the_docker_requirement_is(
    tmp_path: Path, where: str | None, group: str | None
) -> None:
    doc = tmp_path / "tool.cwl"
    docker = f"{where}:\n  DockerRequirement: {{dockerPull: 'debian:12'}}\n" if where else ""
    doc.write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\n"
        + docker
        + "baseCommand: 'true'\ninputs: []\noutputs: []\n"
    )
    (step,) = load_cwl(doc).steps
    assert step.docker == group


def test_an_inline_subworkflow_is_read_with_the_files_it_runs(tmp_path: Path) -> None:
    """The crate ships the tool files a document runs: those of an inline subworkflow too."""
    (tmp_path / "echo.cwl").write_text(
        "cwlVersion: v1.2\nclass: CommandLineTool\nbaseCommand: echo\n"
        "inputs: {word: {type: string, inputBinding: {position: 1}}}\n"
        "outputs: {out: stdout}\n"
    )
    (tmp_path / "wf.cwl").write_text(
        """\
cwlVersion: v1.2
class: Workflow
requirements: {SubworkflowFeatureRequirement: {}}
inputs: {word: string}
outputs: {out: {type: File, outputSource: group/out}}
steps:
  group:
    in: {word: word, extra: {default: {class: File, location: data.txt}}}
    out: [out]
    run:
      class: Workflow
      inputs: {word: string, extra: File}
      outputs: {out: {type: File, outputSource: say/out}}
      steps:
        say: {run: echo.cwl, in: {word: word}, out: [out]}
"""
    )
    doc = load_cwl(tmp_path / "wf.cwl")
    assert document_files(doc) == [(tmp_path / "echo.cwl").resolve()]
    steps = dag_steps(doc)
    assert [(d.task_id, d.scope) for d in steps] == [("group", ()), ("group.say", ("group",))]
    assert steps[0].group is not None and steps[0].group.step("say").kind == "CommandLineTool"
    # the group's input object: the port values, a port's default made absolute
    job = subworkflow_job(doc, "group", {"word": "hi"}, {})
    assert job["word"] == "hi"
    assert job["extra"]["location"] == (tmp_path / "data.txt").as_uri()
