"""Workflow spec checks: one test per refusal, each naming the field path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.conftest import DEMO_SPEC
from twinprov.provenance.errors import SpecError, WorkspaceError
from twinprov.provenance.spec import load_spec, parse_spec, spec_json_schema
from twinprov.provenance.workspace import safe_path

BASE = {
    "name": "wf",
    "steps": [
        {
            "id": "a",
            "command": ["python", "-c", "pass"],
            "outputs": [{"name": "x", "path": "x.txt", "media_type": "text/plain"}],
        },
        {
            "id": "b",
            "command": ["python", "-c", "pass"],
            "inputs": [{"name": "x", "from": "a.x"}],
        },
    ],
}


def _issues(data: dict) -> list[str]:
    with pytest.raises(SpecError) as exc:
        parse_spec(yaml.safe_dump(data), "wf.yaml")
    return [str(i) for i in exc.value.issues]


def _with(**step_changes: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for idx_key, value in step_changes.items():
        idx, key = idx_key.split("__")
        data["steps"][int(idx[1:])][key] = value
    return data


def test_demo_spec_is_valid() -> None:
    spec = load_spec(DEMO_SPEC)
    assert [s.id for s in spec.topological_order()] == [
        "generate_precipitation",
        "compute_spi",
        "forecast_spi",
        "classify_hazard",
    ]
    assert spec.params["fault"].enum == ["none", "nan", "nondeterministic"]


def test_base_spec_is_valid() -> None:
    spec = parse_spec(yaml.safe_dump(BASE))
    assert spec.upstream_of(spec.step("b")) == ["a"]


def test_unknown_field_is_refused_with_its_path() -> None:
    data = _with(s1__colour="blue")
    data["timeout"] = 3
    issues = _issues(data)
    assert "steps[1].colour: unknown field" in issues
    assert "timeout: unknown field" in issues


def test_duplicate_step_ids_are_refused() -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["steps"][1]["id"] = "a"
    assert any("steps[1].id: duplicate step id 'a'" in i for i in _issues(data))


def test_cycle_in_needs_is_refused() -> None:
    data = _with(s0__needs=["b"])
    issues = _issues(data)
    assert any(i.startswith("steps: cycle in needs:") and "a" in i and "b" in i for i in issues)


def test_input_no_step_provides_is_refused() -> None:
    issues = _issues(_with(s1__inputs=[{"name": "x", "from": "a.nothere"}]))
    assert "steps[1].inputs[0].from: step 'a' has no output 'nothere'" in issues
    issues = _issues(_with(s1__inputs=[{"name": "x", "from": "ghost.x"}]))
    assert "steps[1].inputs[0].from: no step 'ghost' provides 'x'" in issues


def test_input_no_param_provides_is_refused() -> None:
    issues = _issues(_with(s1__inputs=[{"name": "x", "from": "params.data"}]))
    assert "steps[1].inputs[0].from: no param 'data' provides 'x'" in issues


@pytest.mark.parametrize(
    ("path", "why"),
    [("../x.txt", "'..'"), ("/etc/passwd", "absolute"), ("a/../../x", "'..'"), ("~/x", "absolute")],
)
def test_output_path_escaping_workspace_is_refused(path: str, why: str) -> None:
    issues = _issues(_with(s0__outputs=[{"name": "x", "path": path, "media_type": "text/plain"}]))
    assert any(i.startswith("steps[0].outputs[0].path:") and why in i for i in issues)


def test_symlink_pointing_out_of_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "work"
    ws.mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", ws / "link")
    with pytest.raises(WorkspaceError, match="outside the run workspace"):
        safe_path(ws, "link/x.txt")
    os.symlink(ws / "inside.txt", ws / "ok")
    assert safe_path(ws, "ok") == ws / "ok"


def test_every_error_is_reported_not_just_the_first() -> None:
    data = _with(s0__needs=["ghost"], s1__args=["${params.nope}"])
    data["steps"][0]["outputs"][0]["path"] = "/abs"
    issues = _issues(data)
    assert "steps[0].needs[0]: no step 'ghost'" in issues
    assert "steps[1].args[0]: '${params.nope}': no param 'nope'" in issues
    assert any(i.startswith("steps[0].outputs[0].path") for i in issues)


def test_param_default_must_satisfy_its_declaration() -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["params"] = {"n": {"type": "integer", "default": 50, "maximum": 10}}
    assert "params.n.default: 50 is above maximum 10.0" in _issues(data)


def test_reserved_task_id_is_refused() -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["steps"][0]["id"] = "publish_provenance"
    data["steps"][1]["inputs"] = []
    assert any("reserved" in i for i in _issues(data))


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(SpecError, match=r"line 2: not valid YAML: mapping values are not allowed"):
        parse_spec("name: x\nsteps: a: b\n", "bad.yaml")


def test_json_schema_is_generated_from_the_model() -> None:
    schema = spec_json_schema()
    assert "steps" in schema["properties"]
    assert schema["additionalProperties"] is False


def _kube(**step: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["steps"][0].update({"target": "interlink", "image": "ghcr.io/x/drought:1.0", **step})
    return data


def test_image_without_tag_or_digest_is_refused_off_the_laptop() -> None:
    issues = _issues(_kube(image="ghcr.io/x/drought"))
    assert any(
        i.startswith("steps[0].image: image 'ghcr.io/x/drought' has neither") for i in issues
    )
    parse_spec(yaml.safe_dump(_kube(image="ghcr.io/x/drought@sha256:" + "a" * 64)))


def test_interlink_refuses_volumes_it_cannot_serve() -> None:
    vol = {"name": "data", "type": "persistentVolumeClaim", "mount_path": "/d", "source": "c"}
    issues = _issues(_kube(volumes=[vol]))
    assert any(i.startswith("steps[0].volumes[0].type: interLink serves only") for i in issues)


def test_walltime_and_memory_formats() -> None:
    issues = _issues(_kube(hpc={"walltime": "2 hours"}, resources={"memory": "4 GB"}))
    assert any(i.startswith("steps[0].hpc.walltime") for i in issues)
    assert any(i.startswith("steps[0].resources.memory: '4 GB' is not a quantity") for i in issues)
    parse_spec(yaml.safe_dump(_kube(hpc={"walltime": "1-02:00:00"}, resources={"memory": "4Gi"})))


def test_secret_written_inline_in_env_is_refused() -> None:
    issues = _issues(_with(s0__env={"API_TOKEN": "hunter2"}))
    assert any(i.startswith("steps[0].env.API_TOKEN: looks like a secret") for i in issues)


def test_validation_suite_file_must_exist(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["steps"][0]["outputs"][0]["validation"] = {"suite": "suites/x.json", "on_failure": "warn"}
    spec_file = tmp_path / "wf.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError, match=r"validation.suite: suite file .*x.json does not exist"):
        load_spec(spec_file)
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "x.json").write_text('{"name": "x", "expectations": []}')
    load_spec(spec_file)
    data["steps"][0]["outputs"][0]["validation"]["on_failure"] = "ignore"
    assert any("on_failure" in i for i in _issues(data))


def test_backend_override_rechecks_the_spec() -> None:
    spec = parse_spec(yaml.safe_dump(BASE))
    with pytest.raises(SpecError, match=r"steps\[0\].image: a container image is required"):
        spec.with_target("kubernetes")
    demo = load_spec(DEMO_SPEC).with_target("interlink")
    assert {demo.target_of(s) for s in demo.steps} == {"interlink"}


def test_schedule_must_be_a_preset_or_a_cron_line() -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["schedule"] = "every tuesday"
    assert any(i.startswith("schedule: 'every tuesday' is neither a preset") for i in _issues(data))
    for ok in ("@daily", "0 6 * * 1", None):
        data["schedule"] = ok
        parse_spec(yaml.safe_dump(data))


def test_secrets_come_from_the_store_the_target_can_read() -> None:
    conn = {"env": "DB_URL", "connection": "flood_db"}
    var = {"env": "KEY", "variable": "cds_key"}
    kube = {"env": "TOKEN", "secret": "dt-credentials", "key": "token"}
    # local steps: Airflow connections and variables
    spec = parse_spec(yaml.safe_dump(_with(s0__secrets=[conn, {**var}])))
    assert [s.source for s in spec.steps[0].secrets] == ["connection", "variable"]
    issues = _issues(_with(s0__secrets=[kube]))
    assert any("secrets[0]: the local backend cannot read a Kubernetes" in i for i in issues)
    # pods: Kubernetes Secrets only (an Airflow value would be written into the pod spec)
    parse_spec(yaml.safe_dump(_kube(secrets=[kube])))
    issues = _issues(_kube(secrets=[conn]))
    assert any(
        i.startswith("steps[0].secrets[0]: a interlink step cannot take an Airflow connection")
        for i in issues
    )
    # exactly one source
    issues = _issues(_with(s0__secrets=[{**conn, "variable": "x"}]))
    assert any("exactly one of 'secret' + 'key', 'connection', 'variable'" in i for i in issues)
    issues = _issues(_kube(secrets=[{"env": "T", "secret": "s"}]))
    assert any("needs both 'secret' and 'key'" in i for i in issues)
    issues = _issues(_with(s0__secrets=[{**var, "field": "password"}]))
    assert any(i.startswith("steps[0].secrets[0].field: only with 'connection:'") for i in issues)


def test_build_instructions_must_be_a_file_beside_the_spec(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    data = _with(s0__build="Dockerfile", s1__build="../outside/Dockerfile")
    data["steps"][1]["image"] = "python:3.11-slim"
    data["steps"][0]["homepage"] = "not a url"
    spec_file = tmp_path / "wf.yaml"
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as exc:
        load_spec(spec_file)
    assert [i.path for i in exc.value.issues] == ["steps[0].homepage"]
    data["steps"][0].pop("homepage")
    spec_file.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as exc:
        load_spec(spec_file)
    (issue,) = exc.value.issues
    assert issue.path == "steps[1].build" and "outside the spec's folder" in issue.message
    data["steps"][1]["build"] = "Dockerfile"
    spec_file.write_text(yaml.safe_dump(data))
    spec = load_spec(spec_file)
    assert spec.build_of(spec.step("a")) == "Dockerfile"
