"""Check a crate folder against an RO-Crate profile with ``rocrate-validator``, offline.

The validator fetches two JSON-LD contexts over HTTP. Nothing here may reach the network, so a
requests-cache SQLite file is filled first from the copies shipped in ``data/jsonld-contexts/``
(for the ``https``/``http`` and ``…/context.json`` spellings of each URL), and the validator
runs with ``--offline`` against it. It runs in a child process: the validator patches rdflib's
JSON-LD loader process-wide and keeps a singleton HTTP session, neither of which belongs in a
worker that publishes provenance.

Needs the PyPI package ``roc-validator`` (which brings ``requests-cache``).
"""

from __future__ import annotations

__all__ = [
    "CONTEXT_FILES",
    "ConformanceIssue",
    "ConformanceReport",
    "check_conformance",
    "prefill_context_cache",
]

import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinprov.ro_crates.errors import ConformanceError

_DATA = Path(__file__).with_name("data") / "jsonld-contexts"
_INSTALL_HINT = "install it with: pip install 'roc-validator>=0.13,<0.14'"

CONTEXT_FILES: Mapping[str, Path] = {
    "w3id.org/ro/crate/1.1/context": _DATA / "ro-crate-1.1-context.jsonld",
    "w3id.org/ro/terms/workflow-run/context": _DATA / "workflow-run-context.jsonld",
}
"""Offline stand-ins for the JSON-LD contexts, by URL without scheme."""

DEFAULT_PROFILE = "provenance-run-crate-0.5"
SEVERITIES = ("REQUIRED", "RECOMMENDED", "OPTIONAL")


@dataclass(frozen=True)
class ConformanceIssue:
    """One failed check."""

    severity: str
    check: str
    """Fully qualified check id, e.g. ``process-run-crate-0.5_3.2``."""
    name: str
    message: str
    entity: str | None = None
    property: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        where = f" [{self.entity}]" if self.entity else ""
        return f"{self.severity} {self.check}{where}: {self.message}"


@dataclass(frozen=True)
class ConformanceReport:
    """What the validator found in one crate."""

    crate: Path
    profile: str
    level: str
    issues: tuple[ConformanceIssue, ...]
    skipped_checks: int
    raw: Mapping[str, Any]

    @property
    def required(self) -> int:
        """Number of REQUIRED-level (MUST) issues."""
        return self.count("REQUIRED")

    @property
    def recommended(self) -> int:
        """Number of RECOMMENDED-level (SHOULD) issues."""
        return self.count("RECOMMENDED")

    @property
    def conforms(self) -> bool:
        """No REQUIRED issue, and every check ran."""
        return self.required == 0 and self.skipped_checks == 0

    def count(self, severity: str) -> int:
        """Number of issues of one severity."""
        return sum(1 for i in self.issues if i.severity == severity)

    def messages(self, severity: str | None = None) -> list[str]:
        """The issues as lines (of one severity, or all), sorted."""
        return sorted(str(i) for i in self.issues if severity in (None, i.severity))


def _variants(url: str) -> list[str]:
    out = []
    for scheme in ("https", "http"):
        for tail in ("", ".json", ".jsonld", "/"):
            out.append(f"{scheme}://{url}{tail}")
    return out


def prefill_context_cache(
    cache_path: Path, contexts: Mapping[str, Path] | None = None
) -> list[str]:
    """Fill a requests-cache SQLite file so the validator gets the contexts without a network.

    Args:
        cache_path: the cache *name* given to ``rocrate-validator --cache-path`` (the backend
            adds ``.sqlite``).
        contexts: document for each URL (without scheme); default :data:`CONTEXT_FILES`.

    Returns:
        The URLs now answered from the cache.

    Raises:
        ConformanceError: requests-cache is not installed.
    """
    try:
        import requests
        from requests.adapters import BaseAdapter, HTTPAdapter
        from requests_cache import CachedSession
        from urllib3.response import HTTPResponse
    except ImportError as e:
        raise ConformanceError(
            f"requests-cache is needed to check crates offline; {_INSTALL_HINT}"
        ) from e

    docs: dict[str, bytes] = {}
    for url, path in (contexts or CONTEXT_FILES).items():
        body = Path(path).read_bytes()
        for variant in _variants(url):
            docs[variant] = body

    class _LocalFiles(BaseAdapter):
        """Answers the context URLs from local files; anything else is a 404."""

        def send(self, request: Any, *_args: Any, **_kwargs: Any) -> requests.Response:
            body = docs.get(request.url)
            status = 200 if body is not None else 404
            body = body if body is not None else b""
            raw = HTTPResponse(
                body=io.BytesIO(body),
                headers={"Content-Type": "application/ld+json", "Content-Length": str(len(body))},
                status=status,
                preload_content=False,
                decode_content=False,
                request_url=request.url,
            )
            return HTTPAdapter().build_response(request, raw)

        def close(self) -> None:
            pass

    cache_path.parent.mkdir(parents=True, exist_ok=True)
    session = CachedSession(
        cache_name=str(cache_path),
        backend="sqlite",
        expire_after=-1,
        allowable_methods=("GET",),
        allowable_codes=(200, 302, 404),
    )
    try:
        session.mount("https://", _LocalFiles())
        session.mount("http://", _LocalFiles())
        for url in docs:
            if session.get(url).status_code != 200:
                raise ConformanceError(f"could not cache {url}")
    finally:
        session.close()  # type: ignore[no-untyped-call]
    return sorted(docs)


def _issue(raw: Mapping[str, Any]) -> ConformanceIssue:
    check = raw.get("check") or {}
    value = raw.get("violatingPropertyValue")
    return ConformanceIssue(
        severity=str(raw.get("severity") or check.get("severity") or "UNKNOWN"),
        check=str(check.get("identifier") or ""),
        name=str(check.get("name") or ""),
        message=" ".join(str(raw.get("message") or "").split()),
        entity=raw.get("violatingEntity"),
        property=raw.get("violatingProperty"),
        value=None if value is None else str(value),
    )


def check_conformance(
    crate_dir: str | Path,
    *,
    profile: str = DEFAULT_PROFILE,
    level: str = "recommended",
    cache_dir: Path | None = None,
    timeout: float = 600.0,
    python: str | None = None,
) -> ConformanceReport:
    """Validate a crate folder offline and return every issue at ``level`` or above.

    Args:
        crate_dir: the crate folder (the validator's JSON output cannot handle a ``.zip``).
        profile: validator profile id; by default ``provenance-run-crate-0.5``, which includes
            Workflow Run Crate, Process Run Crate, Workflow RO-Crate and RO-Crate 1.1.
        level: ``required``, ``recommended`` or ``optional``.
        cache_dir: where to keep the prefilled HTTP cache (default: a temporary folder).
        timeout: seconds before the validator is stopped.
        python: interpreter that has ``roc-validator`` (default: this one); lets the validator
            live in a tool environment of its own (it pins ``rich<14``).

    Raises:
        ConformanceError: the validator is not installed, crashed or wrote no report.
    """
    crate = Path(crate_dir).absolute()
    if not (crate / "ro-crate-metadata.json").is_file():
        raise ConformanceError(f"{crate} is not a crate folder (no ro-crate-metadata.json)")
    with tempfile.TemporaryDirectory(prefix="twinprov-conformance-") as tmp:
        cache = (cache_dir or Path(tmp)) / "http-cache"
        prefill_context_cache(cache)
        report = Path(tmp) / "report.json"
        cmd = [
            python or sys.executable,
            "-c",
            "from rocrate_validator.cli import cli; cli()",
            "--no-interactive",
            "--disable-color",
            "validate",
            "--profile-identifier",
            profile,
            "--requirement-severity",
            level,
            "--offline",
            "--cache-path",
            str(cache),
            "--skip-availability-check",
            "--no-paging",
            "--output-format",
            "json",
            "--output-file",
            str(report),
            str(crate),
        ]
        env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise ConformanceError(f"rocrate-validator took more than {timeout:.0f} s") from e
        if not report.is_file():
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
            if "No module named 'rocrate_validator'" in tail:
                raise ConformanceError(f"rocrate-validator is not installed; {_INSTALL_HINT}")
            raise ConformanceError(
                f"rocrate-validator wrote no report (exit {proc.returncode}):\n{tail}"
            )
        try:
            raw = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ConformanceError(f"unreadable rocrate-validator report: {e}") from e
    issues = tuple(
        sorted(
            (_issue(i) for i in raw.get("issues") or []),
            key=lambda i: (SEVERITIES.index(i.severity) if i.severity in SEVERITIES else 9, str(i)),
        )
    )
    return ConformanceReport(
        crate=crate,
        profile=profile,
        level=level,
        issues=issues,
        skipped_checks=int(raw.get("skipped_checks") or 0),
        raw=raw,
    )
