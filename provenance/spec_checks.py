"""The semantic checks of a workflow spec: what the pydantic models cannot say.

References between steps, params and placeholders, cycles, reserved names, paths that leave the
workspace, images, quantities, walltimes, schedules and secrets per target.
:func:`semantic_issues` runs them all and names every mistake with its field path.
"""

from __future__ import annotations

__all__ = ["semantic_issues", "suite_candidates"]

import graphlib
import itertools
import re
from pathlib import Path, PurePosixPath

from twinprov.provenance.errors import SpecIssue
from twinprov.provenance.spec_model import (
    PUBLISH_TASK_ID,
    RERUN_PARAM,
    Param,
    SecretEnv,
    Step,
    WorkflowSpec,
    placeholders,
    render,
)

_REF = re.compile(r"^(params|inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_WALLTIME = re.compile(r"^(\d+-)?\d{1,3}:\d{2}:\d{2}$")
_CPU = re.compile(r"^\d+(\.\d+)?m?$")
_SECRETISH = re.compile(
    r"(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL)"
)
_INTERLINK_VOLUMES = {"emptyDir", "configMap", "secret"}


def _unsafe_path(path: str) -> str | None:
    if not path or path.strip() != path:
        return "must be a non-empty relative path"
    p = PurePosixPath(path)
    if p.is_absolute() or re.match(r"^[A-Za-z]:[\\/]", path) or path.startswith("~"):
        return "must be relative to the run workspace, not absolute"
    if ".." in p.parts or "\\" in path:
        return "must not leave the run workspace ('..')"
    return None


def _check_param(name: str, p: Param) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    where = f"params.{name}.default"
    py = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,)}[p.type]
    d = p.default
    if isinstance(d, bool) and p.type != "boolean" or not isinstance(d, py):
        issues.append(SpecIssue(where, f"{d!r} is not of type {p.type}"))
    if p.enum is not None and not p.enum:
        issues.append(SpecIssue(f"params.{name}.enum", "is empty: list at least one value"))
    elif p.enum is not None and d not in p.enum:
        issues.append(SpecIssue(where, f"{d!r} is not one of {p.enum}"))
    if isinstance(d, int | float) and not isinstance(d, bool):
        if p.minimum is not None and d < p.minimum:
            issues.append(SpecIssue(where, f"{d} is below minimum {p.minimum}"))
        if p.maximum is not None and d > p.maximum:
            issues.append(SpecIssue(where, f"{d} is above maximum {p.maximum}"))
    return issues


def _image_issue(image: str | None) -> str | None:
    if not image:
        return "a container image is required for this target"
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image '{image}' has neither a tag nor a digest (write name:tag or name@sha256:…)"
    return None


def suite_candidates(spec: WorkflowSpec, suite: str, base_dir: Path) -> list[Path]:
    """Every suite file a (possibly parametrized) suite path can name."""
    refs = [_REF.match(r) for r in placeholders(suite)]
    names = [m.group(2) for m in refs if m and m.group(1) == "params" and m.group(2) in spec.params]
    if len(names) != len(refs):
        return []
    if not names:
        return [base_dir / suite]
    choices = []
    for name in names:
        p = spec.params[name]
        choices.append([str(v) for v in p.enum] if p.enum is not None else [str(p.default)])
    out = []
    for combo in itertools.product(*choices):
        values = {f"params.{n}": v for n, v in zip(names, combo, strict=True)}
        out.append(base_dir / render(suite, values))
    return out


def _secret_issues(where: str, sec: SecretEnv, target: str) -> list[SpecIssue]:
    kube = sec.secret is not None or sec.key is not None
    given = [kube, sec.connection is not None, sec.variable is not None]
    if sum(given) != 1:
        return [SpecIssue(where, "give exactly one of 'secret' + 'key', 'connection', 'variable'")]
    if kube and (sec.secret is None or sec.key is None):
        return [SpecIssue(where, "a Kubernetes Secret needs both 'secret' and 'key'")]
    if target == "local" and kube:
        return [
            SpecIssue(
                where,
                "the local backend cannot read a Kubernetes Secret; use 'connection:' or "
                "'variable:' (Airflow's secrets)",
            )
        ]
    if target != "local" and not kube:
        return [
            SpecIssue(
                where,
                f"a {target} step cannot take an Airflow {sec.source} (its value would be written "
                "into the pod spec); put it in a Kubernetes Secret and use 'secret:' + 'key:'",
            )
        ]
    if sec.connection is None and "field" in sec.model_fields_set:
        return [SpecIssue(f"{where}.field", "only with 'connection:'")]
    return []


def _step_issues(spec: WorkflowSpec, i: int, s: Step, base_dir: Path | None) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    where = f"steps[{i}]"
    target = spec.target_of(s)
    for j, o in enumerate(s.outputs):
        check = o.validation
        if check is None:
            continue
        cw = f"{where}.outputs[{j}].validation"
        if (check.suite is None) == (check.expectations is None):
            issues.append(SpecIssue(cw, "give either 'suite' (a file) or 'expectations'"))
        elif check.suite is not None and base_dir is not None:
            for suite in suite_candidates(spec, check.suite, base_dir):
                if not suite.is_file():
                    issues.append(SpecIssue(f"{cw}.suite", f"suite file {suite} does not exist"))
            for ref in placeholders(check.suite):
                m = _REF.match(ref)
                if not m or m.group(1) != "params" or m.group(2) not in spec.params:
                    issues.append(
                        SpecIssue(
                            f"{cw}.suite", f"only ${{params.NAME}} may be used, not '${{{ref}}}'"
                        )
                    )
    for key, value in s.env.items():
        if _SECRETISH.search(key.upper()) and not placeholders(value):
            issues.append(
                SpecIssue(
                    f"{where}.env.{key}",
                    "looks like a secret written inline; use 'secrets:' (a Kubernetes Secret)",
                )
            )
    if s.resources is not None:
        if s.resources.memory is not None and not _QUANTITY.match(s.resources.memory):
            issues.append(
                SpecIssue(
                    f"{where}.resources.memory",
                    f"'{s.resources.memory}' is not a quantity like 512Mi or 4Gi",
                )
            )
        if s.resources.cpu is not None and not _CPU.match(str(s.resources.cpu)):
            issues.append(
                SpecIssue(f"{where}.resources.cpu", f"'{s.resources.cpu}' is not like 2 or 500m")
            )
    for k, sec in enumerate(s.secrets):
        issues += _secret_issues(f"{where}.secrets[{k}]", sec, target)
    if target == "local":
        for field in ("volumes", "kubernetes", "hpc"):
            if getattr(s, field):
                issues.append(
                    SpecIssue(f"{where}.{field}", "only for the kubernetes and interlink targets")
                )
        return issues
    bad = _image_issue(spec.image_of(s))
    if bad:
        issues.append(SpecIssue(f"{where}.image", bad))
    hpc = s.hpc or spec.defaults.hpc
    if hpc is not None and hpc.walltime is not None and not _WALLTIME.match(hpc.walltime):
        issues.append(
            SpecIssue(f"{where}.hpc.walltime", f"'{hpc.walltime}' is not HH:MM:SS or D-HH:MM:SS")
        )
    if target == "kubernetes" and s.hpc is not None:
        issues.append(SpecIssue(f"{where}.hpc", "only for the interlink target"))
    if target == "interlink":
        for k, v in enumerate(s.volumes):
            if v.type not in _INTERLINK_VOLUMES:
                issues.append(
                    SpecIssue(
                        f"{where}.volumes[{k}].type",
                        f"interLink serves only {', '.join(sorted(_INTERLINK_VOLUMES))} volumes, "
                        f"not {v.type}",
                    )
                )
    return issues


_PRESETS = {
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
    "@annually",
}


def _schedule_issue(where: str, schedule: str | None) -> SpecIssue | None:
    if schedule is None or schedule in _PRESETS:
        return None
    from croniter import croniter

    if croniter.is_valid(schedule):
        return None
    return SpecIssue(
        where, f"'{schedule}' is neither a preset ({', '.join(sorted(_PRESETS))}) nor a cron line"
    )


def _build_issues(spec: WorkflowSpec, i: int, step: Step, base_dir: Path | None) -> list[SpecIssue]:
    """The step's ``build`` (Dockerfile) must be a file inside the spec's folder."""
    build = spec.build_of(step)
    if build is None or base_dir is None:
        return []
    where = f"steps[{i}].build" if step.build else "defaults.build"
    path = (base_dir / build).resolve()
    if base_dir.resolve() not in path.parents:
        return [SpecIssue(where, f"'{build}' is outside the spec's folder")]
    if not path.is_file():
        return [SpecIssue(where, f"no file '{build}' beside the spec (a Dockerfile is expected)")]
    return []


def semantic_issues(spec: WorkflowSpec, base_dir: Path | None = None) -> list[SpecIssue]:
    """Every mistake of a spec the models let through (``base_dir``: where suite files are
    looked for; ``None``: not looked for)."""
    issues: list[SpecIssue] = []
    for where, schedule in (
        ("schedule", spec.schedule),
        (
            "reproducibility.schedule",
            spec.reproducibility.schedule if spec.reproducibility else None,
        ),
    ):
        wrong = _schedule_issue(where, schedule)
        if wrong is not None:
            issues.append(wrong)
    for i, s in enumerate(spec.steps):
        issues += _step_issues(spec, i, s, base_dir)
        issues += _build_issues(spec, i, s, base_dir)
    for name, p in spec.params.items():
        issues += _check_param(name, p)
        if name == RERUN_PARAM:
            issues.append(SpecIssue(f"params.{name}", "reserved: every workflow has it (reruns)"))
    ids = [s.id for s in spec.steps]
    seen: set[str] = set()
    outputs: dict[str, set[str]] = {}
    paths: dict[str, str] = {}
    for i, s in enumerate(spec.steps):
        where = f"steps[{i}]"
        if s.id == PUBLISH_TASK_ID:
            issues.append(SpecIssue(f"{where}.id", f"'{s.id}' is reserved for the publish task"))
        if s.id in seen:
            issues.append(SpecIssue(f"{where}.id", f"duplicate step id '{s.id}'"))
        seen.add(s.id)
        names: set[str] = set()
        for j, o in enumerate(s.outputs):
            if o.name in names:
                issues.append(SpecIssue(f"{where}.outputs[{j}].name", f"duplicate '{o.name}'"))
            names.add(o.name)
            bad = _unsafe_path(o.path)
            if bad:
                issues.append(SpecIssue(f"{where}.outputs[{j}].path", f"'{o.path}' {bad}"))
            elif str(PurePosixPath(o.path)) in paths:
                other = paths[str(PurePosixPath(o.path))]
                issues.append(
                    SpecIssue(
                        f"{where}.outputs[{j}].path", f"'{o.path}' is also written by {other}"
                    )
                )
            else:
                paths[str(PurePosixPath(o.path))] = s.id
        outputs.setdefault(s.id, set()).update(names)
    for i, s in enumerate(spec.steps):
        where = f"steps[{i}]"
        for j, need in enumerate(s.needs):
            if need not in ids:
                issues.append(SpecIssue(f"{where}.needs[{j}]", f"no step '{need}'"))
            elif need == s.id:
                issues.append(SpecIssue(f"{where}.needs[{j}]", "a step cannot need itself"))
        in_names: set[str] = set()
        for j, inp in enumerate(s.inputs):
            iw = f"{where}.inputs[{j}].from"
            if inp.name in in_names:
                issues.append(SpecIssue(f"{where}.inputs[{j}].name", f"duplicate '{inp.name}'"))
            in_names.add(inp.name)
            src, _, item = inp.from_.partition(".")
            if not item:
                issues.append(
                    SpecIssue(iw, f"'{inp.from_}' must be 'STEP.OUTPUT' or 'params.NAME'")
                )
            elif src == "params":
                if item not in spec.params:
                    issues.append(SpecIssue(iw, f"no param '{item}' provides '{inp.name}'"))
            elif src not in ids:
                issues.append(SpecIssue(iw, f"no step '{src}' provides '{inp.name}'"))
            elif src == s.id:
                issues.append(SpecIssue(iw, "a step cannot read its own output"))
            elif item not in outputs.get(src, set()):
                issues.append(SpecIssue(iw, f"step '{src}' has no output '{item}'"))
        refs = {"params": set(spec.params), "inputs": in_names, "outputs": outputs.get(s.id, set())}
        texts = [(f"command[{k}]", t) for k, t in enumerate(s.command)]
        texts += [(f"args[{k}]", t) for k, t in enumerate(s.args)]
        texts += [(f"env.{k}", t) for k, t in s.env.items()]
        for field, text in texts:
            for ref in placeholders(text):
                m = _REF.match(ref)
                if ref == "workflow_dir":
                    continue
                if not m:
                    issues.append(
                        SpecIssue(f"{where}.{field}", f"unknown placeholder '${{{ref}}}'")
                    )
                elif m.group(2) not in refs[m.group(1)]:
                    kind = m.group(1)[:-1]
                    issues.append(
                        SpecIssue(f"{where}.{field}", f"'${{{ref}}}': no {kind} '{m.group(2)}'")
                    )
    issues += _cycle_issues(spec, set(ids))
    return issues


def _cycle_issues(spec: WorkflowSpec, ids: set[str]) -> list[SpecIssue]:
    graph = {s.id: [u for u in spec.upstream_of(s) if u in ids and u != s.id] for s in spec.steps}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        cycle = list(reversed(e.args[1]))  # graphlib names it from the waiting end
        return [SpecIssue("steps", "cycle in needs: " + " -> ".join(cycle))]
    return []
