"""Spec YAML within limits: an alias bomb and an oversized spec are refused, fast, naming why."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from twinprov.provenance.errors import SpecError
from twinprov.provenance.safe_yaml import MAX_ALIAS_EXPANSION, MAX_SPEC_BYTES
from twinprov.provenance.spec import load_spec, parse_spec

HEAD = """\
name: bomb
steps:
  - id: a
    command: [python, -c, "print(1)"]
    outputs:
      - name: t
        path: t.csv
        media_type: text/csv
        validation:
          expectations:
            - type: expect_column_values_to_be_between
              kwargs:
                column: x
                min_value: 0
                max_value: 10
                meta:
"""


def bomb(levels: int) -> str:
    """``levels`` levels of nine aliases each under ``expectations[].kwargs`` (9**levels)."""
    lines = ['                  l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"                  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return HEAD + "\n".join(lines) + "\n"


def _limit_memory() -> None:  # the unguarded bomb must not take the shared machine down
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_validate_spec_refuses_a_nine_level_alias_bomb_fast(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(bomb(9))
    assert spec.stat().st_size < 1100
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "twinprov.cli", "validate-spec", str(spec)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
            preexec_fn=_limit_memory,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("validate-spec still running after 30 s")
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "MemoryError" not in err and "Traceback" not in err
    # the anchor of the last level (line 24) is named, and the limit
    assert "line 24: YAML aliases would expand the spec" in err, err
    assert str(MAX_ALIAS_EXPANSION) in err


def test_load_spec_refuses_aliases_past_the_limit(tmp_path: Path) -> None:
    spec = tmp_path / "bomb.yaml"
    spec.write_text(bomb(6))  # 9**6 = 531441 values
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    (issue,) = e.value.issues
    assert issue.path == "line 21" and "aliases" in issue.message


def test_dag_parsing_lists_the_bomb_as_an_invalid_spec(tmp_path: Path) -> None:
    from twinprov.dags.factory import workflow_dags

    (tmp_path / "bomb.yaml").write_text(bomb(6))
    dags = workflow_dags(tmp_path)
    assert set(dags) == {"twinprov_invalid_specs"}
    assert "YAML aliases" in str(dags["twinprov_invalid_specs"].description)


def test_a_few_aliases_still_load() -> None:
    shared = "                meta: &shared {a: 1, b: [1, 2]}\n"
    text = HEAD.replace("                meta:\n", shared)
    text += "                again: *shared\n"
    spec = parse_spec(text)
    validation = spec.steps[0].outputs[0].validation
    assert validation is not None
    kwargs = validation.expectations[0]["kwargs"]
    assert kwargs["again"] == kwargs["meta"] == {"a": 1, "b": [1, 2]}


def test_a_recursive_alias_is_refused() -> None:
    text = HEAD + "                  loop: &loop [1, *loop]\n"
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    (issue,) = e.value.issues
    assert issue.path == "line 17" and "recursive" in issue.message


def test_yaml_errors_still_name_their_line() -> None:
    with pytest.raises(SpecError) as e:
        parse_spec("name: x\nsteps: [\n")
    assert "not valid YAML" in str(e.value) and "line" in e.value.issues[0].path


def test_a_spec_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    doc = yaml.safe_load(HEAD.replace("                meta:\n", ""))
    doc["description"] = "x" * (MAX_SPEC_BYTES + 1)
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(doc, width=1 << 30))
    for call in (lambda: load_spec(spec), lambda: parse_spec(spec.read_text(), str(spec))):
        with pytest.raises(SpecError) as e:
            call()
        assert "more than the limit of 1048576 bytes (1 MiB)" in str(e.value)
    # a spec just under the limit loads
    doc["description"] = "x" * (MAX_SPEC_BYTES - 1000)
    spec.write_text(yaml.safe_dump(doc, width=1 << 30))
    assert len(load_spec(spec).description) == MAX_SPEC_BYTES - 1000
