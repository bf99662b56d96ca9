"""Workflow spec → Airflow DAG. One DAG per spec file in a folder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param

from twinprov.dags.operators import LocalStepOperator, PublishOperator, ValidateOutputOperator
from twinprov.dags.outputs import output_asset
from twinprov.provenance.cwl_overlay import belongs_to_cwl
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.spec import PUBLISH_TASK_ID, RERUN_PARAM, WorkflowSpec, load_spec

DAG_FILE = Path(__file__).with_name("twinprov_workflows.py")
WORKFLOWS_DIR = Path(__file__).with_name("workflows")


def _params(spec: WorkflowSpec, rerun_default: str | None = None) -> dict[str, Param]:
    out = {}
    for name, p in spec.params.items():
        schema: dict[str, Any] = {"type": p.type}
        # `is not None`, not truthiness: `minimum: 0` is a constraint too
        for key in ("enum", "minimum", "maximum", "title"):
            value = getattr(p, key)
            if value is not None:
                schema[key] = value
        if p.description:
            schema["description"] = p.description
        out[name] = Param(p.default, **schema)
    # nullable: Airflow's trigger form marks a field required unless its schema admits null,
    # and keeps the Trigger button disabled while a required field is empty
    out[RERUN_PARAM] = Param(
        rerun_default,
        type=["null", "string"],
        title="Rerun of",
        description=(
            "Leave empty for a normal run. To check that an earlier run reproduces, name it "
            "(DAG_ID/RUN_ID, a run id, or 'latest'): the run then uses that run's parameter "
            "values and compares every output with it."
        ),
    )
    return out


def _doc(spec: WorkflowSpec, spec_path: Path) -> str:
    steps = "\n".join(f"- `{s.id}`: {s.description or ' '.join(s.command)}" for s in spec.steps)
    return (
        f"## {spec.name} {spec.version}\n\n{spec.description}\n\n"
        f"Spec: `{spec_path}`  \nLicense: {spec.license or 'unspecified'}\n\n"
        f"### Steps\n{steps}\n\nProvenance is published by `{PUBLISH_TASK_ID}`."
    )


def build_dag(spec_path: Path, backend: str | None = None, *, reproduce: bool = False) -> DAG:
    """The Airflow DAG of one workflow spec; :class:`SpecError` if the spec is invalid.

    ``backend`` (local, kubernetes, interlink) overrides every step's target. ``reproduce``
    builds the spec's scheduled-rerun DAG instead (``<name>__reproduce``): it re-runs the
    latest successful run on ``reproducibility.schedule`` and fails unless it reproduced.
    """
    spec_path = Path(spec_path).resolve()
    spec = load_spec(spec_path)
    if backend is not None:
        spec = spec.with_target(backend)
    if reproduce and spec.reproducibility is None:
        raise TwinprovError(f"{spec_path}: no 'reproducibility' block, so no rerun DAG")
    dag = DAG(
        dag_id=f"{spec.name}__reproduce" if reproduce else spec.name,
        description=(
            f"Scheduled reproducibility check of {spec.name}"
            if reproduce
            else (spec.description.strip().splitlines() or [""])[0][:200]
        ),
        schedule=spec.reproducibility.schedule
        if reproduce and spec.reproducibility
        else spec.schedule,
        start_date=datetime(2024, 1, 1, tzinfo=UTC),
        catchup=False,
        params=_params(spec, "latest" if reproduce else None),
        tags=["twinprov", "reproducibility"] if reproduce else ["twinprov"],
        doc_md=_doc(spec, spec_path),
        default_args={
            "retries": spec.defaults.retries,
            "retry_delay": timedelta(seconds=spec.defaults.retry_delay_seconds),
        },
    )
    dag.fileloc = str(DAG_FILE)
    tasks: dict[str, Any] = {}
    checks: dict[tuple[str, str], ValidateOutputOperator] = {}
    with dag:
        for step in spec.topological_order():
            extra: dict[str, Any] = {} if step.retries is None else {"retries": step.retries}
            if step.description:
                extra["doc_md"] = step.description
            target = spec.target_of(step)
            if not reproduce:  # outputs without a check are vouched for by their step
                announced = [o.name for o in step.outputs if o.validation is None]
                extra["outlets"] = [output_asset(spec.name, step.id, n) for n in announced]
            if target == "local":
                op = LocalStepOperator(
                    task_id=step.id, spec_path=str(spec_path), step_id=step.id, **extra
                )
            else:
                from twinprov.dags.pod_operator import kube_step_operator

                op = kube_step_operator(
                    spec, step, spec_path=str(spec_path), target=target, task_id=step.id, **extra
                )
            for up in spec.upstream_of(step):
                tasks[up] >> op
            # a consumer of a checked output waits for its validation
            for inp in step.inputs:
                src, _, name = inp.from_.partition(".")
                if (src, name) in checks:
                    checks[(src, name)] >> op
            tasks[step.id] = op
            for o in step.outputs:
                if o.validation is not None:
                    check = ValidateOutputOperator(
                        task_id=f"validate_{step.id}_{o.name}",
                        spec_path=str(spec_path),
                        step_id=step.id,
                        output_name=o.name,
                        doc_md=f"Great Expectations check of `{o.name}` "
                        f"(on failure: {o.validation.on_failure}).",
                        outlets=[] if reproduce else [output_asset(spec.name, step.id, o.name)],
                    )
                    op >> check
                    checks[(step.id, o.name)] = check
        publish = PublishOperator(
            task_id=PUBLISH_TASK_ID,
            trigger_rule="all_done",
            retries=0 if reproduce else 2,
            workflow=spec.name,
            fail_unless_reproduced=reproduce,
        )
        # a teardown runs whatever happened upstream and does not hide a failed step from the
        # DAG run's state; the rerun DAG's verdict must fail its run when it did not reproduce
        publish.as_teardown(on_failure_fail_dagrun=reproduce)
        [*tasks.values(), *checks.values()] >> publish
    return dag


class InvalidWorkflowSpecs(DAG):
    """Stand-in that makes Airflow list every broken spec as an import error of the DAG file,
    while the valid specs of the same folder still load (Airflow bags each DAG separately)."""

    def validate(self) -> None:  # called by Airflow's DagBag before bagging
        raise TwinprovError(str(self.description))


def workflow_dags(folder: Path = WORKFLOWS_DIR) -> dict[str, DAG]:
    """Every spec in ``folder`` as a DAG, keyed by dag_id."""
    dags: dict[str, DAG] = {}
    errors: list[str] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        if belongs_to_cwl(path):
            continue
        try:
            dag = build_dag(path)
        except TwinprovError as e:
            errors.append(str(e))
            continue
        if dag.dag_id in dags:
            errors.append(f"{path}: workflow name '{dag.dag_id}' is used by another spec")
            continue
        dags[dag.dag_id] = dag
        if load_spec(path).reproducibility is not None:
            rerun = build_dag(path, reproduce=True)
            dags[rerun.dag_id] = rerun
    if errors:
        dags["twinprov_invalid_specs"] = InvalidWorkflowSpecs(
            dag_id="twinprov_invalid_specs",
            description=" | ".join(errors),
            schedule=None,
        )
    return dags
