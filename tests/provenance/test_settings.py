"""One reader of ``[twinprov]`` settings, one number parser: a bad value is one clear error that
names the key, the same for the core's Settings and the endpoint's limits."""

from __future__ import annotations

import pytest

from twinprov.provenance.config import (
    DEFAULT_CRATE_COPY_THRESHOLD,
    Settings,
    number_setting,
)
from twinprov.provenance.errors import ConfigError


def test_defaults_when_unset(monkeypatch: pytest.MonkeyPatch, twinprov_home: object) -> None:
    monkeypatch.delenv("AIRFLOW__TWINPROV__CRATE_COPY_THRESHOLD", raising=False)
    s = Settings.load()
    assert s.crate_copy_threshold == DEFAULT_CRATE_COPY_THRESHOLD == 10 * 1024**2
    assert s.sparql_timeout_s == 60.0


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        ("crate_copy_threshold", "ten", "not a whole number"),
        ("crate_copy_threshold", "-5", "must be >= 0"),
        ("sparql_timeout_seconds", "0", "must be > 0"),
        ("sparql_timeout_seconds", "soon", "not a number"),
    ],
)
def test_bad_numbers_name_the_key(
    monkeypatch: pytest.MonkeyPatch, twinprov_home: object, key: str, raw: str, message: str
) -> None:
    monkeypatch.setenv(f"AIRFLOW__TWINPROV__{key.upper()}", raw)
    with pytest.raises(ConfigError) as err:
        Settings.load()
    text = str(err.value)
    assert f"[twinprov] {key}" in text and f"AIRFLOW__TWINPROV__{key.upper()}" in text
    assert message in text and "\n" not in text


def test_zero_allowed_only_where_it_means_something(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__TWINPROV__STORE_WAIT_SECONDS", "0")
    assert number_setting("store_wait_seconds", 5.0, zero=True) == 0
    with pytest.raises(ConfigError, match="must be > 0"):
        number_setting("store_wait_seconds", 5.0)


def test_the_endpoint_reads_through_the_same_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    from twinprov.airflow.settings import EndpointSettings

    monkeypatch.setenv("AIRFLOW__TWINPROV__QUERY_ROW_CAP", "12")
    assert EndpointSettings.from_airflow().row_cap == 12
    monkeypatch.setenv("AIRFLOW__TWINPROV__QUERY_ROW_CAP", "lots")
    with pytest.raises(ConfigError, match=r"\[twinprov\] query_row_cap .*not a whole number"):
        EndpointSettings.from_airflow()


def test_publication_urls_must_be_absolute_http(monkeypatch: pytest.MonkeyPatch) -> None:
    from twinprov.provenance.config import Settings

    monkeypatch.setenv("AIRFLOW__TWINPROV__CRATE_BASE_URI", "crates/here")
    with pytest.raises(ConfigError, match=r"crate_base_uri.*absolute http"):
        Settings.load()
    monkeypatch.setenv("AIRFLOW__TWINPROV__CRATE_BASE_URI", "https://dt.example.org/crates/")
    monkeypatch.setenv("AIRFLOW__TWINPROV__CRATE_PUBLISHER", "DT Centre")
    s = Settings.load()
    assert (s.crate_base_uri, s.crate_publisher) == ("https://dt.example.org/crates/", "DT Centre")
