"""Workflow specs and step programs of the stack tests and of ``bench/stack_throughput.py``.

Each step writes a small output unique to its run (the run's ``seed`` parameter is in the bytes),
so the outputs of two runs are different entities and a triple that leaks from one run graph into
another can be seen.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import REPO

STEP_PY = '''"""Stack test step: writes an output unique to (seed, step) after an optional delay."""
import sys
import time

seed, step, out = sys.argv[1], sys.argv[2], sys.argv[3]
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
with open(out, "w") as fh:
    fh.write(f"{step} seed={seed}\\n")
'''

HOLD_PY = '''"""Step of the kill tests. The first try writes a marker, then waits for a "go" file
(or 30 s) before writing its output; later tries write it at once."""
import os
import sys
import time

step, out = sys.argv[1], sys.argv[2]
marker = f".{step}.started"
if not os.path.exists(marker):
    with open(marker, "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not os.path.exists(f".{step}.go") and time.monotonic() < deadline:
        time.sleep(0.1)
with open(out, "w") as fh:
    fh.write(f"{step} written by pid {os.getpid()}\\n")
'''

SECRET_PY = '''"""Step of the secrets test: uses an Airflow connection (its password logs into
PostgreSQL), a sensitive Airflow variable (an HMAC key) and MLflow; writes only derived values."""
import hashlib
import hmac
import os
import sys
from urllib.parse import urlsplit

import psycopg2

mode, out = sys.argv[1], sys.argv[2]
dsn = urlsplit(os.environ["DB_URL"])
key = os.environ["REGION_KEY"].encode()
# what the scheduler's environment holds must not reach a step
leaked = sorted(k for k in os.environ if k.startswith(("AIRFLOW", "TWINPROV_LEDGER")))
if mode == "noisy" and not os.path.exists(".noisy.tried"):
    open(".noisy.tried", "w").write("1")
    # a careless program: the first try fails and prints its credentials
    print(f"cannot use {os.environ['DB_URL']} with key {key.decode()} (password {dsn.password})",
          file=sys.stderr)
    sys.exit(3)
conn = psycopg2.connect(host=dsn.hostname, port=dsn.port, user=dsn.username,
                        password=dsn.password, dbname=dsn.path.lstrip("/"))
with conn, conn.cursor() as cur:
    cur.execute("SELECT count(*) FROM pg_catalog.pg_tables")
    tables = cur.fetchone()[0]
conn.close()
digest = hmac.new(key, str(tables).encode(), hashlib.sha256).hexdigest()
with open(out, "w") as fh:
    fh.write(f"{mode} tables={tables} mac={digest} inherited={','.join(leaked)}\\n")
if mode == "tracked":
    import mlflow

    with mlflow.start_run():
        mlflow.log_param("tables", tables)
        mlflow.log_metric("mac_prefix", int(digest[:6], 16))
        mlflow.set_tag("db_user", dsn.username)
'''


def fan_spec(name: str = "stack_fan8", width: int = 8) -> str:
    """``width`` independent steps, each writing one output; params ``seed`` and ``delay``."""
    steps = "".join(
        f"""  - id: s{i}
    command: [python, "${{workflow_dir}}/stack_step.py", "${{params.seed}}", s{i},
              "${{outputs.out}}", "${{params.delay}}"]
    outputs: [{{name: out, path: s{i}.txt, media_type: text/plain}}]
"""
        for i in range(1, width + 1)
    )
    return f"""name: {name}
description: {width} independent steps (stack tests)
params:
  seed: {{type: integer, default: 0, minimum: 0}}
  delay: {{type: number, default: 0, minimum: 0, maximum: 60}}
steps:
{steps}"""


PAIR = """name: stack_pair
description: two chained steps (stack tests)
params:
  seed: {type: integer, default: 0, minimum: 0}
steps:
  - id: make
    command: [python, "${workflow_dir}/stack_step.py", "${params.seed}", make, "${outputs.raw}"]
    outputs: [{name: raw, path: raw.txt, media_type: text/plain}]
  - id: derive
    command: [python, "${workflow_dir}/stack_step.py", "${params.seed}", derive, "${outputs.out}"]
    inputs: [{name: raw, from: make.raw}]
    outputs: [{name: out, path: derived.txt, media_type: text/plain}]
"""

KILL = """name: stack_kill
description: a step whose first try is killed with SIGKILL (stack tests)
defaults: {retries: 1, retry_delay_seconds: 1}
params:
  seed: {type: integer, default: 0, minimum: 0}
steps:
  - id: first
    command: [python, "${workflow_dir}/stack_step.py", "${params.seed}", first, "${outputs.out}"]
    outputs: [{name: out, path: first.txt, media_type: text/plain}]
  - id: victim
    command: [python, "${workflow_dir}/stack_hold.py", victim, "${outputs.out}"]
    inputs: [{name: first, from: first.out}]
    outputs: [{name: out, path: victim.txt, media_type: text/plain}]
"""

SECRETS = """name: stack_secrets
description: steps that use a connection password, a sensitive variable and MLflow
defaults: {retries: 1, retry_delay_seconds: 1}
steps:
  - id: quiet
    command: [python, "${workflow_dir}/stack_secret.py", quiet, "${outputs.out}"]
    secrets: &secrets
      - {env: DB_URL, connection: stack_secret_db}
      - {env: REGION_KEY, variable: stack_region_key}
    outputs: [{name: out, path: quiet.txt, media_type: text/plain}]
  - id: noisy
    command: [python, "${workflow_dir}/stack_secret.py", noisy, "${outputs.out}"]
    secrets: *secrets
    outputs: [{name: out, path: noisy.txt, media_type: text/plain}]
  - id: tracked
    mlflow: true
    command: [python, "${workflow_dir}/stack_secret.py", tracked, "${outputs.out}"]
    secrets: *secrets
    inputs: [{name: quiet, from: quiet.out}]
    outputs: [{name: out, path: tracked.txt, media_type: text/plain}]
"""

KUBE_SECRETS = """name: stack_kube_secrets
description: the secrets workflow on Kubernetes (pod specs only)
defaults: {target: kubernetes, image: "python:3.11-slim"}
steps:
  - id: tracked
    command: [python, /app/step.py]
    secrets:
      - {env: REGION_KEY, secret: stack-secrets, key: region-key}
      - {env: DB_PASSWORD, secret: stack-secrets, key: db-password}
    outputs: [{name: out, path: tracked.txt, media_type: text/plain}]
"""


def write_workflows(folder: Path) -> None:
    """Write every stack workflow and its step programs into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "stack_step.py": STEP_PY,
        "stack_hold.py": HOLD_PY,
        "stack_secret.py": SECRET_PY,
        "stack_fan8.yaml": fan_spec(),
        "stack_pair.yaml": PAIR,
        "stack_kill.yaml": KILL,
        "stack_secrets.yaml": SECRETS,
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    # the demo, as shipped (tests/stack/test_e2e_on_stack.py runs the e2e suite on it)
    demo = REPO / "dags" / "workflows"
    shutil.copy2(demo / "drought_early_warning.yaml", folder / "drought_early_warning.yaml")
    shutil.copytree(demo / "drought", folder / "drought", dirs_exist_ok=True)
