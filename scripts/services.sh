#!/usr/bin/env bash
# The production stack natively on 127.0.0.1 (PostgreSQL, oxigraph serve, mlflow server, Airflow
# scheduler + dag-processor + api-server), for trying twinprov as a service without Docker.
#
#   scripts/services.sh start [FOLDER]   install what is missing, start everything, print the URLs
#   scripts/services.sh status FOLDER    which services are running
#   scripts/services.sh stop FOLDER      stop everything started under FOLDER
#
# The tests (tests/stack/) start the same services themselves; see tests/stack/services.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
if [ $# -lt 1 ]; then
  sed -n '2,8p' "$0"
  exit 2
fi
if [ "$1" = start ]; then
  # the workflows of the stack tests, so that there is something to run
  exec "$PY" - "${@:2}" <<'PY'
import sys
from pathlib import Path
from tests.stack.services import Stack, ensure_installed
from tests.stack.workflows import write_workflows

ensure_installed()
stack = Stack.create(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
write_workflows(stack.workflows)
try:
    stack.start()
except BaseException:
    stack.stop(remove_database=False)
    raise
print(f"stack started in {stack.started_in:.0f} s under {stack.root}")
print(f"  Airflow          {stack.api}  (user admin, password in {stack.root}/passwords.json)")
print(f"  SPARQL query     {stack.sparql_url}")
print(f"  Graph Store      {stack.sparql_gsp_url}")
print(f"  MLflow           {stack.mlflow_uri}")
print(f"  PostgreSQL       127.0.0.1:{stack.pg.port}")
print(f"  workflows        {stack.workflows}")
print(f"  environment      {stack.root}/stack.json (key 'env')")
print(f"stop with: scripts/services.sh stop {stack.root}")
PY
fi
exec "$PY" -m tests.stack.services "$@"
