"""The run page's reproducibility section: graded outputs and what changed, per step."""

from __future__ import annotations

from typing import Any

from twinprov.provenance.record import OutputComparison, StepChange, Verdict


def _render(run: dict[str, Any]) -> str:
    from twinprov.airflow import pages

    return pages._env.get_template("run.html").render(base="", run=run)


def test_run_page_lists_grades_changes_and_the_likely_cause() -> None:
    v = Verdict(
        "differs",
        "urn:twinprov:run/w/r1",
        outputs=(
            OutputComparison(
                "spi",
                "grid",
                "differs",
                "a",
                "b",
                "identical bytes",
                "values_differ",
                {"max_abs_diff": 0.25, "max_rel_diff": 0.5, "share_differing": 0.1, "cells": 10},
            ),
        ),
        first_divergent_step="spi",
        changes=(
            StepChange("prep", ("host a → b",), True, False),
            StepChange("spi", ("numpy 2.1.3 → 2.2.0", "image sha256:ab… → sha256:cd…")),
        ),
        likely_cause="spi",
    )
    html = _render({"dag_id": "w", "run_id": "r2", "verdict": v.to_dict(), "steps": []})
    assert "same structure, different values (max abs diff 0.25" in html
    assert "What changed, per step" in html and "numpy 2.1.3 → 2.2.0" in html
    assert "likely cause of the first divergence" in html
    section = html[html.index("What changed, per step") :]
    assert section.index("host a → b") < section.index("numpy 2.1.3")  # in step order
