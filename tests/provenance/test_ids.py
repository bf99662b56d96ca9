"""Crate fragment identifiers: what the crate builder writes, a rerun reads back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from twinprov.provenance.ids import CrateIds

names = st.text(min_size=1, max_size=30)


@given(names, st.integers(min_value=-1, max_value=500), st.integers(min_value=0, max_value=99))
def test_task_try_ids_round_trip(task: str, map_index: int, try_number: int) -> None:
    fragment = CrateIds.task_try(task, map_index, try_number)
    assert CrateIds.parse_task_try(fragment) == (task, map_index, try_number)


@given(names, st.sampled_from(["in", "out"]), names)
def test_tool_parameter_names_round_trip(step: str, kind: str, name: str) -> None:
    fragment = CrateIds.tool_param(step, kind, name)
    assert CrateIds.tool_param_name(fragment, step, kind) == name
    other = "out" if kind == "in" else "in"
    assert CrateIds.tool_param_name(fragment, step, other) is None


def test_other_fragments_are_not_tries() -> None:
    for fragment in ("#tool/a", "#try/a", "#try/a/b", "#try/a/1/2/3", "#step/x"):
        assert CrateIds.parse_task_try(fragment) is None, fragment
