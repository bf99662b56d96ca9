"""Operators of generated DAGs: a step on the local backend, and the final publication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from twinprov.app.publish import publish_run
from twinprov.dags.outputs import announce
from twinprov.provenance import stepwrap
from twinprov.provenance.config import Settings
from twinprov.provenance.env_facts import step_programs, thread_settings
from twinprov.provenance.environment import python_environment
from twinprov.provenance.errors import TwinprovError
from twinprov.provenance.spec import Step, WorkflowSpec, render
from twinprov.provenance.stepenv import base_environment
from twinprov.provenance.workspace import stage_input, staged_input_path, workspace_dir


def step_values(
    spec: WorkflowSpec, step: Step, params: dict[str, Any], workflow_dir: str
) -> dict[str, str]:
    """Values of every placeholder a step may use."""
    values = {f"params.{k}": str(v) for k, v in params.items()}
    values["workflow_dir"] = workflow_dir
    for o in step.outputs:
        values[f"outputs.{o.name}"] = o.path
    for i in step.inputs:
        src, _, item = i.from_.partition(".")
        if src == "params":  # a data file, staged into the workspace before the step runs
            values[f"inputs.{i.name}"] = staged_input_path(i.name, str(params[item]))
        else:
            values[f"inputs.{i.name}"] = next(
                o.path for o in spec.step(src).outputs if o.name == item
            )
    return values


def run_params(settings: Settings, dag_id: str, context: Any) -> dict[str, Any]:
    """The params this run really uses: for a rerun (``rerun_of``), the original's values."""
    from twinprov.app.rerun import effective_params

    try:
        return effective_params(settings, dag_id, dict(context["params"]))
    except TwinprovError as e:
        raise AirflowException(str(e)) from e


def mlflow_environment(settings: Settings, ti: Any, log: Any) -> dict[str, str]:
    """Tracking URI, experiment and identity for a step that logs to MLflow."""
    from twinprov.provenance.ids import Ids
    from twinprov.ro_crates.mlflow_links import ensure_experiment, step_environment

    try:
        ensure_experiment(settings.mlflow_tracking_uri, ti.dag_id, settings.mlflow_artifacts)
    except Exception as e:  # the step may still run; its MLflow logging will say what is wrong
        log.warning("MLflow at %s unavailable: %s", settings.mlflow_tracking_uri, e)
    return step_environment(
        tracking_uri=settings.mlflow_tracking_uri,
        experiment=ti.dag_id,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        try_number=int(ti.try_number),
        run_iri=Ids(settings.base_iri).run(ti.dag_id, ti.run_id),
    )


def secret_environment(step: Step) -> dict[str, str]:
    """The values of a local step's ``secrets:`` (Airflow connections and variables), each
    registered with Airflow's secrets masker so that the task log shows ``***``."""
    from airflow.sdk import Connection, Variable
    from airflow.sdk.log import mask_secret

    out: dict[str, str] = {}
    for k, sec in enumerate(step.secrets):
        where = f"step {step.id}: secrets[{k}] ({sec.env})"
        try:
            if sec.connection:
                conn = Connection.get(sec.connection)
                raw = conn.get_uri() if sec.field == "uri" else getattr(conn, sec.field)
                if conn.password:
                    mask_secret(conn.password)
            elif sec.variable:
                raw = Variable.get(sec.variable)
            else:
                continue  # a Kubernetes Secret: only pods take those (the spec check says so)
        except Exception as e:
            what = (
                f"connection '{sec.connection}'" if sec.connection else f"variable '{sec.variable}'"
            )
            raise AirflowException(
                f"{where}: Airflow {what} is not available: {type(e).__name__}"
            ) from None  # the cause may quote the value
        value = "" if raw is None else str(raw)
        if value:
            mask_secret(value)  # declared a secret: masked whatever its name
        out[sec.env] = value
    return out


def stepwrap_command(workspace: Path, plan: dict[str, Any], argv: list[str]) -> list[str]:
    """The command that runs ``argv`` in the step wrapper (no shell): outputs hashed, the
    manifest printed as the last line, the step ended if this process dies."""
    return [
        sys.executable,
        stepwrap.__file__,
        "--workspace",
        str(workspace),
        "--plan",
        json.dumps(plan),
        "--",
        *argv,
    ]


class WrappedStepOperator(BaseOperator):
    """A task that runs its command in the step wrapper, as a subprocess it ends on kill."""

    def run_wrapped(
        self, cmd: list[str], env: dict[str, str], *, log_manifest: bool = True
    ) -> tuple[int, dict[str, Any] | None, list[str]]:
        """Run the wrapper's command line; its exit code, the manifest it printed (None if
        none) and its last output lines. Output is logged as it comes (the manifest line too,
        unless ``log_manifest`` is false)."""
        self._proc = proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        manifest: dict[str, Any] | None = None
        tail: deque[str] = deque(maxlen=15)
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            found = stepwrap.parse_manifest_line(line)
            if found is not None:
                manifest = found
                if not log_manifest:
                    continue
            else:
                tail.append(line)
            self.log.info("%s", line)
        return proc.wait(), manifest, list(tail)

    def on_kill(self) -> None:
        proc: subprocess.Popen[str] | None = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()


class LocalStepOperator(WrappedStepOperator):
    """Runs one workflow step as a subprocess in the run workspace (the embedded default).

    The command goes through the stdlib-only step wrapper, which prints the step manifest
    (outputs with sha256, exit code, timings) as the last log line; the listener records it.
    Params reach the command as argv elements, never through a shell.
    """

    ui_color = "#d9ead3"
    twinprov_role = "step"

    def __init__(self, *, spec_path: str, step_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.step_id = step_id
        self.twinprov_manifest: dict[str, Any] | None = None
        self._proc: subprocess.Popen[str] | None = None

    @property
    def twinprov_static(self) -> dict[str, Any]:
        """Facts known before running: target, image as written, environment."""
        from twinprov.provenance.spec import load_spec

        spec = load_spec(self.spec_path)
        step = spec.step(self.step_id)
        return {
            "target": "local",
            "image": spec.image_of(step),
            "environment": python_environment(),
            # what a rerun compares to explain a difference (twinprov.provenance.env_facts)
            "programs": step_programs([*step.command, *step.args], Path(self.spec_path).parent),
            "threads": thread_settings({**os.environ, **step.env}),
        }

    def execute(self, context: Any) -> dict[str, Any]:
        from twinprov.provenance.spec import load_spec

        spec = load_spec(self.spec_path)
        step = spec.step(self.step_id)
        settings = Settings.load()
        ti = context["ti"]
        ws = workspace_dir(settings.runs_dir, ti.dag_id, ti.run_id)
        params = run_params(settings, ti.dag_id, context)
        values = step_values(spec, step, params, str(Path(self.spec_path).parent))
        argv = [render(a, values) for a in [*step.command, *step.args]]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the local backend runs in this Python environment
        plan = {
            "step": step.id,
            "inputs": [{"name": i.name, "path": values[f"inputs.{i.name}"]} for i in step.inputs],
            "outputs": [
                {"name": o.name, "path": o.path, "media_type": o.media_type} for o in step.outputs
            ],
        }
        for i in step.inputs:
            src, _, item = i.from_.partition(".")
            if src == "params":
                try:
                    stage_input(settings.data_dir, ws, i.name, str(params[item]))
                except TwinprovError as e:
                    raise AirflowException(f"step {step.id}: {e}") from e
        # the step sees the basics, what its spec declares and its secrets; never the task
        # process's own environment (AIRFLOW_CONN_*, database URLs)
        env = base_environment(os.environ, settings.step_env_passthrough)
        env.update({k: render(v, values) for k, v in step.env.items()})
        env.update(secret_environment(step))
        if step.mlflow:
            env.update(mlflow_environment(settings, ti, self.log))
        env[stepwrap.PARENT_ENV] = str(os.getpid())  # the step ends if this process dies
        cmd = stepwrap_command(ws, plan, argv)
        self.log.info("step %s in %s: %s", step.id, ws, argv)
        rc, manifest, _tail = self.run_wrapped(cmd, env)
        self.twinprov_manifest = manifest
        if manifest is None:
            raise AirflowException(f"step {step.id}: no manifest (wrapper ended with code {rc})")
        if rc != 0:
            errors = "; ".join(manifest.get("errors") or [])
            why = f"exit code {manifest.get('exit_code')}" + (f"; {errors}" if errors else "")
            raise AirflowException(f"step {step.id} failed: {why}")
        announce(self, context, spec.name, step.id, manifest.get("outputs") or [])
        return {"outputs": {o["name"]: o["sha256"] for o in manifest.get("outputs", [])}}


class PublishOperator(BaseOperator):
    """Last task of every generated DAG: the run's ledger events → PROV files → graph store."""

    ui_color = "#cfe2f3"
    twinprov_role = "publish"

    def __init__(
        self, *, workflow: str | None = None, fail_unless_reproduced: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.fail_unless_reproduced = fail_unless_reproduced

    def execute(self, context: Any) -> dict[str, Any]:
        if os.environ.get("TWINPROV_CAPTURE", "").lower() == "off":
            self.log.warning("twinprov capture is off (TWINPROV_CAPTURE=off): nothing to publish")
            return {}
        ti = context["ti"]
        from twinprov.airflow.connections import yprov_connection

        settings = Settings.load()
        missing = self.wait_for_other_workers(settings, ti)
        pub = publish_run(
            settings, ti.dag_id, ti.run_id, connection=yprov_connection, missing=missing
        )
        if pub.verdict is not None:
            v = pub.verdict
            self.log.info(
                "reproducibility of %s: %s%s",
                v["original_run"],
                v["status"],
                f" (first divergent step: {v['first_divergent_step']})"
                if v.get("first_divergent_step")
                else "",
            )
            if self.fail_unless_reproduced and v["status"] != "reproduced":
                raise AirflowException(
                    f"{v['original_run']} did not reproduce: {v['status']}"
                    + (
                        f", first divergent step {v['first_divergent_step']}"
                        if v.get("first_divergent_step")
                        else ""
                    )
                )
        self.log.info(
            "run %s/%s: state %s, %d task tries", pub.dag_id, pub.run_id, pub.state, pub.tries
        )
        for name, path in pub.files.items():
            self.log.info("PROV %s: %s", name, path)
        if pub.store_error:
            self.log.warning("graph store not updated (will catch up): %s", pub.store_error)
        else:
            self.log.info("graph %s: %s triples", pub.graph, pub.triples)
        return {"state": pub.state, "files": pub.files, "graph": pub.graph}

    def wait_for_other_workers(self, settings: Settings, ti: Any) -> list[str]:
        """Task instances Airflow reports ended whose events are not in the ledger after
        ``[twinprov] outstanding_wait_seconds`` (workers on other machines drain their spools
        meanwhile); none are looked for when the wait is 0 (the default of executors that run
        every task on this machine, whose spool the publication drains itself)."""
        from twinprov.app.drain import wait_for_events

        wait = outstanding_wait_seconds()
        if wait <= 0:
            return []
        try:
            crumbs = ti.get_task_breadcrumbs(ti.dag_id, ti.run_id)
            ended = {
                (str(c["task_id"]), int(c.get("map_index", -1))): str(c["state"])
                for c in crumbs
                if c["task_id"] != ti.task_id
            }
        except Exception as e:  # provenance never breaks the run: publish what is there
            self.log.warning("task states unavailable (%s): not waiting for other workers", e)
            return []
        missing = wait_for_events(settings, ti.dag_id, ti.run_id, ended, wait)
        if missing:
            self.log.warning(
                "after %g s the ledger still lacks the events of %s: publishing without them "
                "(gap 'events'); the worker holding them publishes the run again",
                wait,
                ", ".join(missing),
            )
        return missing


REMOTE_EXECUTORS = ("CeleryExecutor", "KubernetesExecutor", "EdgeExecutor")
"""Executors that run tasks on other machines, each with its own spool."""


def outstanding_wait_seconds() -> float:
    """``[twinprov] outstanding_wait_seconds``: how long the publish task waits for the events
    of ended tasks that are not in the ledger yet; default 120 with an executor of
    :data:`REMOTE_EXECUTORS`, else 0."""
    from airflow.configuration import conf

    from twinprov.provenance.config import number_setting

    executor = str(conf.get("core", "executor", fallback=""))
    default = 120.0 if any(name in executor for name in REMOTE_EXECUTORS) else 0.0
    return number_setting("outstanding_wait_seconds", default, zero=True)


def producer_output(
    settings: Settings, dag_id: str, run_id: str, step_id: str, output: str
) -> dict:
    """The output record (path, sha256, …) of the producer's latest successful try, from the
    ledger — the bytes the validation must be about."""
    from twinprov.provenance.ledger import Ledger
    from twinprov.provenance.record import collapse_tries

    tries = [
        t
        for t in collapse_tries(Ledger(settings.ledger_url).events(dag_id, run_id))
        if t.task_id == step_id and t.state == "success"
    ]
    if not tries:
        raise AirflowException(f"no successful try of {step_id} in the ledger for run {run_id}")
    last = max(tries, key=lambda t: t.try_number)
    for o in last.manifest.get("outputs") or []:
        if o.get("name") == output:
            return dict(o)
    raise AirflowException(f"{step_id}'s manifest has no output '{output}'")


class ValidateOutputOperator(BaseOperator):
    """Checks one output with its Great Expectations suite, bound to the output's sha256.

    Policy ``fail``: a failed check fails this task, so steps that consume the output do not run
    (the publish task still publishes the failure). ``warn``: the verdict is recorded, the run
    goes on. Either way the verdict is provenance (the listener records ``twinprov_facts``).
    """

    ui_color = "#fce5cd"
    twinprov_role = "validation"

    def __init__(self, *, spec_path: str, step_id: str, output_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path
        self.step_id = step_id
        self.output_name = output_name
        self.twinprov_facts: dict[str, Any] = {}

    def execute(self, context: Any) -> dict[str, Any]:
        import hashlib

        from twinprov.provenance.spec import load_spec
        from twinprov.provenance.workspace import run_dir
        from twinprov.validation import load_suite, validate_file

        spec = load_spec(self.spec_path)
        out = next(o for o in spec.step(self.step_id).outputs if o.name == self.output_name)
        check = out.validation
        assert check is not None
        settings = Settings.load()
        ti = context["ti"]
        params = run_params(settings, ti.dag_id, context)
        values = {f"params.{k}": str(v) for k, v in params.items()}
        if check.suite is not None:
            suite_file = Path(self.spec_path).parent / render(check.suite, values)
            suite = load_suite(suite_file=suite_file, name=f"{self.step_id}.{self.output_name}")
            suite_ref = str(suite_file)
        else:
            suite = load_suite(inline=check.expectations, name=f"{self.step_id}.{self.output_name}")
            suite_ref = "inline"
        produced = producer_output(settings, ti.dag_id, ti.run_id, self.step_id, self.output_name)
        self.twinprov_facts = {
            "validation": {
                "output": self.output_name,
                "step": self.step_id,
                "sha256": produced.get("sha256"),
                "policy": check.on_failure,
                "suite": suite_ref,
                "success": False,
                "error": "validation did not finish",
            }
        }
        record = validate_file(
            Path(str(produced.get("abs_path") or produced["path"])),
            output=self.output_name,
            media_type=out.media_type,
            suite=suite,
            expected_sha256=produced.get("sha256"),
        )
        folder = run_dir(settings.runs_dir, ti.dag_id, ti.run_id) / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        report = folder / f"{self.step_id}.{self.output_name}.try{ti.try_number}.json"
        text = json.dumps(record.to_dict(), indent=2, sort_keys=True)
        report.write_text(text, encoding="utf-8")
        summary = {k: v for k, v in record.to_dict().items() if k not in ("result",)}
        summary.update(
            step=self.step_id,
            policy=check.on_failure,
            suite=suite_ref,
            suite_sha256=suite.digest,
            report=str(report),
            report_sha256=hashlib.sha256(text.encode()).hexdigest(),
        )
        self.twinprov_facts = {"validation": summary}
        verdict = "skipped" if record.skipped else ("passed" if record.success else "failed")
        self.log.info(
            "%s.%s (sha256 %s…): %s — %d/%d expectations met%s",
            self.step_id,
            self.output_name,
            (record.sha256 or "?")[:12],
            verdict,
            record.successful,
            record.evaluated,
            f"; failed: {', '.join(record.failed_expectations)}"
            if record.failed_expectations
            else "",
        )
        if verdict != "failed" or check.on_failure != "fail":
            announce(self, context, spec.name, self.step_id, [produced], validation=verdict)
        if record.skipped:
            self.log.warning("not validated: %s", record.skip_reason)
        elif not record.success:
            why = record.error or ", ".join(record.failed_expectations)
            if check.on_failure == "fail":
                name = f"{self.step_id}.{self.output_name}"
                raise AirflowException(f"validation of {name} failed: {why}")
            self.log.warning("validation failed (policy warn, the run goes on): %s", why)
        return {"verdict": verdict, "report": str(report)}
