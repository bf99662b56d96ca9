"""The installed distribution: one import name (``twinprov``), and its entry points load.

Run in a subprocess whose working directory is outside the repository, so the folders at the
repository root (``provenance/``, ``validation/``, ...) are not on ``sys.path``: exactly what an
Airflow image with twinprov installed sees.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_only_twinprov_is_a_top_level_name(tmp_path: Path) -> None:
    top = (metadata.distribution("twinprov").read_text("top_level.txt") or "").split()
    assert top in ([], ["twinprov"]), top  # editable installs may not write top_level.txt
    out = _python(
        """
        import importlib
        for name in ("provenance", "validation", "ro_crates", "twinprov_airflow", "twinprov_dags"):
            try:
                importlib.import_module(name)
            except ImportError:
                print("absent", name)
            else:
                print("PRESENT", name)
        import twinprov, twinprov.provenance.spec, twinprov.validation, twinprov.ro_crates.crate
        print("version", twinprov.__version__)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "PRESENT" not in out.stdout, out.stdout
    assert out.stdout.count("absent") == 5
    assert f"version {metadata.version('twinprov')}" in out.stdout


def test_entry_points_load(tmp_path: Path) -> None:
    out = _python(
        """
        from importlib.metadata import entry_points
        import mlflow  # as in real use: MLflow loads its providers, not the other way round
        for group in ("console_scripts", "airflow.plugins", "mlflow.run_context_provider"):
            for ep in entry_points(group=group):
                if ep.dist is not None and ep.dist.name == "twinprov":
                    obj = ep.load()
                    print(group, ep.name, obj.__module__ + "." + obj.__qualname__)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    lines = {ln for ln in out.stdout.splitlines() if not ln.startswith("20")}  # no log lines
    assert lines == {
        "console_scripts twinprov twinprov.cli.main",
        "airflow.plugins twinprov twinprov.airflow.plugin.TwinprovPlugin",
        "mlflow.run_context_provider twinprov "
        "twinprov.ro_crates.mlflow_context.TwinprovRunContext",
    }, out.stdout


def test_the_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("twinprov")
    out = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "validate-spec" in out.stdout
