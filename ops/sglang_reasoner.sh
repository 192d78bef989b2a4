#!/usr/bin/env bash
# Launch SGLang for the PIGReward reasoner (the bootstrap model that writes one rationale per
# reference pair). Same environment, variables and flags as ops/sglang_judge.sh, except:
#   REASONER_MODEL  checkpoint directory or HF-cache id (default jeongeunnn/pigreward-bootstrap)
#   SERVED_NAME     default pigreward-reasoner;  PORT default 30001;  CONTEXT_LENGTH default 4096
#
# Flags checked against sglang 0.5.23 (the released package): python/sglang/srt/server_args.py
# with python/sglang/srt/arg_groups/fields/*.py; names in tests/data/server_flags/sglang-0.5.23.txt.
#
# Context length, worst-case reasoner prompt (one reference pair):
#   2 images at 448x448: 256 merged patch tokens + vision start/end = 258 each    516
#   instructions                                                                  ~300
#   user prompt, <= 2,000 characters                                              ~600
#   chat framing                                                                   ~20
#   answer (reasoner_max_tokens)                                                   256
#   total                                                                        ~1692  -> 4096
# (2048 would leave ~17% for instruction growth; 4096 costs nothing, the KV pool is sized by
# --mem-fraction-static, not by the context length.)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ops/weights_revision.sh
source "$here/weights_revision.sh"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # the weights must already be local

model=${REASONER_MODEL:-jeongeunnn/pigreward-bootstrap}
host=${HOST:-127.0.0.1}
case $host in
  127.* | localhost | ::1 | '[::1]') ;;
  *)
    if [[ -z ${API_KEY:-} ]]; then
      echo "sglang_reasoner.sh: refusing to listen on $host without API_KEY (set API_KEY, or HOST=127.0.0.1)" >&2
      exit 2
    fi
    ;;
esac
rev=$(weights_revision "$model")
name=${SERVED_NAME:-pigreward-reasoner}
[[ $name == *@* ]] || name="$name@$rev"
auth=()
if [[ -n ${API_KEY:-} ]]; then auth=(--api-key "$API_KEY"); fi

exec python -m sglang.launch_server \
  --model-path "$model" \
  --served-model-name "$name" --weight-version "$rev" \
  --host "$host" --port "${PORT:-30001}" \
  ${auth[@]+"${auth[@]}"} \
  --chat-template qwen2-vl \
  --context-length "${CONTEXT_LENGTH:-4096}" \
  --limit-mm-data-per-request '{"image": 2}' \
  --sampling-defaults openai \
  --grammar-backend xgrammar \
  --enable-cache-report \
  --enable-metrics \
  --mem-fraction-static "${MEM_FRACTION:-0.85}" \
  --dp-size "${DP:-1}" \
  "$@"
