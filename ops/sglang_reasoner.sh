#!/usr/bin/env bash
# Launch SGLang for the PIGReward reasoner (the bootstrap model that writes one rationale per
# reference pair). Same environment and variables as ops/sglang_judge.sh; default port 30001.
set -euo pipefail
exec python -m sglang.launch_server \
  --model-path "${REASONER_MODEL:-jeongeunnn/pigreward-bootstrap}" \
  --served-model-name "${SERVED_NAME:-pigreward-reasoner}" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-30001}" \
  --mem-fraction-static "${MEM_FRACTION:-0.85}" \
  --dp-size "${DP:-1}" \
  --context-length "${CONTEXT_LENGTH:-4096}" \
  --enable-metrics \
  "$@"
