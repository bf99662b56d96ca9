"""The crate's vocabulary: profiles, terms, JSON-LD helpers and fragment identifiers.

Shared by the planning (:mod:`~twinprov.ro_crates.crate_plan`) and the describing modules
(:mod:`~twinprov.ro_crates.crate_graph`, :mod:`~twinprov.ro_crates.crate_workflow`,
:mod:`~twinprov.ro_crates.crate_actions`, :mod:`~twinprov.ro_crates.crate_describe`).
Identifiers are derived from names, never random, so the same run always gets the same ids.
"""

from __future__ import annotations

__all__ = [
    "ACTION_STATUS",
    "BUILD_INSTRUCTIONS",
    "COMPUTATIONAL_WORKFLOW_PROFILE",
    "FORMAL_PARAMETER_PROFILE",
    "PACKED_DATA_DIR",
    "SETTINGS_FILE",
    "packed_data_name",
    "sha256_id",
    "crate_base",
    "PARAM_TYPES",
    "PROFILES",
    "PROV_FORMATS",
    "RO_CRATE_SPEC",
    "SPDX",
    "USAGE_TERMS",
    "WFRUN_CONTEXT",
    "WROC_PROFILE",
    "action_status",
    "camel",
    "earliest",
    "iso_time",
    "latest",
    "literal",
    "person_id",
    "pv_id",
    "q",
    "ref",
    "refs",
    "size_of",
    "step_id",
    "tool_id",
    "tool_param",
    "try_id",
    "wf_output",
    "wf_param",
]

import functools
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twinprov.provenance.ids import CrateIds
from twinprov.ro_crates.model import TaskTry

PROFILES: tuple[tuple[str, str, str], ...] = (
    ("https://w3id.org/ro/wfrun/process/0.5", "Process Run Crate", "0.5"),
    ("https://w3id.org/ro/wfrun/workflow/0.5", "Workflow Run Crate", "0.5"),
    ("https://w3id.org/ro/wfrun/provenance/0.5", "Provenance Run Crate", "0.5"),
    ("https://w3id.org/workflowhub/workflow-ro-crate/1.0", "Workflow RO-Crate", "1.0"),
)
"""The profiles the crate's root ``conformsTo``: (permalink, name, version)."""

RO_CRATE_SPEC = "https://w3id.org/ro/crate/1.1"
WROC_PROFILE = "https://w3id.org/workflowhub/workflow-ro-crate/1.0"
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
FORMAL_PARAMETER_PROFILE = "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
COMPUTATIONAL_WORKFLOW_PROFILE = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
BUILD_INSTRUCTIONS = ("buildInstructions", "https://codemeta.github.io/terms/buildInstructions")
"""The CodeMeta term Provenance Run Crate uses for a step's environment file (not in the RO-Crate
1.1 context, so added to the crate's)."""


def crate_base(base_uri: str, dag_id: str, run_id: str) -> str:
    """The absolute base of one run's crate under the deployment's ``crate_base_uri``."""
    return f"{base_uri.rstrip('/')}/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/"


def sha256_id(sha256: str) -> str:
    """The id of a file the crate names by its checksum (referenced or no longer on disk)."""
    return f"#sha256-{sha256}"


PACKED_DATA_DIR = "data"
"""Where ``twinprov crate RUN --zip --with-data`` (or ``--resolve``) puts referenced files in a
crate: ``data/sha256-<hex>``."""


def packed_data_name(sha256: str) -> str:
    """Crate-relative path of a referenced file's bytes packed with the crate."""
    return f"{PACKED_DATA_DIR}/sha256-{sha256}"


SETTINGS_FILE = "config/twinprov-settings.json"
"""The twinprov settings that shaped the run, in the crate (a configuration file of the engine)."""


ACTION_STATUS = {
    "completed": "http://schema.org/CompletedActionStatus",
    "failed": "http://schema.org/FailedActionStatus",
    "active": "http://schema.org/ActiveActionStatus",
}
"""Values of ``actionStatus`` (plain IRI strings, as the profile's checks expect)."""

PARAM_TYPES = {"string": "Text", "integer": "Integer", "number": "Number", "boolean": "Boolean"}
_QUDT = "https://qudt.org/vocab/unit/"
USAGE_TERMS = {
    "cpu_user_s": ("cpuUserSeconds", _QUDT + "SEC"),
    "cpu_system_s": ("cpuSystemSeconds", _QUDT + "SEC"),
    "duration_s": ("durationSeconds", _QUDT + "SEC"),
    "max_rss_kb": ("maxRssKilobytes", _QUDT + "KibiBYTE"),
}
PROV_FORMATS = {
    ".json": ("application/json", "https://www.w3.org/Submission/prov-json/", "PROV-JSON"),
    ".provn": ("text/provenance-notation", "https://www.w3.org/TR/prov-n/", "PROV-N"),
    ".ttl": ("text/turtle", "https://www.w3.org/TR/prov-o/", "PROV-O"),
    ".jsonld": ("application/ld+json", "https://www.w3.org/TR/prov-o/", "PROV-O"),
}
SPDX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_SUCCESS_STATES = frozenset({"success", "skipped"})


# -- small helpers ------------------------------------------------------------------------------


def q(part: object) -> str:
    return _quote(str(part))


@functools.lru_cache(maxsize=65536)
def _quote(part: str) -> str:
    return quote(part, safe="-._~")


def ref(ident: str) -> dict[str, str]:
    return {"@id": ident}


def refs(idents: Iterable[str]) -> dict[str, str] | list[dict[str, str]] | None:
    """References to ``idents`` (order kept, duplicates dropped); one value is not a list."""
    unique = list(dict.fromkeys(idents))
    if not unique:
        return None
    return ref(unique[0]) if len(unique) == 1 else [ref(i) for i in unique]


def iso_time(value: str | None) -> str | None:
    """ISO 8601 in UTC with millisecond precision and a ``+00:00`` offset (what checks accept)."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds")


def earliest(values: Iterable[str | None]) -> str | None:
    times = [t for t in (iso_time(v) for v in values) if t]
    return min(times) if times else None


def latest(values: Iterable[str | None]) -> str | None:
    times = [t for t in (iso_time(v) for v in values) if t]
    return max(times) if times else None


def action_status(state: str) -> str:
    if state in _SUCCESS_STATES:
        return ACTION_STATUS["completed"]
    if state in ("failed", "up_for_retry", "upstream_failed", "interrupted"):
        return ACTION_STATUS["failed"]
    return ACTION_STATUS["active"]


def size_of(path: str | Path) -> str | None:
    try:
        return str(Path(path).stat().st_size)
    except OSError:
        return None


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def literal(value: Any) -> Any:
    """A param value as a JSON-LD literal: objects and arrays (CWL Files…) as JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# -- fragment identifiers -----------------------------------------------------------------------


def step_id(step: str) -> str:
    return CrateIds.step(step)


def tool_id(step: str) -> str:
    return CrateIds.tool(step)


def tool_param(step: str, kind: str, name: str) -> str:
    return CrateIds.tool_param(step, kind, name)


def wf_param(name: str) -> str:
    return f"#param/{q(name)}"


def wf_output(step: str, name: str) -> str:
    return f"#output/{q(step)}/{q(name)}"


def pv_id(name: str) -> str:
    return f"#pv/{q(name)}"


def try_id(t: TaskTry) -> str:
    return CrateIds.task_try(t.task_id, t.map_index, t.try_number)


def person_id(name: str, orcid: str | None = None) -> str:
    if orcid:
        return orcid if orcid.startswith("http") else f"https://orcid.org/{orcid}"
    return f"#person/{q(name)}"
