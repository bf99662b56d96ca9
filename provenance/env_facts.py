"""What a step try ran with, as comparable facts, and the differences between two such records.

A step try records (ledger payload, then the crate's ``reproducibility/environment.json``) the
facts a rerun compares to explain a difference:

* ``python``, ``packages`` (``name → version``), ``os`` and ``libc`` of the local environment;
* ``image`` — the container image digest (``sha256:…``) a pod step ran in, or the image as
  written when no digest is known;
* ``host`` and ``site`` — the machine (and HPC site) it ran on;
* ``threads`` — the thread-count variables the step saw (``OMP_NUM_THREADS``…);
* ``programs`` — sha256 of the files of the workflow folder the step's command names.

:func:`comparable_facts` turns a try's recorded payload into that shape (whatever was recorded;
absent facts are left out) and :func:`fact_changes` lists what differs, in words
(``numpy 2.1.3 → 2.2.0``). Core: no Airflow, stdlib only.
"""

from __future__ import annotations

__all__ = [
    "THREAD_VARS",
    "WORKFLOW_DIR",
    "comparable_facts",
    "fact_changes",
    "step_programs",
    "thread_settings",
]

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

THREAD_VARS: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "PYTHONHASHSEED",
)
"""Variables that change how many threads numeric libraries use (and hash seeding): results of
floating-point reductions may depend on them."""

WORKFLOW_DIR = "${workflow_dir}/"

_SHORT = 12
"""Characters of a digest shown in a change (``sha256:ab12cd34ef56…``)."""


def thread_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The thread-count variables set in ``env``."""
    return {k: str(env[k]) for k in THREAD_VARS if k in env}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def step_programs(texts: Iterable[str], workflow_dir: Path) -> dict[str, str]:
    """sha256 of the files of ``workflow_dir`` a step's command names as ``${workflow_dir}/REL``
    (relative name → sha256); names that leave the folder or are not files are left out."""
    found: dict[str, str] = {}
    root = Path(workflow_dir).resolve()
    for text in texts:
        if not text.startswith(WORKFLOW_DIR):
            continue
        rel = text[len(WORKFLOW_DIR) :]
        if not rel or "${" in rel or rel.startswith("/"):
            continue
        path = (root / rel).resolve()
        if root not in path.parents or not path.is_file():
            continue
        name = path.relative_to(root).as_posix()
        if name not in found:
            try:
                found[name] = _sha256(path)
            except OSError:
                continue
    return found


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _packages(env: Mapping[str, Any]) -> dict[str, str]:
    pkgs = env.get("packages")
    if isinstance(pkgs, Mapping):
        return _str_map(pkgs)
    out: dict[str, str] = {}
    for item in pkgs if isinstance(pkgs, list) else ():
        name, sep, version = str(item).partition("==")
        if sep:
            out[name] = version
    return out


def comparable_facts(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable facts of one step try, from its ledger payload (``environment``,
    ``image``/``image_digest``, ``hostname``, ``hpc``, ``threads``, ``programs``) or from a
    :func:`comparable_facts` result (idempotent). Facts not recorded are left out."""
    if payload.get("facts_version") == 1:
        return dict(payload)
    facts: dict[str, Any] = {"facts_version": 1}
    env = payload.get("environment")
    env = env if isinstance(env, Mapping) else {}
    if env.get("kind") == "python":
        for key, fact in (("python_version", "python"), ("os", "os"), ("libc", "libc")):
            if env.get(key):
                facts[fact] = str(env[key])
        if "os" not in facts and env.get("platform"):
            facts["os"] = str(env["platform"])
        pkgs = _packages(env)
        if pkgs:
            facts["packages"] = pkgs
        if env.get("packages_sha256"):
            facts["packages_sha256"] = str(env["packages_sha256"])
    digest = payload.get("image_digest") or (
        env.get("digest") if env.get("kind") == "container" else None
    )
    if payload.get("target") not in (None, "local"):
        image = digest or payload.get("image")
        if image:
            facts["image"] = str(image)
    host = payload.get("hostname") or payload.get("host")
    if host:
        facts["host"] = str(host)
    hpc = payload.get("hpc")
    if isinstance(hpc, Mapping) and hpc.get("site"):
        facts["site"] = str(hpc["site"])
    threads = _str_map(payload.get("threads"))
    if threads or "threads" in payload:
        facts["threads"] = threads
    programs = _str_map(payload.get("programs"))
    if programs:
        facts["programs"] = programs
    return facts


def _short(value: str) -> str:
    head, sep, digest = value.rpartition("sha256:")
    if sep and len(digest) > _SHORT:
        return f"{head}sha256:{digest[:_SHORT]}…"
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"{value[:_SHORT]}…"
    return value


def _map_changes(
    what: str, a: Mapping[str, str], b: Mapping[str, str], *, digests: bool = False
) -> list[str]:
    out = []
    label = (lambda k: f"{what} {k}") if what else (lambda k: k)
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if x == y:
            continue
        fx = _short(x) if (digests and x) else x
        fy = _short(y) if (digests and y) else y
        if x is None:
            out.append(f"{label(k)} added ({fy})")
        elif y is None:
            out.append(f"{label(k)} removed (was {fx})")
        else:
            out.append(f"{label(k)} {fx} → {fy}")
    return out


def fact_changes(original: Mapping[str, Any], rerun: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`comparable_facts` records, in words: programs first
    (``program make.py sha256 ab12… → cd34…``), then packages (``numpy 2.1.3 → 2.2.0``),
    image, interpreter, OS, libc, thread settings, host and site. Facts recorded on one side
    only are not compared (an older crate records fewer)."""
    a, b = comparable_facts(original), comparable_facts(rerun)
    out: list[str] = []
    if "programs" in a and "programs" in b:
        for k in sorted(set(a["programs"]) | set(b["programs"])):
            x, y = a["programs"].get(k), b["programs"].get(k)
            if x == y:
                continue
            if x is None:
                out.append(f"program {k} added")
            elif y is None:
                out.append(f"program {k} removed")
            else:
                out.append(f"program {k} sha256 {_short(x)} → {_short(y)}")
    if "packages" in a and "packages" in b:
        out += _map_changes("", a["packages"], b["packages"])
    elif a.get("packages_sha256") and b.get("packages_sha256") not in (None, a["packages_sha256"]):
        out.append("Python packages changed (one side records only the list's digest)")
    for key, label in (
        ("image", "image"),
        ("python", "Python"),
        ("os", "OS"),
        ("libc", "libc"),
    ):
        if key in a and key in b and a[key] != b[key]:
            out.append(f"{label} {_short(str(a[key]))} → {_short(str(b[key]))}")
    if "threads" in a and "threads" in b:
        for k in sorted(set(a["threads"]) | set(b["threads"])):
            x, y = a["threads"].get(k), b["threads"].get(k)
            if x != y:
                out.append(
                    f"{k} {x if x is not None else 'unset'} → {y if y is not None else 'unset'}"
                )
    for key, label in (("host", "host"), ("site", "site")):
        if key in a and key in b and a[key] != b[key]:
            out.append(f"{label} {a[key]} → {b[key]}")
    return out
