"""Loading suites: every mistake in a declaration is a SuiteError that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from twinprov.validation.errors import SuiteError, TwinprovValidationError
from twinprov.validation.suites import SuiteSpec, known_expectation_types, load_suite

SUITES = Path(__file__).resolve().parents[2] / "dags" / "workflows" / "drought" / "suites"


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_known_types_come_from_the_gx_registry() -> None:
    known = known_expectation_types()
    assert isinstance(known, frozenset)
    assert {
        "expect_column_values_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_table_row_count_to_equal",
    } <= known
    assert all(name == name.lower() for name in known)
    assert known_expectation_types() is known  # cached


def test_loads_a_gx_suite_file_with_the_expectation_type_alias(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "s.json",
        {
            "name": "from-file",
            "id": "e1b1-exported-by-gx",
            "expectations": [
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
                {
                    "expectation_type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "a", "min_value": 0, "max_value": 1},
                    "meta": {"why": "a share"},
                    "id": "ignored",
                    "severity": "critical",
                },
            ],
        },
    )
    suite = load_suite(suite_file=path, name="mine")
    assert suite == SuiteSpec(
        name="mine",
        expectations=(
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "meta": {}},
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "a", "min_value": 0, "max_value": 1},
                "meta": {"why": "a share"},
            },
        ),
        source=str(path),
    )
    assert len(suite.digest) == 64
    again = load_suite(inline=suite.to_json_dict()["expectations"], name="mine")
    assert again.digest == suite.digest  # the digest identifies the checks, not the file


def test_missing_suite_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file=missing, name="x")
    assert str(missing) in str(err.value)
    assert "does not exist" in str(err.value)
    assert isinstance(err.value, TwinprovValidationError)


def test_invalid_json_is_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",\n "expectations": [ {"type": } ]}', encoding="utf-8")
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file=path, name="x")
    assert str(path) in str(err.value)
    assert "invalid JSON at line 2" in str(err.value)


def test_unknown_expectation_type_is_named_with_the_closest_known_one(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "typo.json",
        {
            "name": "typo",
            "expectations": [
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
                {"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "a"}},
            ],
        },
    )
    with pytest.raises(SuiteError) as err:
        load_suite(suite_file=path, name="typo")
    message = str(err.value)
    assert str(path) in message
    assert "expectation #2" in message
    assert "'expect_column_values_to_be_betwen'" in message
    assert "did you mean 'expect_column_values_to_be_between'" in message
    assert err.value.expectation == "expect_column_values_to_be_betwen"
    assert err.value.suggestion == "expect_column_values_to_be_between"


def test_camel_case_class_name_suggests_the_snake_case_type() -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(
            inline=[{"type": "ExpectColumnValuesToNotBeNull", "kwargs": {"column": "a"}}],
            name="camel",
        )
    assert err.value.suggestion == "expect_column_values_to_not_be_null"
    assert "inline suite 'camel'" in str(err.value)


@pytest.mark.parametrize("kwargs", [None, ["column", "a"]])
def test_missing_kwargs_mapping(kwargs: object) -> None:
    raw: dict[str, object] = {"type": "expect_column_values_to_not_be_null"}
    if kwargs is not None:
        raw["kwargs"] = kwargs
    with pytest.raises(SuiteError, match="needs a 'kwargs' mapping"):
        load_suite(inline=[raw], name="k")


def test_kwargs_are_checked_by_the_gx_class() -> None:
    with pytest.raises(SuiteError) as err:
        load_suite(
            inline=[
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "a", "min_valu": 0, "max_value": 1},
                }
            ],
            name="args",
        )
    assert "unknown argument 'min_valu' (did you mean 'min_value'?)" in str(err.value)
    with pytest.raises(SuiteError, match="missing argument 'column'"):
        load_suite(
            inline=[{"type": "expect_column_values_to_not_be_null", "kwargs": {}}], name="args"
        )
    with pytest.raises(SuiteError, match="min_value: invalid value 'low'"):
        load_suite(
            inline=[
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "a", "min_value": "low", "max_value": 1},
                }
            ],
            name="args",
        )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}, "kwarg": 1},
            "unknown key(s) 'kwarg'",
        ),
        (
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "a", "result_format": "COMPLETE"},
            },
            "'result_format' is not an argument",
        ),
        ({"kwargs": {"column": "a"}}, "has no 'type'"),
        ("expect_column_values_to_not_be_null", "must be an object"),
    ],
)
def test_malformed_expectations(raw: object, message: str) -> None:
    with pytest.raises(SuiteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_suite(inline=[raw], name="m")  # type: ignore[list-item]


def test_a_suite_needs_expectations_and_exactly_one_source(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="no expectations"):
        load_suite(inline=[], name="empty")
    with pytest.raises(SuiteError, match="exactly one"):
        load_suite(name="neither")
    path = _write(tmp_path / "s.json", {"name": "s", "expectations": []})
    with pytest.raises(SuiteError, match="exactly one"):
        load_suite(suite_file=path, inline=[], name="both")
    bad_top = _write(tmp_path / "t.json", {"name": "s", "expectation": []})
    with pytest.raises(SuiteError, match="unknown key"):
        load_suite(suite_file=bad_top, name="t")


@pytest.mark.parametrize("region", ["alps", "pyrenees", "carpathians"])
@pytest.mark.parametrize("name", ["precipitation", "spi", "hazard_map", "region_summary"])
def test_demo_suites_load(name: str, region: str) -> None:
    suite = load_suite(suite_file=SUITES / region / f"{name}.json", name=name)
    assert suite.expectations
    assert all(e["meta"].get("why") for e in suite.expectations), "say why each check exists"
