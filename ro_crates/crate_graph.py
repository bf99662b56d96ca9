"""The crate's graph being described: the rocrate crate, and adding entities to it.

The base of the describing classes (:mod:`~twinprov.ro_crates.crate_workflow`,
:mod:`~twinprov.ro_crates.crate_actions`, :mod:`~twinprov.ro_crates.crate_describe`): it holds
the run (``data``), its :class:`~twinprov.ro_crates.crate_plan.CratePlan` and the crate.
"""

from __future__ import annotations

__all__ = ["CrateGraph"]

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rocrate.model.entity import Entity

from twinprov.ro_crates._rocrate_compat import add_entity, add_placed_file, new_crate
from twinprov.ro_crates.crate_plan import CratePlan
from twinprov.ro_crates.crate_terms import WFRUN_CONTEXT, crate_base, person_id, sha256_id, tool_id


class CrateGraph:
    """One run's crate, described entity by entity (its payload placed by ``plan``)."""

    def __init__(self, plan: CratePlan) -> None:
        self.plan = plan
        self.data = plan.data
        self.root = plan.root
        self.wf = plan.wf
        self.steps = plan.steps
        self.tries = plan.tries
        self.crate = new_crate(WFRUN_CONTEXT)
        self.copied = 0
        self.referenced = 0
        self.missing = 0
        self.mentions: list[str] = []
        self.param_values: list[str] = []
        self.main_id = ""
        self.config_ids: list[str] = []
        """Configuration files of the engine run (the spec, the settings)."""
        base_uri = self.data.publication.base_uri
        run = self.data.run
        self.software_base = crate_base(base_uri, run.dag_id, run.run_id) if base_uri else ""
        """Prefix of the software entities' ids: absolute under ``crate_base_uri``, else none."""

    def add(self, ident: str, types: str | list[str], props: Mapping[str, Any]) -> Entity:
        """A contextual entity (``props`` already JSON-LD; empty values left out)."""
        return add_entity(self.crate, ident, types, props)

    def add_file(self, source: Path | str, dest: str | None, props: Mapping[str, Any]) -> Entity:
        """A data entity: ``source`` already copied to ``dest`` in the crate, or a URI."""
        return add_placed_file(self.crate, source, dest, props)

    def software_id(self, fragment: str) -> str:
        """The id of a software entity (``#…``): absolute under ``crate_base_uri`` if set."""
        return self.software_base + fragment

    def tool(self, step: str) -> str:
        """The id of the SoftwareApplication a step runs."""
        return self.software_id(tool_id(step))

    def add_person(self, name: str, orcid: str | None = None, **extra: Any) -> str:
        ident = person_id(name, orcid)
        if ident not in self.crate:
            self.add(ident, "Person", {"name": name, **extra})
        return ident

    def ids_for_sha(self, sha256: str) -> list[str]:
        found = sorted({d.ident for d in self.plan.by_id.values() if d.record.sha256 == sha256})
        if found:
            return found
        ident = sha256_id(sha256)
        if ident not in self.crate:
            self.add(
                ident,
                "File",
                {"name": f"sha256 {sha256}", "sha256": sha256, "encodingFormat": None},
            )
        return [ident]
