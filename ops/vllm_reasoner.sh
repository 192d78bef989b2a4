#!/usr/bin/env bash
# Launch vLLM for the PIGReward reasoner: as ops/vllm_judge.sh (flags, template, variables),
# except REASONER_MODEL (default jeongeunnn/pigreward-bootstrap), SERVED_NAME default
# pigreward-reasoner, PORT default 30001, CONTEXT_LENGTH default 4096 (~1692 worst case, the
# arithmetic is in ops/sglang_reasoner.sh).
#
# Flags checked against vllm 0.33.0 (the released package): vllm/entrypoints/common/cli_args.py
# and vllm/engine/arg_utils.py; names in tests/data/server_flags/vllm-0.33.0.txt.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ops/weights_revision.sh
source "$here/weights_revision.sh"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # the weights must already be local
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1    # no usage report from an offline host

model=${REASONER_MODEL:-jeongeunnn/pigreward-bootstrap}
host=${HOST:-127.0.0.1}
case $host in
  127.* | localhost | ::1 | '[::1]') ;;
  *)
    if [[ -z ${API_KEY:-} ]]; then
      echo "vllm_reasoner.sh: refusing to listen on $host without API_KEY (set API_KEY, or HOST=127.0.0.1)" >&2
      exit 2
    fi
    ;;
esac
template=${CHAT_TEMPLATE:-$here/templates/qwen2_vl.jinja}
if [[ ! -f $template ]]; then
  echo "vllm_reasoner.sh: chat template $template not found (set CHAT_TEMPLATE)" >&2
  exit 2
fi
rev=$(weights_revision "$model")
name=${SERVED_NAME:-pigreward-reasoner}
[[ $name == *@* ]] || name="$name@$rev"
auth=()
if [[ -n ${API_KEY:-} ]]; then auth=(--api-key "$API_KEY"); fi

exec python -m vllm.entrypoints.cli.main serve "$model" \
  --served-model-name "$name" \
  --host "$host" --port "${PORT:-30001}" \
  ${auth[@]+"${auth[@]}"} \
  --chat-template "$template" \
  --chat-template-content-format openai \
  --max-model-len "${CONTEXT_LENGTH:-4096}" \
  --limit-mm-per-prompt '{"image": 2, "video": 0}' \
  --generation-config vllm \
  --structured-outputs-config '{"backend": "xgrammar"}' \
  --enable-prompt-tokens-details \
  --enable-prefix-caching \
  --gpu-memory-utilization "${MEM_FRACTION:-0.85}" \
  --data-parallel-size "${DP:-1}" \
  "$@"
