"""Settings, read in one place.

Precedence, as in Airflow: environment ``AIRFLOW__TWINPROV__<KEY>`` > section ``[twinprov]`` of
``$AIRFLOW_HOME/airflow.cfg`` > default. ``TWINPROV_HOME`` (default ``./.twinprov``) holds the
embedded ledger, graph store and run folders. The core never reads settings itself: callers load
a :class:`Settings` and pass its values down.
"""

from __future__ import annotations

__all__ = ["Settings", "airflow_home", "twinprov_home"]

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_IRI = "urn:twinprov:"


def twinprov_home() -> Path:
    """The embedded default's home folder, absolute."""
    return Path(os.environ.get("TWINPROV_HOME", "./.twinprov")).expanduser().resolve()


def airflow_home() -> Path:
    """Airflow's home: ``AIRFLOW_HOME`` if set, else ``TWINPROV_HOME/airflow``."""
    env = os.environ.get("AIRFLOW_HOME")
    return Path(env).expanduser().resolve() if env else twinprov_home() / "airflow"


def _cfg_value(key: str) -> str | None:
    env = os.environ.get(f"AIRFLOW__TWINPROV__{key.upper()}")
    if env is not None:
        return env
    cfg = airflow_home() / "airflow.cfg"
    if cfg.is_file():
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(cfg, encoding="utf-8")
        if parser.has_option("twinprov", key.lower()):
            return parser.get("twinprov", key.lower())
    return None


@dataclass(frozen=True)
class Settings:
    """Where twinprov keeps things and how it names them."""

    home: Path
    ledger_url: str
    store_path: Path
    base_iri: str
    mlflow_tracking_uri: str = ""
    crate_copy_threshold: int = 10 * 1024**2
    """Outputs up to this size are copied into crates; larger ones are referenced."""

    @property
    def runs_dir(self) -> Path:
        """Folder holding one sub-folder per recorded run."""
        return self.home / "runs"

    @property
    def stac_dir(self) -> Path:
        """The static STAC catalog of every run's geospatial outputs."""
        return self.home / "stac"

    @property
    def mlflow_artifacts(self) -> Path:
        """Artifact root of experiments twinprov creates in the embedded MLflow store."""
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
        threshold = _cfg_value("crate_copy_threshold")
        return cls(
            home=home,
            ledger_url=ledger,
            store_path=Path(store).expanduser().resolve() if store else home / "graph-store",
            base_iri=base,
            mlflow_tracking_uri=mlflow,
            crate_copy_threshold=int(threshold) if threshold else 10 * 1024**2,
        )
