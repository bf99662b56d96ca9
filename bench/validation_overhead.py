"""Overhead of twinprov's validate_file over calling Great Expectations directly.

A 1-million-row CSV is written to a temporary folder. In one run, alternating, a few times:

(a) ``validate_file``: hashes the file, reads it, validates it, builds the record;
(b) GX directly on the same DataFrame, already loaded, with the same suite (one ephemeral
    context, pandas data source, dataframe asset, whole-dataframe batch definition, built once;
    per repetition ``get_batch`` + ``batch.validate`` — the documented 1.x path).

Prints medians, the ratio (goal <= 1.10) and the breakdown of (a): hash, read, GX, the rest.
(a) includes reading and hashing the file, which (b) does not; the "GX stage" ratio compares
like with like. No wall-clock assertion: this prints numbers, it does not judge them.

Usage: python bench/validation_overhead.py [--rows N] [--repeat K]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twinprov.validation.run import validate_file  # noqa: E402
from twinprov.validation.suites import load_suite  # noqa: E402

STATIONS = ["aosta", "bolzano", "chur", "innsbruck", "grenoble", "lugano", "salzburg"]
SUITE = [
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "precip"}},
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "precip", "min_value": 0}},
    {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "spi", "min_value": -5, "max_value": 5},
    },
    {
        "type": "expect_column_values_to_be_in_set",
        "kwargs": {"column": "station", "value_set": STATIONS},
    },
    {
        "type": "expect_column_values_to_match_regex",
        "kwargs": {"column": "cell", "regex": r"^C\d+$"},
    },
    {
        "type": "expect_column_mean_to_be_between",
        "kwargs": {"column": "spi", "min_value": -1, "max_value": 1},
    },
]


def write_table(path: Path, rows: int) -> None:
    rng = np.random.default_rng(7)
    pd.DataFrame(
        {
            "id": np.arange(rows),
            "station": rng.choice(STATIONS, rows),
            "cell": [f"C{i}" for i in rng.integers(0, 9600, rows)],
            "precip": rng.gamma(2.0, 40.0, rows).round(2),
            "spi": rng.normal(0.0, 1.0, rows).clip(-5, 5).round(4),
        }
    ).to_csv(path, index=False)


class DirectGX:
    """Great Expectations used directly, as its 1.x documentation shows."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("bench").add_dataframe_asset("frame")
        self.batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def validate(self, df: pd.DataFrame) -> Any:
        from great_expectations.expectations.registry import get_expectation_impl

        suite = self.gx.ExpectationSuite(
            name="bench",
            expectations=[get_expectation_impl(e["type"])(**e["kwargs"]) for e in SUITE],
        )
        batch = self.batch_definition.get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, result_format="SUMMARY")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="twinprov-bench-") as tmp:
        path = Path(tmp) / "table.csv"
        write_table(path, args.rows)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        suite = load_suite(inline=SUITE, name="bench")
        direct = DirectGX()
        df = pd.read_csv(path)  # (b) gets the DataFrame already loaded

        def run_a() -> tuple[float, dict[str, float], Any]:
            t = time.perf_counter()
            record = validate_file(
                path, output="table", media_type="text/csv", suite=suite, expected_sha256=digest
            )
            return time.perf_counter() - t, record.result["meta"]["twinprov"]["timings"], record

        def run_b() -> tuple[float, Any]:
            t = time.perf_counter()
            result = direct.validate(df)
            return time.perf_counter() - t, result

        run_a(), run_b()  # warm up: imports, context, first-call caches
        a_times: list[float] = []
        b_times: list[float] = []
        parts: dict[str, list[float]] = {"hash_s": [], "read_s": [], "gx_s": []}
        record = result = None
        for _ in range(args.repeat):
            ta, timings, record = run_a()
            tb, result = run_b()
            a_times.append(ta)
            b_times.append(tb)
            for key in parts:
                parts[key].append(timings[key])

        assert record is not None and result is not None
        med = statistics.median
        a, b = med(a_times), med(b_times)
        h, r, g = (med(parts[k]) for k in ("hash_s", "read_s", "gx_s"))
        other = med(t - sum(parts[k][i] for k in parts) for i, t in enumerate(a_times))
        size_mb = path.stat().st_size / 1e6
        print(
            f"validation overhead: {args.rows:,}-row CSV ({size_mb:.1f} MB), {len(SUITE)} "
            f"expectations, {args.repeat} repetitions, alternating"
        )
        print(
            f"(a) validate_file     median {a:6.3f} s  best {min(a_times):6.3f} s   breakdown "
            f"(medians): hash {h:.3f}  read {r:.3f}  GX {g:.3f}  other {other:.3f}"
        )
        print(
            f"(b) GX directly       median {b:6.3f} s  best {min(b_times):6.3f} s   "
            "(DataFrame already loaded)"
        )
        print(
            f"ratio (a)/(b)         median {a / b:6.2f}    best {min(a_times) / min(b_times):6.2f}"
            "     goal <= 1.10; (a) also hashes and reads the file"
        )
        print(
            f"ratio GX stage/(b)    median {g / b:6.2f}    best "
            f"{min(parts['gx_s']) / min(b_times):6.2f}     like for like: GX work in (a) vs (b)"
        )
        same = (record.success, record.successful) == (
            result.success,
            result.statistics["successful_expectations"],
        )
        print(
            f"verdicts: (a) success={record.success} {record.successful}/{record.evaluated}, "
            f"(b) success={result.success} "
            f"{result.statistics['successful_expectations']}/"
            f"{result.statistics['evaluated_expectations']} -> {'same' if same else 'DIFFER'}"
        )
        print(
            f"all runs (s): a={[round(x, 3) for x in a_times]} b={[round(x, 3) for x in b_times]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
