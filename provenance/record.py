"""The typed run record: what the ledger holds about a run, as frozen records.

Everything above the core (PROV, crate, STAC, pages, CLI, rerun) reads a run through these
records; each has one ``to_dict``/``from_dict`` (the pystac habit), and each rule about them —
how a try's events merge, which try of a task counts, what state a run is in, what a validation
or a verdict says — is written here once.

* :class:`TaskEvent` — one state change of one task try (what the listener records);
* :class:`RunRecord` — a run as the ledger knows it (facts of the run, publication);
* :class:`StepTry` — one task try, merged from its events (:func:`collapse_tries`);
* :class:`FileRecord` and :class:`Manifest` — a file a step wrote, and the step manifest the
  step wrapper printed;
* :class:`ValidationResult` — a data-quality check of one output, bound to its sha256;
* :class:`OutputComparison`, :class:`StepChange` and :class:`Verdict` — a rerun's answer to
  "did it reproduce?", and what changed around the steps.
"""

from __future__ import annotations

__all__ = [
    "INTERRUPTED",
    "FileRecord",
    "Manifest",
    "OutputComparison",
    "RunRecord",
    "GRADES",
    "StepChange",
    "StepTry",
    "TaskEvent",
    "ValidationResult",
    "Verdict",
    "collapse_tries",
    "latest_tries",
    "run_state",
]

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

_FINAL = ("success", "failed", "skipped", "up_for_retry", "upstream_failed")
INTERRUPTED = "interrupted"
"""State of a try that never reported an end although a later try of its task exists."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class TaskEvent:
    """One state change of one task try, with the primitives copied out of Airflow."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    state: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    recorded_at: str = field(default_factory=_now)

    @property
    def try_key(self) -> tuple[str, int, int]:
        """Identifies the task try this event belongs to within its run."""
        return (self.task_id, self.map_index, self.try_number)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the spool's line format)."""
        d = asdict(self)
        d["payload"] = dict(self.payload)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskEvent:
        """The event of :meth:`to_dict`."""
        return cls(**dict(d))


@dataclass(frozen=True)
class RunRecord:
    """A run as the ledger knows it."""

    dag_id: str
    run_id: str
    first_seen: str
    info: Mapping[str, Any]
    state: str | None = None
    ended: str | None = None
    published_at: str | None = None
    published_digest: str | None = None
    stored_digest: str | None = None
    publication: Mapping[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> Mapping[str, Any]:
        """The parameter values the run used (for a rerun: the original's)."""
        p = self.info.get("params")
        return p if isinstance(p, Mapping) else {}

    @property
    def verdict(self) -> Verdict | None:
        """For a published rerun: its reproducibility verdict."""
        v = self.publication.get("verdict")
        return Verdict.from_dict(v) if isinstance(v, Mapping) else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["info"], d["publication"] = dict(self.info), dict(self.publication)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRecord:
        """The record of :meth:`to_dict`."""
        return cls(**dict(d))


@dataclass(frozen=True)
class FileRecord:
    """One file a step read or wrote, as the step manifest reports it."""

    name: str
    path: str
    """Where the file was written: absolute when known, else relative to the run workspace."""
    sha256: str | None
    size: int | None = None
    media_type: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The shape ``twinprov show --json`` prints for an output."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileRecord:
        """From a manifest entry (``abs_path`` preferred over ``path``) or :meth:`to_dict`."""
        return cls(
            name=str(d.get("name") or ""),
            path=str(d.get("abs_path") or d.get("path") or ""),
            sha256=_opt_str(d.get("sha256")),
            size=_opt_int(d.get("size")),
            media_type=_opt_str(d.get("media_type")),
        )


@dataclass(frozen=True)
class Manifest:
    """The step manifest the step wrapper prints as the last log line."""

    exit_code: int | None = None
    outputs: tuple[FileRecord, ...] = ()
    host: str | None = None
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return {
            "exit_code": self.exit_code,
            "outputs": [o.to_dict() for o in self.outputs],
            "host": self.host,
            "errors": list(self.errors),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """From the wrapper's manifest (extra keys are ignored)."""
        return cls(
            exit_code=_opt_int(d.get("exit_code")),
            outputs=tuple(
                FileRecord.from_dict(o) for o in d.get("outputs") or () if isinstance(o, Mapping)
            ),
            host=_opt_str(d.get("host")),
            errors=tuple(str(e) for e in d.get("errors") or ()),
        )


@dataclass(frozen=True)
class ValidationResult:
    """A Great Expectations check of one output, bound to the sha256 it checked."""

    output: str | None
    step: str | None
    sha256: str | None
    success: bool
    skipped: bool = False
    policy: str | None = None
    evaluated: int | None = None
    failed_expectations: tuple[str, ...] = ()
    error: str | None = None
    report: str | None = None
    """The GX result JSON."""
    suite: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    @property
    def passed(self) -> bool:
        """Whether the output passed: checked (not skipped) and every expectation met."""
        return self.success and not self.skipped

    def to_dict(self) -> dict[str, Any]:
        """The shape ``twinprov show --json`` prints under ``validations``."""
        d = asdict(self)
        d["failed_expectations"] = list(self.failed_expectations)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidationResult:
        """From the validation task's ledger payload (a ``ValidationRecord`` as a dict; the
        checksum it was bound to is ``expected_sha256``) or :meth:`to_dict`."""
        return cls(
            output=_opt_str(d.get("output")),
            step=_opt_str(d.get("step")),
            sha256=_opt_str(d.get("expected_sha256") or d.get("sha256")),
            success=bool(d.get("success")),
            skipped=bool(d.get("skipped")),
            policy=_opt_str(d.get("policy")),
            evaluated=_opt_int(d.get("evaluated")),
            failed_expectations=tuple(str(f) for f in d.get("failed_expectations") or ()),
            error=_opt_str(d.get("error")),
            report=_opt_str(d.get("report")),
            suite=_opt_str(d.get("suite")),
            task_id=_opt_str(d.get("task_id")),
            try_number=_opt_int(d.get("try_number")),
        )


@dataclass(frozen=True)
class StepTry:
    """Everything known about one try of one task, merged from its events."""

    task_id: str
    map_index: int
    try_number: int
    state: str
    start: str | None = None
    end: str | None = None
    error: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The step manifest printed by the wrapper, as recorded (empty if none was captured)."""
        m = self.payload.get("manifest")
        return m if isinstance(m, Mapping) else {}

    @property
    def manifest_record(self) -> Manifest:
        """The step manifest as a typed record."""
        return Manifest.from_dict(self.manifest)

    @property
    def validation(self) -> ValidationResult | None:
        """For a validation task's try: what it found; ``None`` for any other task."""
        v = self.payload.get("validation")
        if not isinstance(v, Mapping):
            return None
        return ValidationResult.from_dict(
            {**v, "task_id": self.task_id, "try_number": self.try_number}
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["payload"] = dict(self.payload)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepTry:
        """The try of :meth:`to_dict`."""
        return cls(**dict(d))


def collapse_tries(events: Iterable[TaskEvent]) -> list[StepTry]:
    """Merge each task try's events (running, then success/failed) into one :class:`StepTry`.

    A try that never reported an end while a later try of its task exists was killed or lost:
    it is :data:`INTERRUPTED`, with the reason as its error.
    """
    merged: dict[tuple[str, int, int], dict[str, Any]] = {}
    for ev in events:
        cur = merged.setdefault(
            ev.try_key,
            {"state": ev.state, "payload": {}, "final": False},
        )
        payload = dict(cur["payload"])
        for k, v in ev.payload.items():
            if v is not None:
                payload[k] = v
        cur["payload"] = payload
        if ev.state in _FINAL or not cur["final"]:
            cur["state"] = ev.state
            cur["final"] = cur["final"] or ev.state in _FINAL
    latest: dict[tuple[str, int], int] = {}
    for task_id, map_index, try_number in merged:
        key = (task_id, map_index)
        latest[key] = max(latest.get(key, 0), try_number)
    tries = []
    for (task_id, map_index, try_number), cur in merged.items():
        p = cur["payload"]
        later = latest[(task_id, map_index)]
        if not cur["final"] and later > try_number:
            # it never reported an end, yet Airflow went on: its process was killed or lost
            cur["state"] = INTERRUPTED
            p = {
                **p,
                "error": p.get("error")
                or f"the task process ended without reporting (killed or lost); Airflow went on "
                f"to try {later}",
            }
        tries.append(
            StepTry(
                task_id=task_id,
                map_index=map_index,
                try_number=try_number,
                state=cur["state"],
                start=p.get("start_date"),
                end=p.get("end_date"),
                error=p.get("error"),
                payload=p,
            )
        )
    tries.sort(key=lambda t: (t.start or "", t.task_id, t.map_index, t.try_number))
    return tries


def latest_tries(tries: Iterable[StepTry]) -> list[StepTry]:
    """The last try of each task (and map index): the one whose outcome counts."""
    last: dict[tuple[str, int], StepTry] = {}
    for t in tries:
        key = (t.task_id, t.map_index)
        if key not in last or t.try_number > last[key].try_number:
            last[key] = t
    return list(last.values())


def run_state(tries: Sequence[StepTry]) -> str:
    """``failed`` if any task's last try failed, ``success`` if all succeeded, else ``running``."""
    states = {t.state for t in latest_tries(tries)}
    if not states:
        return "running"
    if states & {"failed", "upstream_failed", INTERRUPTED}:
        return "failed"
    if states <= {"success", "skipped"}:
        return "success"
    return "running"


GRADES: dict[str, str] = {
    "identical": "identical bytes",
    "within_tolerance": "equal within the declared tolerance",
    "values_equal": "same structure and values, different bytes (metadata or encoding)",
    "values_differ": "same structure, different values",
    "structure_differs": "different structure",
    "bytes_differ": "different bytes (no structural comparison for this format)",
    "missing": "missing in the rerun",
    "new": "new in the rerun",
}
"""The grade of one output, original against rerun, and its words for a reviewer."""


@dataclass(frozen=True)
class OutputComparison:
    """One output, original against rerun."""

    step: str
    output: str
    status: str
    """``identical``, ``equal_within_tolerance``, ``differs``, ``missing`` or ``new``."""
    original_sha256: str | None
    rerun_sha256: str | None
    rule: str
    grade: str | None = None
    """A key of :data:`GRADES` (``None`` in verdicts recorded before grades existed)."""
    summary: Mapping[str, Any] = field(default_factory=dict)
    """For numeric outputs whose values differ: ``max_abs_diff``, ``max_rel_diff``,
    ``share_differing`` (of the cells compared), ``cells``; for a different structure: what
    differs (``detail``)."""

    @property
    def same(self) -> bool:
        """Whether the rerun's output counts as the original's."""
        return self.status in ("identical", "equal_within_tolerance")

    @property
    def grade_text(self) -> str:
        """The grade in a reviewer's words, with the numeric summary if there is one."""
        grade = self.grade or {
            "identical": "identical",
            "equal_within_tolerance": "within_tolerance",
            "missing": "missing",
            "new": "new",
        }.get(self.status, "bytes_differ")
        text = GRADES.get(grade, grade)
        s = self.summary
        if "max_abs_diff" in s:
            share = s.get("share_differing")
            text += (
                f" (max abs diff {float(s['max_abs_diff']):.3g}, max rel diff "
                f"{float(s.get('max_rel_diff') or 0.0):.3g}"
                + (
                    f", {100 * float(share):.3g}% of {s.get('cells')} cells differ"
                    if share is not None
                    else ""
                )
                + ")"
            )
        elif s.get("detail"):
            text += f" ({s['detail']})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (with ``grade_text``)."""
        d = asdict(self)
        d["summary"] = dict(self.summary)
        d["grade_text"] = self.grade_text
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OutputComparison:
        """The comparison of :meth:`to_dict`."""
        summary = d.get("summary")
        return cls(
            step=str(d.get("step") or ""),
            output=str(d.get("output") or ""),
            status=str(d.get("status") or ""),
            original_sha256=_opt_str(d.get("original_sha256")),
            rerun_sha256=_opt_str(d.get("rerun_sha256")),
            rule=str(d.get("rule") or ""),
            grade=_opt_str(d.get("grade")),
            summary=dict(summary) if isinstance(summary, Mapping) else {},
        )


@dataclass(frozen=True)
class StepChange:
    """What changed around one step between the original run and the rerun."""

    step: str
    changes: tuple[str, ...]
    """In words, programs first: ``numpy 2.1.3 → 2.2.0``, ``image sha256:ab… → sha256:cd…``."""
    inputs_matched: bool = True
    """Whether the step read the same input bytes as in the original run."""
    diverged: bool = False
    """Whether the step's outputs differ from the original's."""

    @property
    def text(self) -> str:
        """``step: change; change``."""
        return f"{self.step}: " + "; ".join(self.changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["changes"] = list(self.changes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepChange:
        """The change of :meth:`to_dict`."""
        return cls(
            step=str(d.get("step") or ""),
            changes=tuple(str(c) for c in d.get("changes") or ()),
            inputs_matched=bool(d.get("inputs_matched", True)),
            diverged=bool(d.get("diverged")),
        )


@dataclass(frozen=True)
class Verdict:
    """The answer to "did it reproduce?"."""

    status: str
    """``reproduced``, ``differs``, ``failed`` (the rerun itself failed) or ``inputs_changed``."""
    original_run: str | None
    original_crate: str | None = None
    outputs: tuple[OutputComparison, ...] = ()
    first_divergent_step: str | None = None
    notes: tuple[str, ...] = ()
    changes: tuple[StepChange, ...] = ()
    """Every step whose environment or program changed, in step order."""
    likely_cause: str | None = None
    """The first step, in step order, whose inputs matched, whose outputs differ and whose
    environment or program changed: what most likely explains the first divergence."""

    @property
    def cause(self) -> StepChange | None:
        """The :class:`StepChange` of :attr:`likely_cause`."""
        return next((c for c in self.changes if c.step == self.likely_cause), None)

    @classmethod
    def failed(cls, note: str, original_run: str | None = None) -> Verdict:
        """The verdict of a rerun that could not be made or compared."""
        return cls("failed", original_run, notes=(note,))

    @property
    def exit_code(self) -> int:
        """0 reproduced, 1 differs, 2 could not run (or inputs changed)."""
        return {"reproduced": 0, "differs": 1}.get(self.status, 2)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``verdict.json``; with ``exit_code``)."""
        d = asdict(self)
        d["outputs"] = [o.to_dict() for o in self.outputs]
        d["notes"] = list(self.notes)
        d["changes"] = [c.to_dict() for c in self.changes]
        d["exit_code"] = self.exit_code
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        """The verdict of :meth:`to_dict` (``exit_code`` is derived, not read)."""
        return cls(
            status=str(d.get("status") or "failed"),
            original_run=_opt_str(d.get("original_run")),
            original_crate=_opt_str(d.get("original_crate")),
            outputs=tuple(
                OutputComparison.from_dict(o)
                for o in d.get("outputs") or ()
                if isinstance(o, Mapping)
            ),
            first_divergent_step=_opt_str(d.get("first_divergent_step")),
            notes=tuple(str(n) for n in d.get("notes") or ()),
            changes=tuple(
                StepChange.from_dict(c) for c in d.get("changes") or () if isinstance(c, Mapping)
            ),
            likely_cause=_opt_str(d.get("likely_cause")),
        )
