#!/usr/bin/env bash
# Launch SGLang for the PIGReward judge on a GPU host, in SGLang's own environment
# (SGLang pins its own torch/transformers; the project's workers only speak HTTP to it).
#
#   JUDGE_MODEL   local path or HF-cache id of the judge   (default: jeongeunnn/pigreward)
#   PORT          (default 30000)    DP    data-parallel replicas, one per GPU (default 1)
#   MEM_FRACTION  share of GPU memory for weights + KV cache (default 0.85)
#   HF_HUB_OFFLINE=1 keeps SGLang from reaching the hub: the weights must be there already.
set -euo pipefail
exec python -m sglang.launch_server \
  --model-path "${JUDGE_MODEL:-jeongeunnn/pigreward}" \
  --served-model-name "${SERVED_NAME:-pigreward-judge}" \
  --host "${HOST:-0.0.0.0}" --port "${PORT:-30000}" \
  --mem-fraction-static "${MEM_FRACTION:-0.85}" \
  --dp-size "${DP:-1}" \
  --context-length "${CONTEXT_LENGTH:-4096}" \
  --enable-metrics \
  "$@"
