"""Comparable environment facts of step tries, and what differs between two of them."""

from __future__ import annotations

from pathlib import Path

from twinprov.provenance.env_facts import (
    comparable_facts,
    fact_changes,
    step_programs,
    thread_settings,
)
from twinprov.provenance.record import OutputComparison, StepChange, Verdict


def _payload(numpy: str, **extra: object) -> dict[str, object]:
    return {
        "role": "step",
        "target": "local",
        "hostname": "node-1",
        "environment": {
            "kind": "python",
            "digest": "abc",
            "python_version": "3.11.2",
            "os": "Linux 6.1.0 x86_64",
            "libc": "glibc 2.36",
            "packages": ["numpy==" + numpy, "xarray==2024.10.0"],
            "packages_sha256": "sha-" + numpy,
        },
        "threads": {"OMP_NUM_THREADS": "4"},
        "programs": {"spi.py": "a" * 64},
        **extra,
    }


def test_two_environments_differing_in_one_package_version() -> None:
    a = comparable_facts(_payload("2.1.3"))
    b = comparable_facts(_payload("2.2.0"))
    assert a["packages"] == {"numpy": "2.1.3", "xarray": "2024.10.0"}
    assert fact_changes(a, b) == ["numpy 2.1.3 → 2.2.0"]
    assert fact_changes(a, a) == []
    assert comparable_facts(a) == a  # idempotent: what the crate stores compares as recorded


def test_every_kind_of_change_is_named_programs_first() -> None:
    a = comparable_facts(_payload("2.1.3"))
    b = comparable_facts(
        _payload(
            "2.1.3",
            hostname="node-2",
            threads={"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "1"},
            programs={"spi.py": "b" * 64},
        )
    )
    b["libc"] = "glibc 2.40"
    assert fact_changes(a, b) == [
        f"program spi.py sha256 {'a' * 12}… → {'b' * 12}…",
        "libc glibc 2.36 → glibc 2.40",
        "MKL_NUM_THREADS unset → 1",
        "OMP_NUM_THREADS 4 → 8",
        "host node-1 → node-2",
    ]


def test_pod_image_digests_and_sites() -> None:
    pod = {
        "target": "kubernetes",
        "image": "ghcr.io/x/spi:1",
        "image_digest": "sha256:" + "ab" * 32,
        "hpc": {"site": "cineca"},
    }
    a = comparable_facts(pod)
    b = comparable_facts({**pod, "image_digest": "sha256:" + "cd" * 32, "hpc": {"site": "jsc"}})
    assert fact_changes(a, b) == [
        f"image sha256:{'ab' * 6}… → sha256:{'cd' * 6}…",
        "site cineca → jsc",
    ]


def test_facts_recorded_on_one_side_only_are_not_compared() -> None:
    old = comparable_facts({"environment": {"kind": "python", "python_version": "3.11.2"}})
    assert fact_changes(old, comparable_facts(_payload("2.2.0"))) == []


def test_step_programs_and_threads(tmp_path: Path) -> None:
    (tmp_path / "spi.py").write_text("print(1)\n")
    progs = step_programs(
        ["${workflow_dir}/spi.py", "${workflow_dir}/../escape.py", "${params.x}", "-v"], tmp_path
    )
    assert list(progs) == ["spi.py"] and len(progs["spi.py"]) == 64
    assert thread_settings({"OMP_NUM_THREADS": "2", "PATH": "/bin"}) == {"OMP_NUM_THREADS": "2"}


def test_verdict_with_changes_round_trips() -> None:
    v = Verdict(
        "differs",
        "urn:run",
        outputs=(
            OutputComparison(
                "s",
                "o",
                "differs",
                "a",
                "b",
                "identical bytes",
                "values_differ",
                {"max_abs_diff": 0.5, "max_rel_diff": 0.1, "share_differing": 0.25, "cells": 8},
            ),
        ),
        first_divergent_step="s",
        changes=(StepChange("s", ("numpy 2.1.3 → 2.2.0",), True, True),),
        likely_cause="s",
    )
    d = v.to_dict()
    assert Verdict.from_dict(d) == v
    assert d["outputs"][0]["grade_text"] == (
        "same structure, different values (max abs diff 0.5, max rel diff 0.1, "
        "25% of 8 cells differ)"
    )
    assert v.cause is not None and v.cause.text == "s: numpy 2.1.3 → 2.2.0"
    # a verdict recorded before grades and changes existed still reads
    old = Verdict.from_dict({"status": "reproduced", "outputs": [{"status": "identical"}]})
    assert old.changes == () and old.outputs[0].grade_text == "identical bytes"
