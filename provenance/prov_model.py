"""Ledger events → a W3C PROV document (with the ``prov`` library).

One run is one ``prov:Activity``; every task try is an activity ``wasInformedBy`` the run; every
input and output is an entity named by its sha256 (``used`` / ``wasGeneratedBy``, outputs
``wasDerivedFrom`` the inputs of the same try); the triggering person, Airflow, and each step's
execution environment (container image or local Python environment) are agents. Building is a
pure function of its arguments, so replaying events yields the same document.
"""

from __future__ import annotations

__all__ = ["RunFacts", "add_document_copy", "build_document"]

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prov.constants import PROV as _PROV
from prov.constants import PROV_LABEL, PROV_LOCATION, PROV_TYPE, PROV_VALUE
from prov.identifier import Identifier
from prov.model import ProvDocument, QualifiedName

from twinprov.provenance.ids import VOCAB, Ids
from twinprov.provenance.record import StepTry, TaskEvent, Verdict, collapse_tries


@dataclass(frozen=True)
class RunFacts:
    """Run-level facts: what the listener copied out of the DAG run, plus publication facts."""

    dag_id: str
    run_id: str
    info: Mapping[str, Any]
    state: str
    end: str | None = None
    mlflow_runs: Sequence[Mapping[str, Any]] = ()
    """MLflow runs the steps created (``MlflowRunRecord.to_dict()`` shapes)."""
    verdict: Mapping[str, Any] | None = None
    """For a rerun: the reproducibility verdict (``Verdict.to_dict()`` shape)."""


def _dt(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # a malformed time must not cost the rest of the provenance
        return None


class _Builder:
    def __init__(self, ids: Ids, facts: RunFacts) -> None:
        self.ids = ids
        self.facts = facts
        self.doc = ProvDocument()
        self.doc.set_default_namespace(ids.run_ns)
        self.tp = self.doc.add_namespace("twinprov", VOCAB)
        self.run_ns = self.doc.add_namespace("run", ids.run_ns)
        self.data_ns = self.doc.add_namespace("data", ids.data_ns)
        self.agent_ns = self.doc.add_namespace("agent", ids.agent_ns)
        self.asset_ns = self.doc.add_namespace("asset", ids.asset_ns)
        self.entities: set[QualifiedName] = set()

    def t(self, term: str) -> QualifiedName:
        return self.tp[term]

    def data_entity(self, rec: Mapping[str, Any]) -> QualifiedName | None:
        sha = rec.get("sha256")
        if not sha:
            return None
        qn = self.data_ns[self.ids.data_local(str(sha))]
        if qn not in self.entities:
            attrs: dict[Any, Any] = {
                PROV_TYPE: self.t("DataFile"),
                self.t("sha256"): str(sha),
            }
            if rec.get("size") is not None:
                attrs[self.t("size")] = int(rec["size"])
            if rec.get("media_type"):
                attrs[self.t("mediaType")] = str(rec["media_type"])
            if rec.get("name"):
                attrs[PROV_LABEL] = str(rec["name"])
            loc = rec.get("abs_path") or rec.get("path")
            if loc:
                attrs[PROV_LOCATION] = str(loc)
            self.doc.entity(qn, attrs)
            self.entities.add(qn)
        return qn

    def build(self, tries: Sequence[StepTry]) -> ProvDocument:
        f, info, tp = self.facts, self.facts.info, self.t
        run_qn = self.run_ns[self.ids.run_local(f.dag_id, f.run_id)]
        starts = [t.start for t in tries if t.start]
        ends = [t.end for t in tries if t.end]
        run_attrs: dict[Any, Any] = {
            PROV_TYPE: tp("WorkflowRun"),
            PROV_LABEL: f"{f.dag_id} {f.run_id}",
            tp("dagId"): f.dag_id,
            tp("runId"): f.run_id,
            tp("state"): f.state,
        }
        for key, term in (
            ("run_type", "runType"),
            ("workflow_version", "workflowVersion"),
            ("spec_sha256", "specSha256"),
            ("triggered_via", "triggeredVia"),
            ("dag_kind", "dagKind"),
            ("dag_file_sha256", "dagFileSha256"),
        ):
            if info.get(key):
                run_attrs[tp(term)] = str(info[key])
        if info.get("conf"):
            run_attrs[tp("conf")] = _literal(info["conf"])
        if f.verdict and f.verdict.get("original_run"):
            run_attrs[tp("reproduces")] = self._iri(str(f.verdict["original_run"]))
        self.doc.activity(
            run_qn,
            _dt(info.get("run_start") or (min(starts) if starts else None)),
            _dt(f.end or (max(ends) if ends else None)),
            run_attrs,
        )
        # agents: the person who triggered, Airflow acting for them
        airflow_qn = self.agent_ns[
            self.ids.software_local("apache-airflow", str(info.get("airflow_version", "unknown")))
        ]
        self.doc.agent(
            airflow_qn,
            {
                PROV_TYPE: _PROV["SoftwareAgent"],
                PROV_LABEL: "Apache Airflow",
                tp("version"): str(info.get("airflow_version", "unknown")),
            },
        )
        self.doc.wasAssociatedWith(run_qn, airflow_qn)
        user = info.get("triggering_user")
        if user:
            person_qn = self.agent_ns[self.ids.person_local(str(user))]
            self.doc.agent(person_qn, {PROV_TYPE: _PROV["Person"], PROV_LABEL: str(user)})
            self.doc.wasAssociatedWith(run_qn, person_qn)
            self.doc.actedOnBehalfOf(airflow_qn, person_qn)
        # the spec and the parameters the run used
        if info.get("spec_sha256"):
            spec_qn = self.data_entity(
                {
                    "sha256": info["spec_sha256"],
                    "name": "workflow spec",
                    "media_type": "application/yaml",
                    "abs_path": info.get("spec_path"),
                }
            )
            if spec_qn is not None:
                self.doc.used(run_qn, spec_qn)
        if info.get("dag_file_sha256"):  # a hand-written DAG: its file is the code that ran
            dag_qn = self.data_entity(
                {
                    "sha256": info["dag_file_sha256"],
                    "name": "DAG file",
                    "media_type": "text/x-python",
                    "abs_path": info.get("dag_file"),
                }
            )
            if dag_qn is not None:
                self.doc.used(run_qn, dag_qn)
        self._consumed(run_qn, info.get("consumed_assets"))
        for name, value in sorted((info.get("params") or {}).items()):
            p_qn = self.run_ns[self.ids.param_local(f.dag_id, f.run_id, name)]
            self.doc.entity(
                p_qn,
                {PROV_TYPE: tp("Parameter"), PROV_LABEL: name, PROV_VALUE: _literal(value)},
            )
            self.doc.used(run_qn, p_qn)
        # task tries
        previous: dict[tuple[str, int], QualifiedName] = {}
        for t in sorted(tries, key=lambda x: (x.task_id, x.map_index, x.try_number)):
            self._task(run_qn, t, previous)
        for m in f.mlflow_runs:
            self._mlflow(m)
        if f.verdict:
            self._verdict(run_qn, f.verdict)
        return self.doc

    def _iri(self, iri: str) -> Any:
        for ns in (self.run_ns, self.data_ns, self.agent_ns):
            if iri.startswith(ns.uri):
                return ns[iri[len(ns.uri) :]]
        return Identifier(iri)

    def _verdict(self, run_qn: QualifiedName, v: Mapping[str, Any]) -> None:
        f, tp = self.facts, self.t
        run_local = self.ids.run_local(f.dag_id, f.run_id)
        check = self.run_ns[f"{run_local}/reproducibility-check"]
        verdict = self.run_ns[f"{run_local}/verdict"]
        original = str(v.get("original_run") or "")
        self.doc.activity(
            check,
            None,
            None,
            {
                PROV_TYPE: tp("ReproducibilityCheck"),
                PROV_LABEL: "compare outputs with the original",
            },
        )
        self.doc.wasInformedBy(check, run_qn)
        pairs: list[tuple[Any, Any]] = [
            (PROV_TYPE, tp("ReproducibilityVerdict")),
            (PROV_LABEL, f"reproducibility verdict: {v.get('status')}"),
            (tp("verdict"), str(v.get("status"))),
        ]
        if original:
            pairs.append((tp("reproduces"), self._iri(original)))
        if v.get("first_divergent_step"):
            pairs.append((tp("firstDivergentStep"), str(v["first_divergent_step"])))
        if v.get("file"):
            pairs.append((PROV_LOCATION, str(v["file"])))
        for note in v.get("notes") or []:
            pairs.append((tp("note"), str(note)))
        typed = Verdict.from_dict(v)
        if typed.likely_cause:
            pairs.append((tp("likelyCause"), typed.likely_cause))
        for c in typed.changes:
            pairs += [(tp("environmentChange"), f"{c.step}: {change}") for change in c.changes]
            if c.step == typed.first_divergent_step:
                pairs += [(tp("firstDivergenceChange"), change) for change in c.changes]
        for o in typed.outputs:
            label = f"{o.step}.{o.output}"
            pairs.append((tp("comparedOutput"), f"{label}: {o.status} ({o.rule})"))
            pairs.append((tp("outputGrade"), f"{label}: {o.grade_text}"))
            if not o.same:
                pairs.append((tp("differingOutput"), label))
            for sha in (o.original_sha256, o.rerun_sha256):
                if sha:
                    used = self.data_entity({"sha256": sha, "name": o.output})
                    if used is not None:
                        self.doc.used(check, used)
        self.doc.entity(verdict, pairs)
        self.doc.wasGeneratedBy(verdict, check)

    def _validation_attrs(self, v: Mapping[str, Any]) -> list[tuple[Any, Any]]:
        tp = self.t
        verdict = "skipped" if v.get("skipped") else "passed" if v.get("success") else "failed"
        pairs: list[tuple[Any, Any]] = [
            (PROV_TYPE, tp("Validation")),
            (tp("verdict"), verdict),
            (tp("validatedOutput"), str(v.get("output", ""))),
        ]
        for key, term in (
            ("evaluated", "evaluatedExpectations"),
            ("successful", "successfulExpectations"),
            ("failed", "failedExpectationCount"),
        ):
            if v.get(key) is not None:
                pairs.append((tp(term), int(v[key])))
        for key, term in (
            ("policy", "policy"),
            ("suite", "suite"),
            ("suite_sha256", "suiteSha256"),
            ("gx_version", "gxVersion"),
            ("skip_reason", "skipReason"),
        ):
            if v.get(key):
                pairs.append((tp(term), str(v[key])))
        if v.get("error"):
            pairs.append((tp("validationError"), str(v["error"])))
        for name in v.get("failed_expectations") or []:
            pairs.append((tp("failedExpectation"), str(name)))
        return pairs

    def _validation_links(self, qn: QualifiedName, v: Mapping[str, Any], t: StepTry) -> None:
        checked = self.data_entity(
            {"sha256": v.get("expected_sha256") or v.get("sha256"), "name": v.get("output")}
        )
        if checked is not None:
            self.doc.used(qn, checked)
        report = self.data_entity(
            {
                "sha256": v.get("report_sha256"),
                "name": f"validation report of {v.get('output')}",
                "media_type": "application/json",
                "abs_path": v.get("report"),
            }
        )
        if report is not None:
            self.doc.wasGeneratedBy(report, qn)
            if checked is not None:
                self.doc.wasDerivedFrom(report, checked)

    def _mlflow(self, m: Mapping[str, Any]) -> None:
        f, tp = self.facts, self.t
        run_local = self.ids.run_local(f.dag_id, f.run_id)
        qn = self.run_ns[f"{run_local}/mlflow/{m['run_id']}"]
        attrs: dict[Any, Any] = {
            PROV_TYPE: tp("MlflowRun"),
            PROV_LABEL: str(m.get("name") or m["run_id"]),
            PROV_LOCATION: f"runs:/{m['run_id']}",
            tp("mlflowRunId"): str(m["run_id"]),
            tp("mlflowExperimentId"): str(m.get("experiment_id", "")),
            tp("trackingUri"): str(m.get("tracking_uri", "")),
        }
        self.doc.activity(qn, _dt(m.get("start")), _dt(m.get("end")), attrs)
        task = self.run_ns[
            self.ids.task_local(
                f.dag_id, f.run_id, str(m.get("task_id")), -1, int(m.get("try_number") or 0)
            )
        ]
        self.doc.wasInformedBy(qn, task)
        for name, value in sorted((m.get("metrics") or {}).items()):
            mq = self.run_ns[f"{run_local}/mlflow/{m['run_id']}/metric/{name}"]
            self.doc.entity(
                mq, {PROV_TYPE: tp("Metric"), PROV_LABEL: name, PROV_VALUE: float(value)}
            )
            self.doc.wasGeneratedBy(mq, qn)
        for model in m.get("models") or []:
            mq = self.run_ns[f"{run_local}/mlflow/model/{model['model_id']}"]
            self.doc.entity(
                mq,
                {
                    PROV_TYPE: tp("Model"),
                    PROV_LABEL: str(model.get("name") or model["model_id"]),
                    PROV_LOCATION: str(model.get("uri", "")),
                },
            )
            self.doc.wasGeneratedBy(mq, qn)

    def _task(
        self,
        run_qn: QualifiedName,
        t: StepTry,
        previous: dict[tuple[str, int], QualifiedName],
    ) -> None:
        f, tp, p, m = self.facts, self.t, t.payload, t.manifest
        qn = self.run_ns[
            self.ids.task_local(f.dag_id, f.run_id, t.task_id, t.map_index, t.try_number)
        ]
        attrs: dict[Any, Any] = {
            PROV_TYPE: tp("TaskTry"),
            PROV_LABEL: t.task_id,
            tp("taskId"): t.task_id,
            tp("mapIndex"): t.map_index,
            tp("tryNumber"): t.try_number,
            tp("state"): t.state,
        }
        for key, term in (
            ("operator", "operator"),
            ("hostname", "hostname"),
            ("target", "target"),
            ("image", "image"),
        ):
            if p.get(key):
                attrs[tp(term)] = str(p[key])
        if p.get("image_digest"):
            attrs[tp("imageDigest")] = str(p["image_digest"])
        if p.get("image_pinned") is not None:
            attrs[tp("imagePinned")] = bool(p["image_pinned"])
        cwl: Mapping[str, Any] = p["cwl"] if isinstance(p.get("cwl"), Mapping) else {}
        for key, term in (
            ("process", "cwlProcess"),
            ("class", "cwlClass"),
            ("cwlVersion", "cwlVersion"),
            ("container", "container"),
            ("dockerRequirement", "dockerRequirement"),
        ):
            if cwl.get(key):
                attrs[tp(term)] = str(cwl[key])
        pod: Mapping[str, Any] = p["pod"] if isinstance(p.get("pod"), Mapping) else {}
        for key, term in (("name", "podName"), ("namespace", "namespace"), ("node", "node")):
            if pod.get(key):
                attrs[tp(term)] = str(pod[key])
        hpc: Mapping[str, Any] = p["hpc"] if isinstance(p.get("hpc"), Mapping) else {}
        for key, term in (
            ("job_id", "hpcJobId"),
            ("partition", "partition"),
            ("walltime", "walltime"),
            ("flags", "slurmFlags"),
            ("node", "hpcNode"),
        ):
            if hpc.get(key):
                value = hpc[key]
                attrs[tp(term)] = " ".join(value) if isinstance(value, list) else str(value)
        if t.error:
            attrs[tp("error")] = str(t.error)
        if m and m.get("exit_code") is not None:  # a step manifest (not a DAG task's files)
            attrs[tp("exitCode")] = int(m["exit_code"])
            if m.get("duration_s") is not None:
                attrs[tp("durationSeconds")] = float(m["duration_s"])
            usage = m.get("resource_usage") or {}
            for key, term in (
                ("cpu_user_s", "cpuUserSeconds"),
                ("cpu_system_s", "cpuSystemSeconds"),
                ("max_rss_kb", "maxRssKilobytes"),
            ):
                if usage.get(key) is not None:
                    attrs[tp(term)] = float(usage[key])
            for err in m.get("errors") or []:
                attrs.setdefault(tp("error"), str(err))
        task_key = (t.task_id, t.map_index)
        if task_key in previous:
            attrs[tp("retryOf")] = previous[task_key]
        previous[task_key] = qn
        pairs = list(attrs.items())
        assets = p.get("assets")
        for a in assets if isinstance(assets, list) else []:
            if isinstance(a, Mapping) and a.get("uri") and isinstance(a.get("extra"), Mapping):
                event = {"uri": str(a["uri"]), "extra": dict(a["extra"])}
                pairs.append((tp("assetEvent"), json.dumps(event, sort_keys=True, default=str)))
        check = p.get("validation") if isinstance(p.get("validation"), Mapping) else None
        if check is not None:
            pairs += self._validation_attrs(check)
        self.doc.activity(qn, _dt(t.start), _dt(t.end), pairs)
        self.doc.wasInformedBy(qn, run_qn)
        if check is not None:
            self._validation_links(qn, check, t)
        env = p.get("environment")
        env_qn = None
        if isinstance(env, Mapping) and env.get("digest"):
            env_qn = self.agent_ns[self.ids.env_local(str(env.get("kind")), str(env["digest"]))]
            env_attrs: dict[Any, Any] = {PROV_TYPE: _PROV["SoftwareAgent"]}
            for k, v in sorted(env.items()):
                if isinstance(v, str | int | float) and not isinstance(v, bool):
                    env_attrs[tp(_camel(k))] = v
            self.doc.agent(env_qn, env_attrs)
            self.doc.wasAssociatedWith(qn, env_qn)
        if hpc.get("site"):
            site_qn = self.agent_ns[self.ids.site_local(str(hpc["site"]))]
            self.doc.agent(
                site_qn,
                {
                    PROV_TYPE: _PROV["Organization"],
                    PROV_LABEL: str(hpc["site"]),
                    tp("role"): "hpc-site",
                },
            )
            self.doc.wasAssociatedWith(qn, site_qn)
            if env_qn is not None:
                self.doc.actedOnBehalfOf(env_qn, site_qn)
        used = [q for q in (self.data_entity(r) for r in m.get("inputs") or []) if q is not None]
        for u in used:
            self.doc.used(qn, u)
        self._assets(qn, p.get("assets"))
        for rec in m.get("outputs") or []:
            out = self.data_entity(rec)
            if out is None:
                continue
            self.doc.wasGeneratedBy(out, qn)
            for u in used:
                self.doc.wasDerivedFrom(out, u)

    def _consumed(self, run_qn: QualifiedName, events: Any) -> None:
        """Asset events that started the run: it used what they announced — the upstream
        output's own content-addressed entity when the event carries its sha256 (twinprov's
        output assets do), else the asset by URI; the upstream run informed this one."""
        tp = self.t
        for ev in events if isinstance(events, list) else []:
            if not isinstance(ev, Mapping) or not ev.get("uri"):
                continue
            extra = ev.get("extra") if isinstance(ev.get("extra"), Mapping) else {}
            assert isinstance(extra, Mapping)
            ent = self.data_entity(
                {
                    "sha256": extra.get("sha256"),
                    "size": extra.get("size"),
                    "media_type": extra.get("media_type"),
                    "name": ev.get("name") or ev.get("uri"),
                    "abs_path": extra.get("path"),
                }
            )
            if ent is None:
                ent = self.asset_ns[self.ids.asset_local(str(ev["uri"]))]
                if ent not in self.entities:
                    self.doc.entity(
                        ent,
                        {
                            PROV_TYPE: tp("Asset"),
                            PROV_LABEL: str(ev.get("name") or ev["uri"]),
                            tp("assetUri"): str(ev["uri"]),
                        },
                    )
                    self.entities.add(ent)
            self.doc.used(run_qn, ent)
            if ev.get("source_dag_id") and ev.get("source_run_id"):
                upstream = self.run_ns[
                    self.ids.run_local(str(ev["source_dag_id"]), str(ev["source_run_id"]))
                ]
                self.doc.wasInformedBy(run_qn, upstream)

    def _assets(self, qn: QualifiedName, assets: Any) -> None:
        """Airflow Assets of a hand-written task: files (hashed) are the data entities of the
        manifest; the others are entities named by their URI, their content not read."""
        tp = self.t
        for a in assets if isinstance(assets, list) else []:
            if not isinstance(a, Mapping) or not a.get("uri"):
                continue
            uri = str(a["uri"])
            if not a.get("sha256"):
                ent = self.asset_ns[self.ids.asset_local(uri)]
                attrs: list[tuple[Any, Any]] = [
                    (PROV_TYPE, tp("Asset")),
                    (PROV_LABEL, str(a.get("name") or uri)),
                    (tp("assetUri"), uri),
                    (tp("content"), str(a.get("content") or "not read")),
                ]
                if ent not in self.entities:
                    self.doc.entity(ent, attrs)
                    self.entities.add(ent)
                if a.get("direction") == "inlet":
                    self.doc.used(qn, ent)
                else:
                    self.doc.wasGeneratedBy(ent, qn)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _literal(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)


def build_document(ids: Ids, facts: RunFacts, events: Iterable[TaskEvent]) -> ProvDocument:
    """The PROV document of one run."""
    return _Builder(ids, facts).build(collapse_tries(events))


def add_document_copy(
    doc: ProvDocument,
    ids: Ids,
    dag_id: str,
    run_id: str,
    *,
    location: str,
    pid: str,
    parent_pid: str | None = None,
) -> None:
    """Record in ``doc`` that a copy of the run's PROV document is kept at ``location`` (e.g. a
    yProvStore document): the document is a ``prov:Bundle`` entity, ``prov:atLocation`` is the
    copy, ``twinprov:yprovPid`` its persistent identifier (``twinprov:yprovParentPid`` the
    version it continues), ``twinprov:provenanceOf`` the run."""
    tp = doc.add_namespace("twinprov", VOCAB)
    run_ns = doc.add_namespace("run", ids.run_ns)
    attrs: dict[Any, Any] = {
        PROV_TYPE: _PROV["Bundle"],
        PROV_LABEL: f"PROV document of {dag_id} {run_id}",
        PROV_LOCATION: location,
        tp["yprovPid"]: pid,
        tp["provenanceOf"]: run_ns[ids.run_local(dag_id, run_id)],
    }
    if parent_pid:
        attrs[tp["yprovParentPid"]] = parent_pid
    doc.entity(run_ns[f"{ids.run_local(dag_id, run_id)}/prov"], attrs)
