#!/usr/bin/env bash
# Several GPUs, one endpoint: SGLang's router starts DP replicas of the judge and routes requests
# cache-aware (requests sharing a user's context prefix go to the replica that holds it).
set -euo pipefail
exec python -m sglang_router.launch_server \
  --model-path "${JUDGE_MODEL:-jeongeunnn/pigreward}" \
  --served-model-name "${SERVED_NAME:-pigreward-judge}" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-30000}" \
  --dp-size "${DP:-8}" \
  --mem-fraction-static "${MEM_FRACTION:-0.85}" \
  --enable-metrics \
  "$@"
