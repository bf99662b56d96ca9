#!/usr/bin/env bash
# Runs once, when the postgres service initialises an empty data volume: one role and one
# database each for Airflow's metadata, twinprov's ledger and MLflow's tracking store.
set -euo pipefail
create() {  # role, password, database
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v role="$1" -v pw="$2" -v db="$3" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"role";
SQL
}
create airflow  "$AIRFLOW_DB_PASSWORD"  airflow
create twinprov "$TWINPROV_DB_PASSWORD" twinprov
create mlflow   "$MLFLOW_DB_PASSWORD"   mlflow
