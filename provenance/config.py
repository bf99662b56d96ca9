"""Settings, read in one place.

Precedence, as in Airflow: environment ``AIRFLOW__TWINPROV__<KEY>`` > section ``[twinprov]`` of
``$AIRFLOW_HOME/airflow.cfg`` > default. ``TWINPROV_HOME`` (default ``./.twinprov``) holds the
embedded ledger, graph store and run folders. The core never reads settings itself: callers load
a :class:`Settings` and pass its values down.

Keys of ``[twinprov]`` read into :class:`Settings` (the SPARQL endpoint's limits and the pod
settings are read through :func:`setting` too, by ``twinprov.airflow.settings`` and
``twinprov.dags.pod_spec``):

* ``ledger_url``: any SQLAlchemy URL (default: SQLite under ``TWINPROV_HOME``), e.g.
  ``postgresql+psycopg2://twinprov:…@postgres:5432/twinprov``.
* ``store_path``: folder of the embedded graph store (default ``TWINPROV_HOME/graph-store``).
* ``sparql_url`` + ``sparql_gsp_url``: use a SPARQL 1.1 server as the graph store instead of the
  embedded one. ``sparql_url`` is its SPARQL 1.1 Protocol *query* endpoint (the SPARQL endpoint
  of the API server forwards to the same URL), ``sparql_gsp_url`` its Graph Store Protocol
  endpoint, through which each run's named graph is replaced by one idempotent ``PUT``. Oxigraph
  server: ``http://HOST:7878/query`` and ``http://HOST:7878/store``; Fuseki:
  ``http://HOST:3030/DS/query`` and ``http://HOST:3030/DS/data``. Credentials may be given in the
  URLs (``http://user:password@host/…``); they are never printed. The server must answer queries
  over the union of its named graphs (``oxigraph serve --union-default-graph``; Fuseki
  ``tdb2:unionDefaultGraph true``).
* ``sparql_timeout_seconds`` (60): HTTP time limit of one request to that server.
* ``base_iri`` (``urn:twinprov:``), ``mlflow_tracking_uri`` (default: SQLite under
  ``TWINPROV_HOME``; a server: ``http://mlflow:5000``), ``crate_copy_threshold`` (bytes).
* ``capture`` (``tagged``): which DAGs the listener records. ``specs``: only the DAGs of
  twinprov's workflow specs; ``tagged``: those and every DAG tagged ``twinprov``; ``all``: every
  DAG (hand-written DAGs included).
* ``crate_base_uri``: an absolute ``http(s)://`` base under which the software entities of a
  run's crate (tools, engine, environments) get absolute ids, ``BASE/DAG_ID/RUN_ID/#tool/STEP``.
* ``crate_publisher`` + ``crate_publisher_url``: the organisation that publishes the crates (when
  the spec names no ``publisher``); ``crate_engine_url``: web page of twinprov as this deployment
  runs it (default: the package's home page, if its metadata names one).
* ``openlineage`` (``off``): ``on`` sends each run's OpenLineage events at publication, to the
  transport OpenLineage's own configuration names (``openlineage.yml``, ``OPENLINEAGE_*``).
* ``shared_dir``: folder for run folders (workspaces, PROV files, crates), the STAC catalog and
  input data, when these must be reachable from several machines (default: ``TWINPROV_HOME``).
  Workers on separate machines (CeleryExecutor) each keep their own ``TWINPROV_HOME`` (the
  write-ahead spool) and mount one shared filesystem here (NFS, CephFS, a ReadWriteMany
  volume), at the same path on every worker, the scheduler and the API server.
* ``step_env_passthrough``: comma-separated names or patterns (``MY_TOOL_*``) of environment
  variables local steps inherit besides the basics (PATH, HOME, locale…); steps never see the
  rest of the task process's environment (``AIRFLOW_CONN_*``, database URLs).
* ``yprov_publish`` (``false``): push every run's PROV-JSON document to a yProvStore server at
  publication; ``yprov_conn_id`` (``twinprov_yprov``): the Airflow connection naming that server
  and its account (host, port, login, password; never a setting or the spec);
  ``yprov_timeout_seconds`` (30): HTTP time limit of one request to it.
"""

from __future__ import annotations

__all__ = [
    "CAPTURE_MODES",
    "CAPTURE_TAG",
    "DEFAULT_CRATE_COPY_THRESHOLD",
    "DEMO_SETTINGS",
    "Settings",
    "airflow_home",
    "demo_environment",
    "number_setting",
    "setting",
    "twinprov_home",
]

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from twinprov.provenance.errors import ConfigError

DEFAULT_BASE_IRI = "urn:twinprov:"
CAPTURE_MODES = ("specs", "tagged", "all")
"""Values of ``[twinprov] capture``: spec DAGs only, plus DAGs tagged ``twinprov``, or every DAG."""
CAPTURE_TAG = "twinprov"
"""The DAG tag that asks for capture under ``capture = tagged``."""
DEFAULT_CRATE_COPY_THRESHOLD = 10 * 1024**2
"""Outputs up to this many bytes are copied into crates; larger ones are referenced."""


def twinprov_home() -> Path:
    """The embedded default's home folder, absolute."""
    return Path(os.environ.get("TWINPROV_HOME", "./.twinprov")).expanduser().resolve()


def airflow_home() -> Path:
    """Airflow's home: ``AIRFLOW_HOME`` if set, else ``TWINPROV_HOME/airflow``."""
    env = os.environ.get("AIRFLOW_HOME")
    return Path(env).expanduser().resolve() if env else twinprov_home() / "airflow"


def _cfg_file() -> dict[str, str]:
    """``[twinprov]`` of ``airflow.cfg`` (``AIRFLOW_CONFIG``, else ``AIRFLOW_HOME/airflow.cfg``),
    parsed once per file version (its path, size and modification time)."""
    cfg = Path(os.environ.get("AIRFLOW_CONFIG") or airflow_home() / "airflow.cfg").expanduser()
    try:
        st = cfg.stat()
    except OSError:
        return {}
    key = (str(cfg), st.st_size, st.st_mtime_ns)
    cached = _cfg_cache.get("file")
    if cached is not None and cached[0] == key:
        return cached[1]
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(cfg, encoding="utf-8")
    section = dict(parser.items("twinprov")) if parser.has_section("twinprov") else {}
    _cfg_cache["file"] = (key, section)
    return section


_cfg_cache: dict[str, tuple[tuple[str, int, int], dict[str, str]]] = {}


def _cfg_value(key: str) -> str | None:
    env = os.environ.get(f"AIRFLOW__TWINPROV__{key.upper()}")
    if env is not None:
        return env
    return _cfg_file().get(key.lower())


def setting(key: str) -> str | None:
    """One key of ``[twinprov]`` (environment > ``airflow.cfg``), stripped; ``None`` if unset
    or empty. The one reader of twinprov's settings, for the core, the plugin and the DAGs."""
    value = _cfg_value(key)
    return value.strip() or None if value is not None else None


def number_setting(
    key: str, default: float, kind: type[int] | type[float] = float, *, zero: bool = False
) -> float:
    """A number of ``[twinprov]``: ``default`` when unset; a :class:`ConfigError` naming the key
    (and its environment variable) when it is not a number or not positive (``zero`` allows 0).
    The one parser of numeric settings: every reader gets the same answer to the same mistake.
    """
    raw = setting(key)
    if raw is None:
        return default
    where = f"[twinprov] {key} (AIRFLOW__TWINPROV__{key.upper()})"
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{where} = {raw!r}: not {what}") from None
    if value < 0 or (value == 0 and not zero):
        raise ConfigError(f"{where} = {raw!r}: must be {'>= 0' if zero else '> 0'}")
    return value


@dataclass(frozen=True)
class Settings:
    """Where twinprov keeps things and how it names them."""

    home: Path
    ledger_url: str
    store_path: Path
    base_iri: str
    mlflow_tracking_uri: str = ""
    crate_copy_threshold: int = DEFAULT_CRATE_COPY_THRESHOLD
    """Outputs up to this size are copied into crates; larger ones are referenced."""
    sparql_url: str = ""
    """SPARQL 1.1 Protocol query endpoint of a graph-store server ("" = the embedded store)."""
    sparql_gsp_url: str = ""
    """Graph Store Protocol endpoint of the same server (each run graph is PUT there)."""
    sparql_timeout_s: float = 60.0
    """HTTP time limit of one request to the SPARQL server."""
    step_env_passthrough: tuple[str, ...] = ()
    """Extra environment variables (names or patterns) local steps inherit."""
    capture: str = "tagged"
    """Which DAGs the listener records (one of :data:`CAPTURE_MODES`)."""
    crate_base_uri: str = ""
    """Absolute base URI of the crates' software entities ("" = ids relative to the crate)."""
    crate_publisher: str = ""
    """Name of the organisation that publishes the crates."""
    crate_publisher_url: str = ""
    crate_engine_url: str = ""
    """Web page of twinprov as this deployment runs it."""
    yprov_publish: bool = False
    """Push every run's PROV document to yProv at publication (``twinprov.app.yprov``)."""
    yprov_conn_id: str = "twinprov_yprov"
    """Airflow connection of the yProvStore server (URL and account)."""
    yprov_timeout_s: float = 30.0
    """HTTP time limit of one request to the yProvStore server."""
    openlineage: bool = False
    """Whether each publication sends the run's OpenLineage events (``[twinprov] openlineage``;
    where to is OpenLineage's own configuration: ``openlineage.yml``, ``OPENLINEAGE_*``)."""
    shared: Path | None = None
    """``shared_dir``: where run folders, STAC and data live if not under ``home``."""

    @property
    def shared_root(self) -> Path:
        """Folder of what every machine must reach: ``shared_dir``, else ``home``."""
        return self.shared if self.shared is not None else self.home

    def captures(self, tags: object) -> bool:
        """Whether a DAG that is not a twinprov spec DAG, with these tags, is recorded."""
        if self.capture == "all":
            return True
        if self.capture != "tagged" or not tags:
            return False
        try:
            return CAPTURE_TAG in tags  # type: ignore[operator]
        except TypeError:
            return False

    @property
    def remote_store(self) -> bool:
        """Whether the graph store is a SPARQL 1.1 server rather than the embedded store."""
        return bool(self.sparql_url or self.sparql_gsp_url)

    @property
    def runs_dir(self) -> Path:
        """Folder holding one sub-folder per recorded run."""
        return self.shared_root / "runs"

    @property
    def data_dir(self) -> Path:
        """Input data that params name (``inputs: [{from: params.X}]``), relative to here."""
        return self.shared_root / "data"

    @property
    def stac_dir(self) -> Path:
        """The static STAC catalog of every run's geospatial outputs."""
        return self.shared_root / "stac"

    @property
    def mlflow_artifacts(self) -> Path | None:
        """Artifact root of experiments twinprov creates in the embedded MLflow store; ``None``
        for a tracking server (``http(s)://``), whose own artifact store (``mlflow server
        --artifacts-destination``) then keeps them."""
        if self.mlflow_tracking_uri.lower().startswith(("http://", "https://")):
            return None
        return self.home / "mlartifacts"

    @property
    def spool_dir(self) -> Path:
        """Fallback folder for events the ledger could not take at the time."""
        return self.home / "spool"

    @classmethod
    def load(cls) -> Settings:
        """Read the settings from the environment and ``airflow.cfg``."""
        home = twinprov_home()
        ledger = _cfg_value("ledger_url") or f"sqlite:///{home / 'ledger.sqlite'}"
        store = _cfg_value("store_path")
        base = _cfg_value("base_iri") or DEFAULT_BASE_IRI
        mlflow = _cfg_value("mlflow_tracking_uri") or f"sqlite:///{home / 'mlflow.db'}"
        shared = setting("shared_dir")
        return cls(
            home=home,
            ledger_url=ledger,
            store_path=Path(store).expanduser().resolve() if store else home / "graph-store",
            base_iri=base,
            mlflow_tracking_uri=mlflow,
            crate_copy_threshold=int(
                number_setting("crate_copy_threshold", DEFAULT_CRATE_COPY_THRESHOLD, int, zero=True)
            ),
            sparql_url=(_cfg_value("sparql_url") or "").strip(),
            sparql_gsp_url=(_cfg_value("sparql_gsp_url") or "").strip(),
            sparql_timeout_s=number_setting("sparql_timeout_seconds", 60.0),
            capture=_capture_mode(),
            crate_base_uri=_http_url_setting("crate_base_uri"),
            crate_publisher=setting("crate_publisher") or "",
            crate_publisher_url=_http_url_setting("crate_publisher_url"),
            crate_engine_url=_http_url_setting("crate_engine_url"),
            openlineage=_on_off("openlineage"),
            shared=Path(shared).expanduser().resolve() if shared else None,
            step_env_passthrough=tuple(
                p.strip() for p in (_cfg_value("step_env_passthrough") or "").split(",")
            ),
            yprov_publish=_on_off("yprov_publish"),
            yprov_conn_id=setting("yprov_conn_id") or "twinprov_yprov",
            yprov_timeout_s=number_setting("yprov_timeout_seconds", 30.0),
        )


def _http_url_setting(key: str) -> str:
    raw = setting(key) or ""
    if raw and (not raw.lower().startswith(("http://", "https://")) or " " in raw):
        raise ConfigError(
            f"[twinprov] {key} (AIRFLOW__TWINPROV__{key.upper()}) = {raw!r}: "
            "must be an absolute http:// or https:// URL"
        )
    return raw


DEMO_SETTINGS: dict[str, str] = {
    "crate_base_uri": "https://example.org/twinprov-demo/crates/",
    "crate_publisher": "twinprov demo deployment",
    "crate_publisher_url": "https://example.org/twinprov-demo/",
    "crate_engine_url": "https://example.org/twinprov-demo/twinprov/",
}
"""Publication settings of the demo (``twinprov demo``), as ``[twinprov]`` keys: example values
a real deployment replaces with its own (where its crates live, who publishes them)."""


def demo_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` plus the demo's publication settings (``AIRFLOW__TWINPROV__*``) it does not set."""
    out = dict(env)
    for key, value in DEMO_SETTINGS.items():
        out.setdefault(f"AIRFLOW__TWINPROV__{key.upper()}", value)
    return out


def _on_off(key: str) -> bool:
    raw = (setting(key) or "off").lower()
    if raw not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(
            f"[twinprov] {key} (AIRFLOW__TWINPROV__{key.upper()}) = {raw!r}: must be on or off"
        )
    return raw in ("on", "true", "1", "yes")


def _capture_mode() -> str:
    raw = (setting("capture") or "tagged").lower()
    if raw not in CAPTURE_MODES:
        raise ConfigError(
            f"[twinprov] capture (AIRFLOW__TWINPROV__CAPTURE) = {raw!r}: "
            f"must be one of {', '.join(CAPTURE_MODES)}"
        )
    return raw
