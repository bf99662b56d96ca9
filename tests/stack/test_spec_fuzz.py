"""Spec fuzzing: Hypothesis-generated workflow specs (near-valid mappings, wrong types, unknown
fields, cycles, bad paths, random YAML and bytes) are dropped into the workflows folder and the
DAG file is parsed the way the DAG processor parses it (Airflow's ``DagBag`` on
``dags/twinprov_workflows.py``). It never crashes, a valid spec becomes its DAG, and a rejected one
is one clear message: a twinprov error naming the spec file, no traceback."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from twinprov.provenance.errors import SpecError
from twinprov.provenance.spec import load_spec

DAG_FILE = REPO / "dags" / "twinprov_workflows.py"
_counter = itertools.count()

ident = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
weird = st.text(max_size=12)
scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), weird
)
anything = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(weird, inner, max_size=3),
    max_leaves=6,
)
path = st.one_of(
    st.sampled_from(["out.txt", "a/b.csv", "../escape.txt", "/etc/passwd", "~/x", "", " x"]),
    weird,
)
output = st.fixed_dictionaries(
    {"name": ident, "path": path},
    optional={"media_type": st.sampled_from(["text/plain", "application/x-netcdf"])},
)
step = st.fixed_dictionaries(
    {"id": st.one_of(ident, weird), "command": st.one_of(st.lists(weird, max_size=3), anything)},
    optional={
        "args": st.lists(
            st.one_of(weird, st.sampled_from(["${params.seed}", "${inputs.x}", "${nope}"])),
            max_size=3,
        ),
        "needs": st.lists(ident, max_size=2),
        "inputs": st.lists(
            st.fixed_dictionaries(
                {"name": ident, "from": st.one_of(ident.map(lambda s: f"{s}.out"), weird)}
            ),
            max_size=2,
        ),
        "outputs": st.lists(output, max_size=2),
        "env": st.dictionaries(st.sampled_from(["A", "DB_PASSWORD", "TOKEN", "x y"]), weird),
        "retries": st.integers(-3, 30),
        "target": st.sampled_from(["local", "kubernetes", "interlink", "moon"]),
        "image": st.one_of(st.none(), weird, st.just("python:3.11-slim")),
        "mlflow": st.one_of(st.booleans(), weird),
        "unknown_field": anything,
    },
)
param = st.fixed_dictionaries(
    {"type": st.sampled_from(["string", "integer", "number", "boolean", "date"])},
    optional={
        "default": scalar,
        "enum": st.lists(scalar, max_size=3),
        "minimum": scalar,
        "maximum": scalar,
    },
)
spec_mapping = st.fixed_dictionaries(
    {"name": st.one_of(ident, weird), "steps": st.one_of(st.lists(step, max_size=4), anything)},
    optional={
        "description": weird,
        "version": scalar,
        "params": st.dictionaries(ident, param, max_size=2),
        "defaults": st.fixed_dictionaries(
            {},
            optional={
                "retries": st.integers(-2, 30),
                "retry_delay_seconds": st.one_of(
                    st.integers(-5, 10**6), st.floats(-1, 1e6, allow_nan=False)
                ),
                "target": st.sampled_from(["local", "kubernetes", "nowhere"]),
            },
        ),
        # free-text schedules are left out here: see test_bad_schedule_is_one_clear_message
        "schedule": st.sampled_from([None, "@daily", "0 6 * * *", "@once"]),
        "authors": st.lists(st.fixed_dictionaries({"name": weird}), max_size=2),
        "extra": anything,
    },
)


@st.composite
def valid_spec(draw: st.DrawFn) -> dict[str, object]:
    """A spec that should load: chained steps, typed params with defaults in range."""
    n = draw(st.integers(1, 4))
    params: dict[str, object] = {}
    for name in draw(st.lists(ident, max_size=3, unique=True)):
        kind = draw(st.sampled_from(["string", "integer", "number", "boolean"]))
        default = {"string": "x", "integer": 3, "number": 0.5, "boolean": True}[kind]
        params[name] = {"type": kind, "default": default}
    steps = []
    for i in range(n):
        step: dict[str, object] = {
            "id": f"s{i}",
            "command": ["python", "-c", draw(st.sampled_from(["1", "print(2)"]))],
            "outputs": [{"name": "out", "path": f"d{i}/o{i}.txt", "media_type": "text/plain"}],
        }
        if i and draw(st.booleans()):
            step["inputs"] = [{"name": "prev", "from": f"s{draw(st.integers(0, i - 1))}.out"}]
        if params and draw(st.booleans()):
            step["args"] = [f"${{params.{next(iter(params))}}}"]
        if draw(st.booleans()):
            step["retries"] = draw(st.integers(0, 3))
        steps.append(step)
    spec: dict[str, object] = {"name": draw(ident), "params": params, "steps": steps}
    if draw(st.booleans()):
        spec["schedule"] = draw(st.sampled_from([None, "@daily", "0 6 * * *"]))
    return spec


@st.composite
def mutated_spec(draw: st.DrawFn) -> dict[str, object]:
    """A valid spec with one part broken: a field replaced by anything, a cycle, a bad path."""
    spec = draw(valid_spec())
    steps = spec["steps"]
    assert isinstance(steps, list)
    how = draw(st.sampled_from(["field", "step-field", "cycle", "path", "dup", "drop"]))
    if how == "field":
        spec[draw(st.sampled_from(["name", "params", "steps", "defaults", "extra"]))] = draw(
            anything
        )
    elif how == "step-field":
        steps[draw(st.integers(0, len(steps) - 1))][
            draw(st.sampled_from(["id", "command", "args", "inputs", "outputs", "needs", "env"]))
        ] = draw(anything)
    elif how == "cycle":
        steps[0]["needs"] = [steps[-1]["id"]]
        if len(steps) == 1:
            steps[0]["needs"] = ["s0"]
        else:
            steps[-1]["needs"] = [steps[0]["id"]]
    elif how == "path":
        steps[0]["outputs"] = [{"name": "out", "path": draw(path)}]
    elif how == "dup":
        steps.append(dict(steps[0]))
    else:
        steps[0].pop(draw(st.sampled_from(["id", "command"])))
    return spec


def _dump(d: object) -> str:
    return yaml.safe_dump(d, allow_unicode=True)


document = st.one_of(
    valid_spec().map(_dump),
    mutated_spec().map(_dump),
    spec_mapping.map(_dump),
    anything.map(_dump),
    st.text(max_size=200),
    st.sampled_from(
        ["name: [unclosed", "steps: {a: 1", "\t- tab", "--- !!python/object:os.system"]
    ),
)


def _bag(folder: Path, text: str) -> tuple[Path, dict[str, object], dict[str, str]]:
    for old in folder.glob("fuzz*.yaml"):
        old.unlink()
    spec = folder / f"fuzz{next(_counter)}.yaml"
    spec.write_text(text, encoding="utf-8")
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    return spec, dict(bag.dags), dict(bag.import_errors)


@pytest.fixture
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("fuzz-workflows")
    monkeypatch.setenv("TWINPROV_WORKFLOWS_DIR", str(folder))
    logging.getLogger("airflow.dag_processing").setLevel(logging.CRITICAL)
    return folder


_seen = {"valid": 0, "rejected": 0}


@settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=document)
def test_generated_specs_never_crash_the_dag_processor(fuzz_folder: Path, text: str) -> None:
    spec, dags, errors = _bag(fuzz_folder, text)
    try:
        parsed = load_spec(spec)
    except SpecError as e:
        _seen["rejected"] += 1
        assert len(errors) == 1, errors
        (message,) = errors.values()
        assert message.startswith("TwinprovError: invalid workflow spec "), message
        assert str(spec) in message, message
        assert "Traceback" not in message, message
        assert str(e) in message
        assert set(dags) <= {"twinprov_invalid_specs"}
        return
    _seen["valid"] += 1
    assert errors == {}, errors
    assert parsed.name in dags


def test_fuzz_counts() -> None:
    """Prints what the fuzzing above saw (runs after it in file order)."""
    print(
        f"\nspec fuzzing: {sum(_seen.values())} generated specs parsed by DagBag: "
        f"{_seen['valid']} valid (became their DAG), {_seen['rejected']} rejected "
        "(each one message naming the file), 0 crashes"
    )
    assert sum(_seen.values()) > 0


def test_bad_schedule_is_one_clear_message(fuzz_folder: Path) -> None:
    good = fuzz_folder / "good.yaml"
    good.write_text("name: fine\nsteps:\n  - id: a\n    command: [python, -c, '1']\n")
    spec, dags, errors = _bag(
        fuzz_folder, "name: bad\nschedule: not a cron\nsteps:\n  - id: a\n    command: [x]\n"
    )
    assert "fine" in dags, "a broken spec must not hide the other workflows"
    (message,) = errors.values()
    assert str(spec) in message and "schedule" in message, message
