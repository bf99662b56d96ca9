"""The step wrapper's ConfigMap: ``provenance/stepwrap.py`` (stdlib only) shipped to every step
pod, mounted at :data:`STEPWRAP_PATH` — no image of ours to build. Its name carries the version
and a hash of the wrapper, so pods of one twinprov release never see another release's wrapper."""

from __future__ import annotations

__all__ = [
    "MANAGED_BY",
    "STEPWRAP_KEY",
    "STEPWRAP_PATH",
    "STEPWRAP_VOLUME",
    "ensure_stepwrap_configmap",
    "stepwrap_configmap",
    "stepwrap_configmap_name",
    "stepwrap_source",
]

import hashlib
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from twinprov.provenance import stepwrap

STEPWRAP_PATH = "/opt/twinprov/stepwrap.py"
"""Where the step wrapper appears in every step container (one file: the image's
``/opt/twinprov`` is not hidden, so step programs may live under ``/opt/twinprov/workflow``)."""
STEPWRAP_VOLUME = "twinprov-stepwrap"
STEPWRAP_KEY = "stepwrap.py"
MANAGED_BY = {"app.kubernetes.io/managed-by": "twinprov"}
"""Label of every object twinprov makes on a cluster."""


@lru_cache(maxsize=1)
def stepwrap_source() -> str:
    return Path(stepwrap.__file__).read_text(encoding="utf-8")


def _twinprov_version() -> str:
    try:
        return metadata.version("twinprov")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def stepwrap_configmap_name() -> str:
    """``twinprov-stepwrap-<version>-<sha256 of the wrapper, 10 hex>`` (DNS-1123 safe)."""
    version = re.sub(r"[^a-z0-9]+", "-", _twinprov_version().lower()).strip("-")
    digest = hashlib.sha256(stepwrap_source().encode()).hexdigest()[:10]
    return f"twinprov-stepwrap-{version}-{digest}"


def stepwrap_configmap(namespace: str) -> k8s.V1ConfigMap:
    """The ConfigMap that ships ``provenance/stepwrap.py`` to every step pod of ``namespace``."""
    return k8s.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=k8s.V1ObjectMeta(
            name=stepwrap_configmap_name(),
            namespace=namespace,
            labels={**MANAGED_BY, "app.kubernetes.io/version": _twinprov_version()},
            annotations={
                "twinprov/stepwrap-sha256": hashlib.sha256(stepwrap_source().encode()).hexdigest()
            },
        ),
        data={STEPWRAP_KEY: stepwrap_source()},
    )


def ensure_stepwrap_configmap(client: Any, namespace: str, log: Any) -> None:
    """Create the wrapper's ConfigMap if missing; refuse one whose content was changed."""
    want = stepwrap_configmap(namespace)
    name = want.metadata.name
    try:
        have = client.read_namespaced_config_map(name, namespace)
    except ApiException as e:
        if e.status == 404:
            try:
                client.create_namespaced_config_map(namespace, want)
                log.info("created ConfigMap %s/%s (twinprov step wrapper)", namespace, name)
            except ApiException as e2:
                if e2.status != 409:  # 409: created meanwhile by a parallel step
                    log.warning(
                        "cannot create ConfigMap %s/%s (%s %s): apply it from `twinprov pods`",
                        namespace,
                        name,
                        e2.status,
                        e2.reason,
                    )
        else:
            log.warning("cannot read ConfigMap %s/%s (%s %s)", namespace, name, e.status, e.reason)
        return
    if (have.data or {}).get(STEPWRAP_KEY) != stepwrap_source():
        raise AirflowException(
            f"ConfigMap {namespace}/{name} does not hold twinprov's step wrapper; delete it"
        )
