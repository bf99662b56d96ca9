"""The environment a local step runs with: only what a program needs to run, never the
scheduler's own (``AIRFLOW_CONN_*``, database URLs, tokens).

A step gets the variables named here (the process basics: PATH, HOME, locale, proxies, CA
bundles, thread counts), the ones the setting ``step_env_passthrough`` adds (names or
``fnmatch`` patterns, comma-separated), what its spec declares under ``env:``, and its
``secrets:`` (Airflow connections and variables, resolved by the operator).
"""

from __future__ import annotations

__all__ = ["BASE_NAMES", "base_environment"]

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

BASE_NAMES: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TERM",
    "TMPDIR",
    "TMP",
    "TEMP",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "LD_LIBRARY_PATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
    "PYTHONHASHSEED",
    "PYTHONPATH",
    "TWINPROV_HOME",
)
"""Variables every step inherits from the task process, if set there."""


def base_environment(environ: Mapping[str, str], passthrough: Iterable[str] = ()) -> dict[str, str]:
    """The part of ``environ`` a step inherits: :data:`BASE_NAMES` plus ``passthrough``."""
    patterns = [*BASE_NAMES, *(p.strip() for p in passthrough if p.strip())]
    return {k: v for k, v in environ.items() if any(fnmatchcase(k, p) for p in patterns)}
