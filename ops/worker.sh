#!/usr/bin/env bash
# Start a worker. Interactive:  ops/worker.sh context,judge 8      Bulk/nightly:  ops/worker.sh bulk 4
set -euo pipefail
queues="${1:-context,judge}"
concurrency="${2:-${PIGREWARD_WORKER_CONCURRENCY:-4}}"
exec pigreward worker --queues "$queues" --concurrency "$concurrency" --pool "${PIGREWARD_WORKER_POOL:-threads}"
