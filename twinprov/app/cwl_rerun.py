"""Reruns of CWL runs: what :mod:`twinprov.app.rerun` and the comparison need from a CWL
document, in the shape they read a workflow spec (steps, their inputs, dependency order).

The crate's copy of the document (snapshotted when the run started) is the recipe; its params
hold CWL values, ``File``/``Directory`` objects as JSON text, decoded here. An input changed
since the original when its ``File``/``Directory`` now hashes (a Directory as the manifest of
its files) to other bytes than the original's first task recorded.
"""

from __future__ import annotations

__all__ = ["cwl_changed_inputs", "cwl_params", "cwl_spec", "is_cwl"]

import graphlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinprov.provenance.cwl_doc import dag_steps, describe_values, load_cwl, step_sources

INPUTS_TASK = "cwl_inputs"
"""The first task of a CWL workflow's DAG (``dags/cwl_operator.py``): its input object."""


def is_cwl(path: Path) -> bool:
    return path.suffix == ".cwl"


@dataclass(frozen=True)
class _Input:
    name: str
    from_: str


@dataclass(frozen=True)
class _Output:
    name: str
    compare: Any = None


@dataclass(frozen=True)
class _Step:
    id: str
    inputs: tuple[_Input, ...]
    upstream: tuple[str, ...]
    outputs: tuple[_Output, ...] = ()


@dataclass(frozen=True)
class CwlSpec:
    """A CWL document as the comparison reads a spec: outputs compare byte for byte."""

    steps: tuple[_Step, ...]

    def topological_order(self) -> list[_Step]:
        by_id = {s.id: s for s in self.steps}
        sorter = graphlib.TopologicalSorter(
            {s.id: [u for u in s.upstream if u in by_id] for s in self.steps}
        )
        return [by_id[i] for i in sorter.static_order()]


def cwl_spec(path: Path) -> CwlSpec:
    """The steps of the document at ``path`` (a workflow's first task ``cwl_inputs`` takes the
    workflow inputs; a step's input port fed by a workflow input reads ``params.<input>``)."""
    doc = load_cwl(path)
    inputs = tuple(_Input(i.name, f"params.{i.name}") for i in doc.inputs)
    if not doc.is_workflow:
        return CwlSpec((_Step(doc.steps[0].id, inputs, ()),))
    names = {i.name for i in doc.inputs}
    steps = [_Step(INPUTS_TASK, inputs, ())]
    for d in dag_steps(doc):  # a task group's steps are group.step, after the group's step
        prefix = "".join(f"{g}." for g in d.scope)
        ports = tuple(
            _Input(
                port,
                f"params.{src}"
                if src in names and not d.scope
                else prefix + (src.replace("/", ".") if "/" in src else f"{INPUTS_TASK}.{src}"),
            )
            for port, src in step_sources(d.doc, d.step.id)
        )
        group = [".".join(d.scope)] if d.scope else []
        upstream = (INPUTS_TASK, *(prefix + u for u in d.step.upstream), *group)
        steps.append(_Step(d.task_id, ports, upstream))
    return CwlSpec(tuple(steps))


def cwl_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """CWL param values as the crate records them (objects and arrays as JSON text), decoded."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, str) and v[:1] in ("{", "["):
            try:
                out[k] = json.loads(v)
                continue
            except ValueError:
                pass  # text that only looks like JSON
        out[k] = v
    return out


def cwl_changed_inputs(
    spec_file: Path, params: Mapping[str, Any], recorded: Mapping[str, Mapping[str, str]]
) -> list[str]:
    """The workflow's File/Directory inputs whose bytes differ now from what the original's
    steps used (``recorded``: step → input port → sha256, as the crate records it)."""
    now = {r["name"]: r for r in describe_values(params)}
    changed: dict[str, str] = {}
    for step in cwl_spec(spec_file).steps:
        for port in step.inputs:
            src, _, name = port.from_.partition(".")
            digest = recorded.get(step.id, {}).get(port.name)
            if src != "params" or digest is None or name in changed:
                continue
            rec = now.get(name)
            if rec is None or not rec.get("exists"):
                where = rec.get("path") if rec else "its value"
                changed[name] = f"{name}: {where} no longer exists"
            elif rec.get("sha256") != digest:
                changed[name] = (
                    f"{name}: {rec.get('abs_path')} has other bytes than the original used"
                )
    return [changed[k] for k in sorted(changed)]
