"""Describing the run: what happened, as actions, and the documents about it.

Per the Provenance Run Crate profile: the engine's ``OrganizeAction``, whose ``object`` is one
``ControlAction`` per step and whose ``result`` is the workflow run, a ``CreateAction`` with the
parameter values and the data read (``object``) and written (``result``); one ``CreateAction``
per task try (tool as ``instrument``, inputs, outputs, times, status, error, container image,
resource usage). Then the documents ``about`` the run: the reproducibility verdict, the PROV files,
data-quality reports, STAC Items and MLflow runs.
"""

from __future__ import annotations

__all__ = ["RunDescription"]

import json
import shlex
from pathlib import Path

from twinprov.provenance.ids import VOCAB
from twinprov.ro_crates.crate_terms import (
    ACTION_STATUS,
    PROV_FORMATS,
    USAGE_TERMS,
    action_status,
    camel,
    earliest,
    iso_time,
    latest,
    pv_id,
    q,
    ref,
    refs,
    size_of,
    step_id,
    tool_param,
    try_id,
)
from twinprov.ro_crates.crate_workflow import WorkflowDescription
from twinprov.ro_crates.model import StepSpec, TaskTry


class RunDescription(WorkflowDescription):
    """The run side of the crate: its actions, and the documents about it."""

    def add_actions(self, engine: str, user: str | None) -> None:
        run = self.data.run
        last: dict[str, TaskTry] = {}
        by_step: dict[str, list[TaskTry]] = {}
        for t in self.tries:
            by_step.setdefault(t.task_id, []).append(t)
            cur = last.get(t.task_id)
            if cur is None or (t.try_number, t.map_index) >= (cur.try_number, cur.map_index):
                last[t.task_id] = t
        failures = [
            f"step '{t.task_id}' failed (try {t.try_number}): {t.error or 'no error recorded'}"
            for t in sorted(last.values(), key=lambda t: self.steps[t.task_id].position)
            if t.failed
        ]
        run_status = action_status(run.state)
        run_error = "; ".join(failures) if run_status == ACTION_STATUS["failed"] else None
        if run_status == ACTION_STATUS["failed"] and not run_error:
            run_error = f"the run ended {run.state}"
        run_start = iso_time(run.start) or earliest(t.start for t in self.tries)
        run_end = iso_time(run.end) or latest(t.end for t in self.tries)
        objects = [pv_id(n) for n in self.param_values]
        produced: set[str] = set()
        for t in self.tries:
            produced.update(self.plan.file_ids(t.outputs))
        for t in self.tries:
            objects += [i for i in self.plan.file_ids(t.inputs) if i not in produced]
        results: list[str] = []
        for t in self.tries:
            results += self.plan.file_ids(t.outputs)
        run_id = "#run"
        control_ids = [f"#control/{q(s.id)}" for s in self.wf.steps if s.id in by_step]
        # the profile's OrganizeAction must name at least one step execution: with no step
        # run at all (nothing started yet, or every task refused) it is left out
        if control_ids:
            self.mentions.append("#engine-run")
            self.add(
                "#engine-run",
                "OrganizeAction",
                {
                    "name": f"twinprov run of {run.dag_id} ({run.run_id})",
                    "instrument": ref(engine),
                    "object": refs(control_ids),
                    "result": ref(run_id),
                    "agent": ref(user) if user else None,
                    "startTime": run_start,
                    "endTime": run_end,
                    "actionStatus": run_status,
                    "error": run_error,
                },
            )
        self.add(
            run_id,
            "CreateAction",
            {
                "name": f"Run {run.run_id} of {self.wf.name}",
                "description": (
                    f"Airflow DAG {run.dag_id}, run {run.run_id}"
                    + (f" ({run.run_type})" if run.run_type else "")
                    + f": {run.state}"
                ),
                "instrument": ref(self.main_id),
                # the configuration files (spec, settings) beside the data read and the params
                "object": refs([*objects, *self.config_ids]),
                "result": refs(results),
                "agent": ref(user) if user else None,
                "startTime": run_start,
                "endTime": run_end,
                "actionStatus": run_status,
                "error": run_error,
                "identifier": run.iri,
            },
        )
        self.mentions.append(run_id)
        for s in self.wf.steps:
            tries = by_step.get(s.id)
            if not tries:
                continue
            final = last[s.id]
            status = action_status(final.state)
            self.add(
                f"#control/{q(s.id)}",
                "ControlAction",
                {
                    "name": f"orchestrate {s.id}",
                    "instrument": ref(step_id(s.id)),
                    "object": refs(try_id(t) for t in tries),
                    "startTime": earliest(t.start for t in tries),
                    "endTime": latest(t.end for t in tries),
                    "actionStatus": status,
                    "error": (final.error or "failed")
                    if status == ACTION_STATUS["failed"]
                    else None,
                },
            )
            for t in tries:
                self.add_try(s, t, user)

    def add_try(self, s: StepSpec, t: TaskTry, user: str | None) -> None:
        ident = try_id(t)
        status = action_status(t.state)
        error = None
        if status == ACTION_STATUS["failed"]:
            error = t.error or (
                f"exit code {t.exit_code}" if t.exit_code is not None else f"ended {t.state}"
            )
        details = []
        if t.command:
            details.append(f"Command: {shlex.join(t.command)}")
        if t.exit_code is not None:
            details.append(f"exit code {t.exit_code}")
        if t.target:
            details.append(f"target {t.target}")
        if t.host:
            details.append(f"host {t.host}")
        usage = []
        for key in sorted(t.resource_usage):
            term, unit = USAGE_TERMS.get(key, (camel(key), None))
            pv = f"{ident}/usage/{q(key)}"
            self.add(
                pv,
                "PropertyValue",
                {
                    "name": term,
                    "propertyID": VOCAB + term,
                    "unitCode": unit,
                    "value": t.resource_usage[key],
                },
            )
            usage.append(pv)
        env = []
        for key in sorted(t.env):
            pv = f"{ident}/env/{q(key)}"
            self.add(
                pv,
                "PropertyValue",
                {
                    "name": key,
                    "value": t.env[key],
                    "exampleOfWork": ref(tool_param(s.id, "env", key)) if key in s.env else None,
                },
            )
            env.append(pv)
        image = None
        if t.image and (t.target or s.target) != "local":
            image = self.add_image(t.image, t.image_digest)
        name = f"Run of step {t.task_id}"
        if t.map_index >= 0:
            name += f" [{t.map_index}]"
        self.add(
            ident,
            "CreateAction",
            {
                "name": f"{name} (try {t.try_number})",
                "description": "; ".join(details) or f"Try {t.try_number} of step {t.task_id}",
                "instrument": ref(self.tool(s.id)),
                "object": refs([*self.plan.file_ids(t.inputs), *(pv_id(p) for p in s.params)]),
                "result": refs(self.plan.file_ids(t.outputs)),
                "agent": ref(user) if user else None,
                "startTime": iso_time(t.start),
                "endTime": iso_time(t.end),
                "actionStatus": status,
                "error": error,
                "containerImage": ref(image) if image else None,
                "environment": refs(env),
                "resourceUsage": refs(usage),
                "identifier": t.iri,
            },
        )
        self.mentions.append(ident)

    def add_verdict(self) -> None:
        v = self.data.verdict
        if not v or not v.get("file"):
            return
        first = v.get("first_divergent_step")
        self.add_file(
            self.root / "reproducibility" / "verdict.json",
            "reproducibility/verdict.json",
            {
                "name": f"Reproducibility verdict: {v.get('status')}",
                "description": (
                    f"This run re-ran {v.get('original_run')} and compared every output: "
                    f"{v.get('status')}"
                    + (f"; first divergent step: {first}" if first else "")
                    + "."
                ),
                "encodingFormat": "application/json",
                "about": [ref("#run"), {"@id": str(v.get("original_run"))}],
                "contentSize": size_of(Path(str(v["file"]))),
            },
        )

    def add_environment_facts(self) -> None:
        """``reproducibility/environment.json``: per step try (by its action's id) the facts a
        rerun compares to explain a difference — packages, interpreter, OS/libc, image digest,
        host/site, thread variables, programs' sha256."""
        facts = {
            try_id(t): {
                "step": t.task_id,
                "map_index": t.map_index,
                "try_number": t.try_number,
                "facts": dict(t.facts),
            }
            for t in self.tries
            if t.facts and t.ran
        }
        if not facts:
            return
        dest = self.root / "reproducibility" / "environment.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(facts, indent=1, sort_keys=True), encoding="utf-8")
        self.add_file(
            dest,
            "reproducibility/environment.json",
            {
                "name": "Environment of every step try",
                "description": (
                    "Per step try (keyed by its CreateAction's id): Python packages with "
                    "versions, interpreter, OS and libc, container image digest, host and site, "
                    "thread-count variables and the sha256 of the step's programs."
                ),
                "encodingFormat": "application/json",
                "about": refs(sorted(facts)),
                "contentSize": size_of(dest),
            },
        )

    def add_documents(self) -> None:
        self.add_verdict()
        self.add_environment_facts()
        for name, source in sorted(self.data.prov_files.items()):
            media, spec, label = PROV_FORMATS.get(
                Path(name).suffix, ("application/octet-stream", None, None)
            )
            if spec and spec not in self.crate:
                self.add(spec, "CreativeWork", {"name": label})
            dest = f"prov/{name}"
            copy = self.data.yprov if name == "prov.json" else None
            self.add_file(
                self.root / dest,
                dest,
                {
                    "name": f"W3C PROV of the run ({label or name})",
                    "encodingFormat": media,
                    "conformsTo": ref(spec) if spec else None,
                    "about": ref("#run"),
                    "contentSize": size_of(source),
                    # the same document in yProv (its pid, and where it is)
                    "identifier": str(copy["pid"]) if copy else None,
                    "sameAs": ref(str(copy["location"])) if copy else None,
                },
            )
        for v in sorted(self.data.validations, key=lambda v: (v.output, v.sha256)):
            about = self.ids_for_sha(v.sha256)
            verdict = "passed" if v.success else "failed"
            for p, media in ((v.report_json, "application/json"), (v.report_html, "text/html")):
                if p is None:
                    continue
                dest = f"validation/{v.output}/{Path(p).name}"
                self.add_file(
                    self.root / dest,
                    dest,
                    {
                        "name": f"Data-quality report for {v.output} ({verdict})",
                        "description": (
                            f"Validation of output {v.output} (sha256 {v.sha256})"
                            + (f" against suite {v.suite}" if v.suite else "")
                            + f": {verdict}."
                        ),
                        "encodingFormat": media,
                        "about": refs(about),
                        "contentSize": size_of(p),
                    },
                )
        # STAC Items stay in their catalog (their relative links resolve there): referenced
        for item in sorted(self.data.stac_items, key=lambda i: i.item_id):
            self.add_file(
                Path(item.path).absolute().as_uri(),
                None,
                {
                    "name": f"STAC Item {item.item_id}",
                    "description": "Item of the run's STAC catalog, referenced where it is.",
                    "encodingFormat": "application/geo+json",
                    "about": refs(self.ids_for_sha(item.about_sha256))
                    if item.about_sha256
                    else None,
                    "contentSize": size_of(item.path),
                },
            )
        tries = {(t.task_id, t.try_number): try_id(t) for t in self.tries}
        for m in sorted(self.data.mlflow_runs, key=lambda m: m.run_id):
            subject = "#run"
            if m.task_id is not None:
                subject = tries.get((m.task_id, m.try_number or 1), subject)
            details = [f"Tracked in {m.tracking_uri}" if m.tracking_uri else "MLflow run"]
            if m.experiment_id:
                details.append(f"experiment {m.experiment_id}")
            if m.metrics:
                details.append(
                    "metrics: " + ", ".join(f"{k}={v:g}" for k, v in sorted(m.metrics.items()))
                )
            self.add(
                f"#mlflow/{q(m.run_id)}",
                "CreativeWork",
                {
                    "name": f"MLflow run {m.name or m.run_id}",
                    "identifier": m.uri or m.run_id,
                    "url": m.url,
                    "description": "; ".join(details),
                    "about": ref(subject),
                },
            )
