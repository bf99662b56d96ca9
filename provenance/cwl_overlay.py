"""Where a CWL document's steps run: the overlay file beside it, so the CWL stays as written.

``<stem>.twinprov.yml`` next to ``<stem>.cwl`` places the steps on the local backend, a
Kubernetes cluster or an HPC site behind interLink, with the same blocks a workflow spec uses
(``target``, ``kubernetes``, ``interlink``, ``hpc``, ``resources``)::

    defaults:
      target: interlink
      kubernetes: {namespace: dt}
      hpc: {site: vega, partition: cpu, walltime: "00:30:00"}
    steps:
      select:
        target: kubernetes
        resources: {cpu: 2, memory: 4Gi}     # instead of the tool's ResourceRequirement
      publish:
        hpc: {walltime: "01:00:00"}

The image of a step is its ``DockerRequirement`` (``image`` here only for a tool that has
none). Without an overlay every step runs on the local backend, unless a run names another.
"""

from __future__ import annotations

__all__ = ["CwlOverlay", "StepPlacement", "belongs_to_cwl", "load_overlay", "overlay_beside"]

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from twinprov.provenance import safe_yaml
from twinprov.provenance.errors import SpecError, SpecIssue
from twinprov.provenance.spec_model import Defaults, Hpc, Kubernetes, Resources, Target

OVERLAY_SUFFIX = ".twinprov.yml"


class StepPlacement(BaseModel):
    """Placement of one CWL step (every field optional: the defaults apply)."""

    model_config = ConfigDict(extra="forbid")

    target: Target | None = None
    image: str | None = None
    resources: Resources | None = None
    kubernetes: Kubernetes | None = None
    hpc: Hpc | None = None


class CwlOverlay(BaseModel):
    """The overlay file: ``defaults`` (as in a spec) and ``steps`` by CWL step id."""

    model_config = ConfigDict(extra="forbid")

    defaults: Defaults = Field(default_factory=Defaults)
    steps: dict[str, StepPlacement] = Field(default_factory=dict)

    def target_of(self, step_id: str, backend: str | None = None) -> str:
        """The step's target: ``backend`` (a run's override), else the step's, else the
        defaults'."""
        if backend:
            return backend
        placed = self.steps.get(step_id)
        return (placed.target if placed and placed.target else None) or self.defaults.target


def overlay_beside(cwl_path: Path) -> Path:
    """``<stem>.twinprov.yml`` next to the CWL document."""
    return cwl_path.with_name(cwl_path.stem + OVERLAY_SUFFIX)


def belongs_to_cwl(path: Path) -> bool:
    """``<stem>.twinprov.yml`` or ``<stem>.job.{yml,yaml}`` next to ``<stem>.cwl``: a CWL
    document's overlay or job, not a workflow spec."""
    for suffix in (OVERLAY_SUFFIX, ".job.yml", ".job.yaml"):
        if path.name.endswith(suffix):
            stem = path.name[: -len(suffix)]
            if path.with_name(stem + ".cwl").is_file():
                return True
    return False


def load_overlay(cwl_path: Path, step_ids: list[str]) -> CwlOverlay:
    """The overlay of a CWL document (an empty one if there is no file).

    Raises:
        SpecError: the file is not valid YAML, has unknown keys or wrong values, or places a
            step the document does not have (every mistake named, with the file).
    """
    path = overlay_beside(cwl_path)
    if not path.is_file():
        return CwlOverlay()
    source = str(path)
    safe_yaml.check_size(path.stat().st_size, source)
    try:
        data = safe_yaml.load(path.read_text(encoding="utf-8"), source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise SpecError(source, [SpecIssue(where, f"not valid YAML: {e}")]) from e
    if data is None:
        return CwlOverlay()
    if not isinstance(data, dict):
        raise SpecError(source, [SpecIssue("", "an overlay must be a YAML mapping")])
    try:
        overlay = CwlOverlay.model_validate(data)
    except ValidationError as e:
        issues = [SpecIssue(".".join(str(x) for x in err["loc"]), err["msg"]) for err in e.errors()]
        raise SpecError(source, issues) from e
    unknown = sorted(set(overlay.steps) - set(step_ids))
    if unknown:
        raise SpecError(
            source,
            [
                SpecIssue(
                    f"steps.{s}", f"{cwl_path.name} has no step '{s}' ({', '.join(step_ids)})"
                )
                for s in unknown
            ],
        )
    return overlay
