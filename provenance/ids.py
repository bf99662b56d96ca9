"""Deterministic identifiers: the same fact always gets the same IRI, across processes and runs.

Everything hangs under one configurable base (default ``urn:twinprov:``):

* run            ``<base>run/<dag_id>/<run_id>``            (also the run's named graph)
* task try       ``<run>/task/<task_id>/<map_index>/<try_number>``
* parameter      ``<run>/param/<name>``
* data           ``<base>data/sha256-<hex>``  (content-addressed: same bytes, same entity)
* agents         ``<base>agent/person/<name>``, ``<base>agent/software/<name>-<version>``,
                 ``<base>agent/env/<kind>-<digest>``

and, inside a run's RO-Crate (:class:`CrateIds`, written by the crate builder and read back by
reruns), fragment identifiers such as ``#try/<task_id>/<try_number>`` and
``#tool/<step>/<in|out>/<name>``.
"""

from __future__ import annotations

__all__ = ["VOCAB", "CrateIds", "Ids"]

from dataclasses import dataclass
from urllib.parse import quote, unquote

VOCAB = "urn:twinprov:vocab#"
"""The twinprov vocabulary namespace (terms documented in ``provenance/vocab/twinprov.ttl``)."""


def _q(part: str) -> str:
    return quote(str(part), safe="-._~")


@dataclass(frozen=True)
class Ids:
    """IRI maker for one base."""

    base: str = "urn:twinprov:"

    @property
    def run_ns(self) -> str:
        """Namespace of runs and everything scoped to one run."""
        return f"{self.base}run/"

    @property
    def data_ns(self) -> str:
        """Namespace of content-addressed data entities."""
        return f"{self.base}data/"

    @property
    def agent_ns(self) -> str:
        """Namespace of agents."""
        return f"{self.base}agent/"

    @property
    def asset_ns(self) -> str:
        """Namespace of Airflow Assets twinprov records by URI only (no content read)."""
        return f"{self.base}asset/"

    @staticmethod
    def asset_local(uri: str) -> str:
        """Local part of an asset's IRI within :attr:`asset_ns` (its URI, percent-encoded)."""
        return quote(uri, safe="")

    def asset(self, uri: str) -> str:
        """IRI of an asset known by URI only (``s3://…``, ``postgres://…``)."""
        return self.asset_ns + self.asset_local(uri)

    def run_local(self, dag_id: str, run_id: str) -> str:
        """Local part of a run IRI within :attr:`run_ns`."""
        return f"{_q(dag_id)}/{_q(run_id)}"

    def run(self, dag_id: str, run_id: str) -> str:
        """IRI of a run (and of its named graph)."""
        return self.run_ns + self.run_local(dag_id, run_id)

    def task_local(self, dag_id: str, run_id: str, task_id: str, map_index: int, tr: int) -> str:
        """Local part of a task-try IRI within :attr:`run_ns`."""
        return f"{self.run_local(dag_id, run_id)}/task/{_q(task_id)}/{map_index}/{tr}"

    def param_local(self, dag_id: str, run_id: str, name: str) -> str:
        """Local part of a run parameter's IRI within :attr:`run_ns`."""
        return f"{self.run_local(dag_id, run_id)}/param/{_q(name)}"

    @staticmethod
    def data_local(sha256: str) -> str:
        """Local part of a data entity's IRI within :attr:`data_ns`."""
        return f"sha256-{sha256}"

    def data(self, sha256: str) -> str:
        """IRI of the data entity with these bytes."""
        return self.data_ns + self.data_local(sha256)

    @staticmethod
    def person_local(name: str) -> str:
        """Local part of a person agent within :attr:`agent_ns`."""
        return f"person/{_q(name)}"

    @staticmethod
    def software_local(name: str, version: str) -> str:
        """Local part of a software agent within :attr:`agent_ns`."""
        return f"software/{_q(name)}-{_q(version)}"

    @staticmethod
    def site_local(name: str) -> str:
        """Local part of an HPC or cloud site agent within :attr:`agent_ns`."""
        return f"site/{_q(name)}"

    @staticmethod
    def env_local(kind: str, digest: str) -> str:
        """Local part of an execution environment (image or Python env) within :attr:`agent_ns`."""
        return f"env/{_q(kind)}-{_q(digest)}"


class CrateIds:
    """Fragment identifiers of the entities of a run's RO-Crate (one place for the writer,
    ``twinprov.ro_crates.crate_terms``, and the reader, ``twinprov.app.rerun``)."""

    @staticmethod
    def step(step: str) -> str:
        """The HowToStep of a workflow step."""
        return f"#step/{_q(step)}"

    @staticmethod
    def tool(step: str) -> str:
        """The SoftwareApplication a step runs."""
        return f"#tool/{_q(step)}"

    @staticmethod
    def tool_param(step: str, kind: str, name: str) -> str:
        """A FormalParameter of a step: ``kind`` is ``in`` or ``out``."""
        return f"#tool/{_q(step)}/{kind}/{_q(name)}"

    @staticmethod
    def tool_param_name(fragment: str, step: str, kind: str) -> str | None:
        """The parameter name in ``fragment`` if it is one of ``step``'s ``kind`` parameters."""
        prefix = f"#tool/{_q(step)}/{kind}/"
        return unquote(fragment[len(prefix) :]) if fragment.startswith(prefix) else None

    @staticmethod
    def task_try(task_id: str, map_index: int, try_number: int) -> str:
        """The CreateAction of one task try."""
        task = _q(task_id) if map_index < 0 else f"{_q(task_id)}/{map_index}"
        return f"#try/{task}/{try_number}"

    @staticmethod
    def parse_task_try(fragment: str) -> tuple[str, int, int] | None:
        """``(task_id, map_index, try_number)`` of a :meth:`task_try` id, else ``None``."""
        if not fragment.startswith("#try/"):
            return None
        parts = fragment[len("#try/") :].split("/")
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[1:]):
            return None
        map_index = int(parts[1]) if len(parts) == 3 else -1
        return unquote(parts[0]), map_index, int(parts[-1])
