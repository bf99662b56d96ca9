"""Describing one run's crate: the root dataset, the README, and the order of it all.

:class:`CrateDescription` plans and copies the payload (its :class:`CratePlan`) while it adds
every entity: the workflow (:mod:`~twinprov.ro_crates.crate_workflow`), then the run
(:mod:`~twinprov.ro_crates.crate_actions`). Lists are sorted and identifiers derived from names,
so describing the same input twice gives the same graph.
"""

from __future__ import annotations

__all__ = ["CrateDescription", "md_code", "md_text"]

import re

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

_MD_SPECIAL = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "\\|", "[": "\\[", "]": "\\]"}
)
_BACKTICKS = re.compile(r"`+")


def md_text(value: object) -> str:
    """A value as Markdown text on one line: no HTML (``<``, ``>``, ``&`` become entities), no
    table-cell break (``|`` escaped), no link (``[``, ``]`` escaped), no new line or block
    (line breaks become spaces)."""
    return " ".join(str(value).split()).translate(_MD_SPECIAL)


def md_code(value: object, *, in_table: bool = False) -> str:
    """A value as a Markdown code span on one line. A span's text is never HTML; its fence is
    longer than any run of backticks inside (CommonMark), so the value cannot close it."""
    text = " ".join(str(value).split())
    if in_table:  # GFM splits table cells at ``|`` even inside code spans
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
        self.add_configuration()
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
        publisher = self.add_publisher()
        if publisher:
            root["publisher"] = ref(publisher)
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
        """A short human summary of the run (deterministic: no build time in it).

        Values from the spec and the run are Markdown text or code spans (:func:`md_text`,
        :func:`md_code`): a Markdown renderer shows them, it does not run them as HTML."""
        run, wf = self.data.run, self.wf
        by_step: dict[str, list[TaskTry]] = {}
        for t in self.tries:
            by_step.setdefault(t.task_id, []).append(t)
        lines = [
            f"# {md_text(wf.name)} run {md_text(run.run_id)}",
            "",
            f"- state: **{md_text(run.state)}**",
            f"- Airflow DAG: {md_code(run.dag_id)}"
            + (f", run type {md_text(run.run_type)}" if run.run_type else ""),
            f"- started: {iso_time(run.start) or 'unknown'}; "
            f"ended: {iso_time(run.end) or 'unknown'}",
        ]
        if run.triggering_user:
            lines.append(f"- triggered by: {md_text(run.triggering_user)}")
        lines += [
            f"- workflow: {md_code('workflow/' + wf.spec_path.name)} version "
            f"{md_text(wf.version)} (sha256 {md_code(wf.spec_sha256)})",
            f"- engine: twinprov {md_text(run.twinprov_version)}"
            + (f" on Apache Airflow {md_text(run.airflow_version)}" if run.airflow_version else ""),
            "",
            "| # | step | tries | last state | outputs |",
            "|---|------|-------|------------|---------|",
        ]
        for s in wf.steps:
            tries = by_step.get(s.id, [])
            state = tries[-1].state if tries else "not run"
            outs = ", ".join(md_code(o.path, in_table=True) for o in s.outputs) or "-"
            lines.append(
                f"| {s.position} | {md_text(s.id)} | {len(tries)} | {md_text(state)} | {outs} |"
            )
        failed = [t for t in self.tries if t.failed]
        if failed:
            lines += ["", "Failures:", ""]
            lines += [
                f"- step {md_code(t.task_id)} try {t.try_number}: {md_text(t.error or t.state)}"
                for t in failed
            ]
        lines += [
            "",
            "Layout: `workflow/` holds the spec and the step programs it runs; `workspace/` the "
            "run's files (at their workspace paths) up to the copy threshold, larger ones are "
            "referenced by sha256 (`#sha256-…`; `data/` holds them when packed with the crate); "
            "`config/` the settings that shaped the run; `prov/` the W3C PROV documents; "
            "`validation/` the "
            "data-quality reports. `ro-crate-metadata.json` describes all of it as a Provenance "
            "Run Crate 0.5 (https://w3id.org/ro/wfrun/provenance/0.5).",
            "",
        ]
        return "\n".join(lines)
