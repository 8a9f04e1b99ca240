#!/usr/bin/env bash
# Creates one database per service for compose.yaml (run by the postgres image at first start).
set -euo pipefail
for db in enrolment referral matching notification placement; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
SELECT 'CREATE DATABASE $db' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')\gexec
SQL
done
