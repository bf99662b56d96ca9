"""CWL document → Airflow DAG: one task per step, workflow inputs as the trigger form's Params.

A ``.cwl`` file in the workflows folder (with an optional ``<stem>.job.yml`` beside it whose
values become the Params' defaults, and an optional ``<stem>.twinprov.yml`` overlay that places
its steps on pods) becomes the DAG ``cwl_<stem>``. A ``Workflow`` gives one
:class:`CwlStepOperator` per step (a scattered step is a split task and one mapped task
instance per element, Airflow's dynamic task mapping; a subworkflow is a task group of its
steps); a ``CommandLineTool`` or ``ExpressionTool`` gives one task. Publication is the same
teardown task as for spec DAGs.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup

from twinprov.dags.cwl_operator import (
    INPUTS_TASK,
    OUTPUTS_TASK,
    SCATTER_SUFFIX,
    CwlGroupOutputsOperator,
    CwlScatterOperator,
    CwlStepOperator,
)
from twinprov.dags.operators import PublishOperator
from twinprov.provenance.cwl_doc import (
    CWL_SCALAR_TYPES,
    CwlDocument,
    job_beside,
    load_cwl,
    load_job,
    subworkflow_of,
)
from twinprov.provenance.cwl_overlay import CwlOverlay, load_overlay
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.spec import PUBLISH_TASK_ID

DAG_FILE = Path(__file__).with_name("twinprov_workflows.py")
DOCUMENT_ENV = "TWINPROV_CWL_DOCUMENT"
"""Set by ``twinprov cwl-runner``: the DAG file then builds only this document's DAG."""

_SCALARS = {**CWL_SCALAR_TYPES, "File": "object", "Directory": "object"}


def param_schema(cwl_type: Any) -> dict[str, Any]:
    """A JSON-schema fragment for a CWL type (always admitting null: CWL inputs with defaults,
    and optional ones, may be left empty in the trigger form)."""
    types = cwl_type if isinstance(cwl_type, list) else [cwl_type]
    out: list[str] = ["null"]
    for t in types:
        if isinstance(t, str):
            t = t.rstrip("?")
            if t.endswith("[]"):
                out.append("array")
            elif t in _SCALARS:
                out.append(_SCALARS[t])
            elif t not in ("null",):
                return {}  # enums, records, Any: not constrained by the form
        elif isinstance(t, dict) and t.get("type") == "array":
            out.append("array")
        else:
            return {}
    return {"type": sorted(set(out))}


def _params(doc: CwlDocument) -> dict[str, Param]:
    defaults = load_job(job_beside(doc.path))
    params: dict[str, Param] = {}
    for i in doc.inputs:
        default = defaults.get(i.name, i.default)
        schema = param_schema(i.type)
        desc = i.doc or f"CWL input of type {i.type}"
        params[i.name] = Param(default, description=desc, **schema)
    return params


def build_cwl_dag(path: str | Path, params: bool = True, backend: str | None = None) -> DAG:
    """The DAG of one CWL document; :class:`SpecError` if it is not valid CWL or its overlay
    (``<stem>.twinprov.yml``) is wrong.

    Each step runs where the overlay places it (``backend``, a run's choice, overrides):
    ``local`` (:class:`CwlStepOperator`) or pods on ``kubernetes``/``interlink``
    (:class:`~twinprov.dags.cwl_pod.CwlPodStepOperator`)."""
    doc = load_cwl(path)
    if backend not in (None, "local", "kubernetes", "interlink"):
        raise TwinprovError(f"unknown backend {backend!r} (local, kubernetes or interlink)")
    overlay = load_overlay(doc.path, [s.id for s in doc.steps])
    dag = DAG(
        dag_id=doc.dag_id,
        description=(doc.label or doc.doc or f"CWL {doc.kind} {doc.path.name}")[:200],
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=UTC),
        catchup=False,
        params=_params(doc) if params else {},
        tags=["twinprov", "cwl"],
        doc_md=f"## CWL {doc.kind} `{doc.path.name}`\n\n{doc.doc}\n\n"
        + "\n".join(f"- `{s.id}`: {s.kind} {s.run}" for s in doc.steps),
    )
    dag.fileloc = str(DAG_FILE)
    cwl_path = str(doc.path) + (("#" + doc.uri.split("#", 1)[1]) if "#" in doc.uri else "")
    with dag:
        tasks: list[Any] = []
        if doc.is_workflow:
            inputs = _inputs_task(cwl_path, ())
            tasks.append(inputs)
            _add_steps(doc, cwl_path, (), inputs, overlay, backend, tasks)
        else:
            _add_steps(doc, cwl_path, (), None, overlay, backend, tasks)
        publish = PublishOperator(
            task_id=PUBLISH_TASK_ID, trigger_rule="all_done", retries=2, workflow=doc.dag_id
        )
        publish.as_teardown()
        tasks >> publish
    return dag


# a step whose upstream was scattered over an empty list (its mapped task skipped) still runs,
# with empty arrays: none_failed rather than all_success
_RULE = "none_failed"


def _inputs_task(cwl_path: str, scope: tuple[str, ...]) -> CwlStepOperator:
    return CwlStepOperator(
        task_id=INPUTS_TASK,
        cwl_path=cwl_path,
        step_id=INPUTS_TASK,
        scope=scope,
        trigger_rule=_RULE,
        doc_md="The workflow's input object as cwltool prepares it (defaults, "
        "secondaryFiles, formats); its files are the run's inputs.",
    )


def _add_steps(
    doc: CwlDocument,
    cwl_path: str,
    scope: tuple[str, ...],
    inputs: BaseOperator | None,
    overlay: CwlOverlay,
    backend: str | None,
    every: list[Any],
) -> None:
    """The tasks of ``doc``'s steps (in the task group ``scope``), after ``inputs``, added to
    ``every``. A subworkflow step that can be shown step by step
    (:func:`~twinprov.provenance.cwl_doc.subworkflow_of`) is a task group: its input object,
    its steps (recursively, on the top-level step's target), its output object. A scattered
    step is a split task and the step's task mapped over its elements, on any target."""
    tasks: dict[str, Any] = {}  # a step's last task (an operator, its mapped task, a group)
    entry: dict[str, Any] = {}  # a step's first task (or group)
    for s in doc.steps:
        # placement is the top-level step's (the overlay names the document's own steps)
        top = (*scope, s.id)[0]
        target = overlay.target_of(top, backend)
        sub = subworkflow_of(doc, s.id)
        common: dict[str, Any] = {"task_id": s.id, "trigger_rule": _RULE}
        if sub is not None:
            with TaskGroup(group_id=s.id, tooltip=f"CWL subworkflow {s.run}") as group:
                inner = _inputs_task(cwl_path, (*scope, s.id))
                every.append(inner)
                before = len(every)
                _add_steps(sub, cwl_path, (*scope, s.id), inner, overlay, backend, every)
                outputs = CwlGroupOutputsOperator(
                    task_id=OUTPUTS_TASK,
                    cwl_path=cwl_path,
                    scope=(*scope, s.id),
                    trigger_rule=_RULE,
                    doc_md=f"The output object of the subworkflow `{s.id}`.",
                )
                [inner, *every[before:]] >> outputs
                every.append(outputs)
            tasks[s.id] = entry[s.id] = group
            continue
        if target == "local":
            run = {"cwl_path": cwl_path, "step_id": s.id, "scope": scope, "doc_md": s.doc or None}
            operator: Any = CwlStepOperator
        else:
            from twinprov.dags.cwl_pod import CwlPodStepOperator, cwl_pod_arguments

            run = cwl_pod_arguments(
                doc,
                s,
                overlay,
                cwl_path=cwl_path,
                target=target,  # type: ignore[arg-type]
                placed_as=top,
                scope=scope,
                doc_md=s.doc or None,
            )
            operator = CwlPodStepOperator
        if s.scatter:
            # one split task, then one mapped task instance per element (a pod each)
            split = CwlScatterOperator(
                task_id=f"{s.id}{SCATTER_SUFFIX}",
                cwl_path=cwl_path,
                step_id=s.id,
                scope=scope,
                trigger_rule=_RULE,
                doc_md=f"Splits the scattered step `{s.id}` into its elements.",
            )
            entry[s.id] = split
            tasks[s.id] = operator.partial(**run, **common).expand(scatter_index=split.output)
            every += [split, tasks[s.id]]
        else:
            tasks[s.id] = entry[s.id] = operator(**run, **common)
            every.append(tasks[s.id])
    for s in doc.steps:
        if inputs is not None:
            inputs >> entry[s.id]
        for up in s.upstream:
            if up in tasks:
                tasks[up] >> entry[s.id]


def cwl_dags(folder: Path) -> dict[str, DAG]:
    """Every ``*.cwl`` of ``folder`` as a DAG (or only ``$TWINPROV_CWL_DOCUMENT`` when set)."""
    only = os.environ.get(DOCUMENT_ENV)
    paths = [Path(only)] if only else sorted(folder.glob("*.cwl"))
    dags: dict[str, DAG] = {}
    errors: list[str] = []
    for p in paths:
        try:
            dag = build_cwl_dag(p)
        except TwinprovError as e:
            errors.append(str(e))
            continue
        dags[dag.dag_id] = dag
    if errors:
        from twinprov.dags.factory import InvalidWorkflowSpecs

        dags["twinprov_invalid_cwl"] = InvalidWorkflowSpecs(
            dag_id="twinprov_invalid_cwl", description=" | ".join(errors), schedule=None
        )
    return dags
