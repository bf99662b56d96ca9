"""Comparing a rerun with the original it reruns: each output graded in a reviewer's words, the
environment and programs of each step compared, the first divergent step and its likely cause —
one :class:`~twinprov.provenance.record.Verdict`."""

from __future__ import annotations

__all__ = ["EXPLAIN_ENV", "compare_run", "explain_changes", "grade_numeric"]

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinprov.app.rerun import EXPLAIN_ENV, RecordedOutput, RecordedRun, _explaining
from twinprov.provenance.env_facts import fact_changes
from twinprov.provenance.record import OutputComparison, StepChange, Verdict
from twinprov.provenance.spec import WorkflowSpec

_NETCDF = ("application/x-netcdf", "application/netcdf")
_TABLES = ("text/csv", "application/vnd.apache.parquet", "application/x-parquet")


@dataclass
class _Tally:
    """Differences of the numeric cells compared so far."""

    cells: int = 0
    differing: int = 0
    outside: int = 0
    """Cells outside the tolerance (or simply different, without one)."""
    max_abs: float = 0.0
    max_rel: float = 0.0

    def add(self, x: Any, y: Any, rtol: float | None, atol: float | None) -> None:
        import numpy as np

        a = np.asarray(x)
        b = np.asarray(y)
        self.cells += int(a.size)
        if a.dtype.kind in "iufb" and b.dtype.kind in "iufb":
            a, b = a.astype("float64"), b.astype("float64")
            both_nan = np.isnan(a) & np.isnan(b)
            diff = np.where(both_nan, 0.0, np.abs(a - b))
            diff = np.where(np.isnan(diff), np.inf, diff)  # NaN on one side only
            differs = diff > 0
            self.differing += int(differs.sum())
            if rtol is not None and atol is not None:
                self.outside += int((diff > atol + rtol * np.abs(b)).sum())
            else:
                self.outside += int(differs.sum())
            if differs.any():
                self.max_abs = max(self.max_abs, float(diff.max()))
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.where(differs, diff / np.abs(a), 0.0)
                self.max_rel = max(self.max_rel, float(np.nanmax(rel)))
        else:
            n = int((a != b).sum()) if a.shape == b.shape else int(a.size)
            self.differing += n
            self.outside += n

    def summary(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "differing_cells": self.differing,
            "share_differing": round(self.differing / self.cells, 6) if self.cells else 0.0,
            "max_abs_diff": self.max_abs,
            "max_rel_diff": self.max_rel,
        }


def _structure(names_a: Sequence[str], names_b: Sequence[str], what: str) -> str | None:
    only_a = sorted(set(names_a) - set(names_b))
    only_b = sorted(set(names_b) - set(names_a))
    parts = []
    if only_a:
        parts.append(f"{what} only in the original: {', '.join(only_a)}")
    if only_b:
        parts.append(f"{what} only in the rerun: {', '.join(only_b)}")
    return "; ".join(parts) or None


def grade_numeric(
    a: Path, b: Path, media_type: str, rtol: float | None = None, atol: float | None = None
) -> tuple[str, dict[str, Any]] | None:
    """Grade two NetCDF/CSV/Parquet files whose bytes differ: ``(grade, summary)`` with grade
    ``structure_differs``, ``within_tolerance`` (only with a tolerance), ``values_differ`` or
    ``values_equal`` (same values, other bytes); ``None`` if the format is not one of these."""
    tally = _Tally()
    if media_type in _NETCDF:
        import xarray as xr

        with xr.open_dataset(a) as da, xr.open_dataset(b) as db:
            detail = _structure(
                [str(n) for n in da.data_vars], [str(n) for n in db.data_vars], "variables"
            )
            if detail:
                return "structure_differs", {"detail": detail}
            for name in da.data_vars:
                x, y = da[name], db[name]
                if x.dims != y.dims or x.shape != y.shape:
                    return "structure_differs", {
                        "detail": f"{name}: dims {x.dims}{x.shape} → {y.dims}{y.shape}"
                    }
            for name in da.coords:
                if name in db.coords and da[name].shape == db[name].shape:
                    tally.add(da[name].values, db[name].values, rtol, atol)
            for name in da.data_vars:
                tally.add(da[name].values, db[name].values, rtol, atol)
    elif media_type in _TABLES:
        import pandas as pd

        read = pd.read_csv if media_type == "text/csv" else pd.read_parquet
        x, y = read(a), read(b)
        detail = _structure(list(map(str, x.columns)), list(map(str, y.columns)), "columns")
        if detail is None and list(x.columns) != list(y.columns):
            detail = "columns in another order"
        if detail is None and x.shape != y.shape:
            detail = f"{x.shape[0]} rows → {y.shape[0]} rows"
        if detail:
            return "structure_differs", {"detail": detail}
        for col in x.columns:
            tally.add(x[col].to_numpy(), y[col].to_numpy(), rtol, atol)
    else:
        return None
    summary = tally.summary()
    if tally.differing == 0:
        return "values_equal", summary
    if rtol is not None and tally.outside == 0:
        return "within_tolerance", summary
    return "values_differ", summary


def _numeric_equal(a: Path, b: Path, media_type: str, rtol: float, atol: float) -> bool | None:
    """Same structure and values within tolerance; ``None`` if the type is not supported."""
    graded = grade_numeric(a, b, media_type, rtol, atol)
    return None if graded is None else graded[0] in ("within_tolerance", "values_equal")


def _compare_output(
    key: tuple[str, str],
    orig: RecordedOutput | None,
    new: tuple[str, Path | None] | None,
    tol: Any,
    explain: bool,
) -> OutputComparison:
    step, name = key
    if orig is None:
        sha = new[0] if new else None
        return OutputComparison(step, name, "new", None, sha, "not in the original run", "new")
    if new is None:
        return OutputComparison(
            step, name, "missing", orig.sha256, None, "the rerun did not produce it", "missing"
        )
    if new[0] == orig.sha256:
        return OutputComparison(
            step, name, "identical", orig.sha256, new[0], "identical bytes", "identical"
        )
    readable = orig.path is not None and new[1] is not None
    rule = (
        "identical bytes" if tol is None else f"equal within rtol={tol.rtol:g}, atol={tol.atol:g}"
    )
    graded = None
    if readable and (tol is not None or explain):
        assert orig.path is not None and new[1] is not None
        try:
            graded = grade_numeric(
                orig.path,
                new[1],
                orig.media_type,
                tol.rtol if tol is not None else None,
                tol.atol if tol is not None else None,
            )
        except Exception as e:  # an unreadable file: the bytes differ, nothing more is known
            return OutputComparison(
                step,
                name,
                "differs",
                orig.sha256,
                new[0],
                f"{rule} (cannot read: {e})",
                "bytes_differ",
            )
    if graded is None:
        if tol is not None:
            why = (
                f"no numeric comparison for {orig.media_type}"
                if readable
                else f"{rule} declared, but the original bytes are not readable here"
            )
            rule = why if readable else f"identical bytes ({why})"
        return OutputComparison(step, name, "differs", orig.sha256, new[0], rule, "bytes_differ")
    grade, summary = graded
    if grade == "within_tolerance" or (grade == "values_equal" and tol is not None):
        return OutputComparison(
            step, name, "equal_within_tolerance", orig.sha256, new[0], rule, grade, summary
        )
    return OutputComparison(
        step,
        name,
        "differs",
        orig.sha256,
        new[0],
        f"not {rule}" if tol is not None else rule,
        grade,
        summary,
    )


def explain_changes(
    order: Sequence[str],
    original: Mapping[str, Mapping[str, Any]],
    rerun: Mapping[str, Mapping[str, Any]],
    *,
    matched_inputs: Mapping[str, bool] | None = None,
    diverged: Sequence[str] = (),
) -> tuple[list[StepChange], str | None]:
    """Every step (in ``order``) whose recorded environment or program changed, and the likely
    cause of the first divergence: the first of them whose inputs matched and whose outputs
    differ."""
    changes: list[StepChange] = []
    cause = None
    for step in order:
        if step not in original or step not in rerun:
            continue
        found = fact_changes(original[step], rerun[step])
        if not found:
            continue
        matched = (matched_inputs or {}).get(step, True)
        change = StepChange(step, tuple(found), matched, step in diverged)
        changes.append(change)
        if cause is None and matched and change.diverged:
            cause = step
    return changes, cause


def _changed_inputs(
    original: RecordedRun,
    spec: WorkflowSpec | None,
    rerun_inputs: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """``step.input`` of every workflow input (not made by a step of the run) whose bytes the
    rerun found changed: a spec's inputs from params; a hand-written DAG's inlets that no task
    of the original run wrote."""
    if spec is not None:
        declared = [
            (s.id, i.name) for s in spec.steps for i in s.inputs if i.from_.startswith("params.")
        ]
    else:
        made = {name for _step, name in original.outputs}
        declared = [
            (step, name)
            for step, names in sorted(original.step_inputs.items())
            for name in sorted(names)
            if name not in made
        ]
    return [
        f"{step}.{name}"
        for step, name in declared
        if name in original.step_inputs.get(step, {})
        and name in rerun_inputs.get(step, {})
        and original.step_inputs[step][name] != rerun_inputs[step][name]
    ]


def compare_run(
    original: RecordedRun,
    spec: WorkflowSpec | None,
    rerun_outputs: Mapping[tuple[str, str], tuple[str, Path | None]],
    rerun_inputs: Mapping[str, Mapping[str, str]],
    *,
    rerun_state: str,
    notes: Sequence[str] = (),
    rerun_facts: Mapping[str, Mapping[str, Any]] | None = None,
    task_order: Sequence[str] | None = None,
) -> Verdict:
    """Compare every output of a rerun with the original's and name the first divergence.

    ``spec``: the workflow spec (tolerances, step order, inputs from params), or ``None`` for a
    hand-written DAG, whose ``task_order`` (upstream first) is then given, and whose workflow
    inputs are the inlets no task of the original run wrote.
    ``rerun_outputs``: (step, output) → (sha256, path); ``rerun_inputs``: step → input sha256s;
    ``rerun_facts``: step → the comparable environment facts of the rerun's try
    (:func:`twinprov.provenance.env_facts.comparable_facts`). Differing outputs are graded
    (NetCDF/CSV/Parquet: same structure or not, numeric summary) and the steps' environment
    differences listed, unless :data:`EXPLAIN_ENV` is ``off``.
    """
    explain = _explaining()
    tolerances = (
        {}
        if spec is None
        else {
            (s.id, o.name): o.compare
            for s in spec.steps
            for o in s.outputs
            if o.compare is not None
        }
    )
    comparisons: list[OutputComparison] = []
    differing_steps: set[str] = set()
    for key in sorted(set(original.outputs) | set(rerun_outputs)):
        c = _compare_output(
            key, original.outputs.get(key), rerun_outputs.get(key), tolerances.get(key), explain
        )
        comparisons.append(c)
        if not c.same:
            differing_steps.add(key[0])
    if spec is not None:
        order = [s.id for s in spec.topological_order()]
    else:
        known = list(task_order or ())
        rest = {k[0] for k in (*original.outputs, *rerun_outputs)} | set(rerun_inputs)
        order = [*known, *sorted(rest - set(known))]
    matched = {
        s: dict(rerun_inputs.get(s, {})) == dict(original.step_inputs.get(s, {})) for s in order
    }
    first = next((s for s in order if s in differing_steps and matched[s]), None)
    changed_inputs = _changed_inputs(original, spec, rerun_inputs)
    if changed_inputs:
        status = "inputs_changed"
        notes = (*notes, "inputs changed since the original run: " + ", ".join(changed_inputs))
    elif rerun_state != "success":
        status = "failed"
    elif differing_steps:
        status = "differs"
    else:
        status = "reproduced"
    step_changes: list[StepChange] = []
    cause = None
    if explain and rerun_facts is not None:
        if original.facts is None:
            notes = (
                *notes,
                "the original's crate records no environment facts: what changed is unknown",
            )
        else:
            step_changes, cause = explain_changes(
                order,
                original.facts,
                rerun_facts,
                matched_inputs=matched,
                diverged=sorted(differing_steps),
            )
            if first is not None and cause is None:
                notes = (
                    *notes,
                    f"the first divergent step {first} ran with the same recorded environment "
                    "and programs: non-determinism, or a change twinprov does not record",
                )
    return Verdict(
        status=status,
        original_run=original.run_iri,
        original_crate=str(original.crate),
        outputs=tuple(comparisons),
        first_divergent_step=first,
        notes=tuple(notes),
        changes=tuple(step_changes),
        likely_cause=cause,
    )
