"""``twinprov run`` (``dag.test()``, tasks in-process): a step's secret, printed by the step, is
``***`` on the console, as Airflow's secrets masker shows it in a supervised task's log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SECRET = "s3cr3t-Value-42"
SPEC = """
name: secret_echo
steps:
  - id: leak
    command:
      - python
      - -c
      - >-
        import os, sys; t = os.environ['TOKEN']; print('the value is', t);
        print('err', t, file=sys.stderr); open('o.txt', 'w').write('x')
    secrets: [{env: TOKEN, variable: api_key}]
    outputs: [{name: o, path: o.txt, media_type: text/plain}]
"""


def test_twinprov_run_masks_a_step_secret_on_the_console(tmp_path: Path) -> None:
    spec = tmp_path / "specs" / "secret_echo.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_VAR_", "TWINPROV_", "PYTEST_"))
        and k != "AIRFLOW_HOME"
    }
    env.update(
        TWINPROV_HOME=str(home),
        AIRFLOW_VAR_API_KEY=SECRET,
        # the step's output is logged at INFO: make the console show it
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        NO_COLOR="1",
        PYTHONPATH=str(REPO),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "twinprov.cli", "run", str(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-3000:]
    assert "the value is ***" in console, console[-3000:]
    assert "err ***" in console
    assert SECRET not in console
    # nor in any file the run left: Airflow's logs (a task log file, if any), ledger, PROV, crate
    leaks = [
        p
        for p in [*home.rglob("*"), *(home / "airflow").rglob("*")]
        if p.is_file() and SECRET.encode() in p.read_bytes()
    ]
    assert leaks == []
