#!/usr/bin/env bash
# Wait (bounded) for the database in PIGREWARD_DATABASE_URL, then apply the migrations.
set -euo pipefail
for attempt in $(seq 1 30); do
  if pigreward db upgrade; then exit 0; fi
  echo "database not ready (attempt $attempt/30), retrying in 2s" >&2
  sleep 2
done
echo "database still unreachable after 30 attempts" >&2
exit 1
