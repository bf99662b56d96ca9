"""Publication time: one demo run, published again and again by the same code the publish task
runs (``twinprov.app.publish.publish_run``: PROV files, graph store, validation report, STAC,
crate). Prints the median and the spread, so that two versions of twinprov can be compared by
running this file under each, alternately, on the same machine.

    python bench/publish_time.py [--rounds 7]

It also runs under twinprov versions from before the ``twinprov.*`` namespace (the imports fall
back to the old module names), which is how the figure in the README was compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ns = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="twinprov-bench-publish-"))
    os.environ["TWINPROV_HOME"] = str(root / "home")
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    try:
        from twinprov.app.publish import publish_run
        from twinprov.dags.runner import ensure_database, prepare_environment, run_workflow
        from twinprov.provenance.config import Settings
    except ImportError:  # before the one namespace
        from provenance.publish import publish_run  # type: ignore[no-redef]
        from twinprov_dags.runner import (  # type: ignore[no-redef]
            ensure_database,
            prepare_environment,
            run_workflow,
        )

        from provenance.config import Settings  # type: ignore[no-redef]
    prepare_environment()
    ensure_database()
    outcome = run_workflow("drought_early_warning", {})
    assert outcome.state == "success", outcome
    settings = Settings.load()
    publish_run(settings, outcome.dag_id, outcome.run_id)  # warm: imports, first writes
    times = []
    for _ in range(ns.rounds):
        t0 = time.perf_counter()
        pub = publish_run(settings, outcome.dag_id, outcome.run_id)
        times.append(time.perf_counter() - t0)
        assert not pub.gaps, pub.gaps
    print(
        f"publish_run of the demo run, {ns.rounds} rounds: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f})"
    )


if __name__ == "__main__":
    main()
