"""Describing one run's crate: the root dataset, the README, and the order of it all.

:class:`CrateDescription` plans and copies the payload (its :class:`CratePlan`) while it adds
every entity: the workflow (:mod:`~twinprov.ro_crates.crate_workflow`), then the run
(:mod:`~twinprov.ro_crates.crate_actions`). Lists are sorted and identifiers derived from names,
so describing the same input twice gives the same graph.
"""

from __future__ import annotations

__all__ = ["CrateDescription"]

from twinprov.ro_crates.crate_actions import RunDescription
from twinprov.ro_crates.crate_terms import (
    PROFILES,
    RO_CRATE_SPEC,
    WROC_PROFILE,
    iso_time,
    ref,
    refs,
)
from twinprov.ro_crates.model import TaskTry


class CrateDescription(RunDescription):
    """Every entity of one run's crate; :meth:`build` makes it (and places the payload)."""

    def build(self) -> None:
        self.plan.plan_files()
        self.plan.verify_and_place()
        self.plan.start_copy()
        try:
            self.describe()
        finally:
            self.plan.finish_copy()

    def describe(self) -> None:
        """Add every entity (the payload may still be copying)."""
        self.add_profiles()
        license_id = self.add_license()
        authors = self.add_authors()
        user = self.add_user()
        engine = self.add_engine()
        main = self.main_id = self.add_workflow(license_id, authors)
        self.add_params()
        self.add_steps()
        self.add_data_entities()
        self.add_actions(engine, user)
        self.add_documents()
        root = self.crate.root_dataset
        run = self.data.run
        root["name"] = f"{self.wf.name} run {run.run_id}"
        root["description"] = (
            f"Provenance of run {run.run_id} of workflow {self.wf.name} {self.wf.version} "
            f"(Airflow DAG {run.dag_id}): {run.state}."
        )
        root["license"] = ref(license_id)
        who = authors or ([user] if user else [])
        if who:
            root["author"] = refs(who)
        root["mainEntity"] = ref(main)
        root["conformsTo"] = refs(p[0] for p in PROFILES)
        root["mentions"] = refs(self.mentions)
        self.crate.metadata["conformsTo"] = [ref(RO_CRATE_SPEC), ref(WROC_PROFILE)]
        readme = self.root / "README.md"
        readme.write_text(self.readme(), encoding="utf-8")
        self.add_file(
            readme,
            "README.md",
            {
                "name": "README",
                "about": ref("./"),
                "encodingFormat": "text/markdown",
                "contentSize": str(readme.stat().st_size),
            },
        )

    def readme(self) -> str:
        """A short human summary of the run (deterministic: no build time in it)."""
        run, wf = self.data.run, self.wf
        by_step: dict[str, list[TaskTry]] = {}
        for t in self.tries:
            by_step.setdefault(t.task_id, []).append(t)
        lines = [
            f"# {wf.name} run {run.run_id}",
            "",
            f"- state: **{run.state}**",
            f"- Airflow DAG: `{run.dag_id}`"
            + (f", run type {run.run_type}" if run.run_type else ""),
            f"- started: {iso_time(run.start) or 'unknown'}; "
            f"ended: {iso_time(run.end) or 'unknown'}",
        ]
        if run.triggering_user:
            lines.append(f"- triggered by: {run.triggering_user}")
        lines += [
            f"- workflow: `workflow/{wf.spec_path.name}` version {wf.version} "
            f"(sha256 `{wf.spec_sha256}`)",
            f"- engine: twinprov {run.twinprov_version}"
            + (f" on Apache Airflow {run.airflow_version}" if run.airflow_version else ""),
            "",
            "| # | step | tries | last state | outputs |",
            "|---|------|-------|------------|---------|",
        ]
        for s in wf.steps:
            tries = by_step.get(s.id, [])
            state = tries[-1].state if tries else "not run"
            outs = ", ".join(f"`{o.path}`" for o in s.outputs) or "-"
            lines.append(f"| {s.position} | {s.id} | {len(tries)} | {state} | {outs} |")
        failed = [t for t in self.tries if t.failed]
        if failed:
            lines += ["", "Failures:", ""]
            lines += [
                f"- step `{t.task_id}` try {t.try_number}: {t.error or t.state}" for t in failed
            ]
        lines += [
            "",
            "Layout: `workflow/` holds the spec and the step programs it runs; `workspace/` the "
            "run's files (at their workspace paths) up to the copy threshold, larger ones are "
            "referenced by `file://` URI; `prov/` the W3C PROV documents; `validation/` the "
            "data-quality reports. `ro-crate-metadata.json` describes all of it as a Provenance "
            "Run Crate 0.5 (https://w3id.org/ro/wfrun/provenance/0.5).",
            "",
        ]
        return "\n".join(lines)
