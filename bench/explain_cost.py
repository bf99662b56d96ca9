"""What explaining a rerun costs: the same rerun with the comparison of environments and the
grading of differing outputs on and off.

A three-step workflow (NetCDF grid with unseeded noise → CSV table of means → text summary)
runs once; then its reruns alternate (off, on, off, on, …) in one process through real Airflow
``dag.test()`` on a throw-away SQLite metadata DB. Every rerun differs from the original (the
noise), so "on" grades the differing NetCDF and CSV outputs (structure, max abs/rel difference,
share of cells differing), reads the original's environment facts from its crate and lists the
differences per step; "off" (``TWINPROV_RERUN_EXPLAIN=off``) compares bytes only. Prints the
median rerun wall time each way, their ratio, the time spent in ``compare_run`` itself and the
ratio that time accounts for (the wall-time ratio carries the noise of a shared machine).

    python bench/explain_cost.py [--rounds 3] [--size 400]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

MAKE = """
import sys
import numpy as np
import xarray as xr
n = int(sys.argv[1])
values = np.linspace(0.0, 1.0, n * n).reshape(n, n)
values = values + np.random.default_rng().normal(0.0, 1e-3, values.shape)  # unseeded
xr.Dataset({"v": (("lat", "lon"), values)},
           coords={"lat": np.arange(n) * 0.1, "lon": np.arange(n) * 0.1}).to_netcdf("grid.nc")
"""

MEANS = """
import sys
import xarray as xr
with xr.open_dataset(sys.argv[1]) as ds:
    ds["v"].mean("lon").to_dataframe().to_csv("means.csv")
"""


def _spec() -> dict[str, Any]:
    return {
        "name": "explain_bench",
        "params": {"size": {"type": "integer", "default": 400}},
        "steps": [
            {
                "id": "make",
                "command": ["python", "${workflow_dir}/make.py", "${params.size}"],
                "outputs": [
                    {"name": "grid", "path": "grid.nc", "media_type": "application/x-netcdf"}
                ],
            },
            {
                "id": "means",
                "command": ["python", "${workflow_dir}/means.py", "${inputs.grid}"],
                "inputs": [{"name": "grid", "from": "make.grid"}],
                "outputs": [{"name": "means", "path": "means.csv", "media_type": "text/csv"}],
            },
            {
                "id": "report",
                "command": ["python", "-c", "open('report.txt', 'w').write('done')"],
                "needs": ["means"],
                "outputs": [{"name": "report", "path": "report.txt", "media_type": "text/plain"}],
            },
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=400, help="grid cells per side")
    ns = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-"))
    os.environ["TWINPROV_HOME"] = str(root / "home")
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    workflows = root / "workflows"
    workflows.mkdir()
    (workflows / "make.py").write_text(MAKE)
    (workflows / "means.py").write_text(MEANS)
    spec = workflows / "explain_bench.yaml"
    spec.write_text(yaml.safe_dump(_spec()))

    from twinprov.dags.runner import ensure_database, prepare_environment, run_workflow

    prepare_environment()
    ensure_database()
    from twinprov.app import compare, rerun
    from twinprov.provenance.config import Settings
    from twinprov.provenance.ledger import Ledger

    compare_times: list[float] = []
    real_compare = compare.compare_run

    def timed_compare(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_compare(*args, **kwargs)
        finally:
            compare_times.append(time.perf_counter() - t0)

    compare.compare_run = timed_compare  # type: ignore[assignment]

    original = run_workflow(str(spec), {"size": ns.size})
    assert original.state == "success", original
    ref = f"explain_bench/{original.run_id}"
    run_workflow(str(spec), {"rerun_of": ref})  # warm-up: imports, the store, caches
    ledger = Ledger(Settings.load().ledger_url)
    walls: dict[str, list[float]] = {"off": [], "on": []}
    compares: dict[str, list[float]] = {"off": [], "on": []}
    last: dict[str, Any] = {}
    for _ in range(ns.rounds):
        for mode in ("off", "on"):
            os.environ[rerun.EXPLAIN_ENV] = mode
            compare_times.clear()
            t0 = time.perf_counter()
            out = run_workflow(str(spec), {"rerun_of": ref})
            walls[mode].append(time.perf_counter() - t0)
            compares[mode].append(sum(compare_times))
            last[mode] = ledger.run(out.dag_id, out.run_id).publication["verdict"]
    os.environ.pop(rerun.EXPLAIN_ENV, None)

    off, on = statistics.median(walls["off"]), statistics.median(walls["on"])
    c_off, c_on = statistics.median(compares["off"]), statistics.median(compares["on"])
    print(f"grid {ns.size}×{ns.size} float64, {ns.rounds} rounds")
    print(f"rerun wall time: off {off:.2f} s, on {on:.2f} s (medians); ratio on/off {on / off:.3f}")
    print(f"compare_run: off {c_off * 1000:.1f} ms, on {c_on * 1000:.1f} ms (medians)")
    print(
        "rerun wall times (s): off "
        + ", ".join(f"{w:.2f}" for w in walls["off"])
        + "; on "
        + ", ".join(f"{w:.2f}" for w in walls["on"])
    )
    # the wall-time ratio carries the noise of a shared machine; the comparison's own cost,
    # measured inside the same reruns, gives the ratio it accounts for
    print(f"ratio from the comparison's own time: {(off + c_on - c_off) / off:.4f}")
    for o in last["on"]["outputs"]:
        print(f"  on: {o['step']}.{o['output']}: {o['grade_text']}")


if __name__ == "__main__":
    main()
