#!/usr/bin/env bash
# Launch vLLM for the PIGReward judge: the alternative to ops/sglang_judge.sh, same variables,
# same OpenAI-compatible API for the workers. Run it in vLLM's own environment.
#
# Flags checked against vllm 0.33.0 (the released package): vllm/entrypoints/common/cli_args.py
# (make_arg_parser, FrontendArgs) and vllm/engine/arg_utils.py (EngineArgs/AsyncEngineArgs
# .add_cli_args); the parser's flag names are in tests/data/server_flags/vllm-0.33.0.txt.
# `python -m vllm.entrypoints.cli.main serve` is the `vllm serve` console script without needing
# it on PATH.
#
#   JUDGE_MODEL     checkpoint directory or HF-cache id of the judge (default jeongeunnn/pigreward)
#   SERVED_NAME     served model id, "@<weights revision>" appended (default pigreward-judge);
#                   the revision comes from ops/weights_revision.sh (WEIGHTS_REVISION overrides).
#                   vLLM answers 404 to a request whose "model" is not exactly this id (or absent).
#   HOST, PORT      bind address (default 127.0.0.1, loopback; vLLM's own default is every
#                   interface) and port (default 30000)
#   API_KEY         required by clients when set; a HOST that is not loopback needs it
#   CONTEXT_LENGTH  --max-model-len (default 12288; arithmetic in ops/sglang_judge.sh: ~10817 worst case)
#   CHAT_TEMPLATE   Jinja chat template (default ops/templates/qwen2_vl.jinja)
#   MEM_FRACTION    --gpu-memory-utilization (default 0.85)
#   DP              --data-parallel-size (default 1)
# Extra arguments pass through to `vllm serve`.
#
# Chat template: vLLM has no built-in fallback for model_type qwen2_vl
# (vllm/transformers_utils/chat_templates/registry.py), so a fine-tune that ships no template would
# fail every chat request; the pinned file renders the Qwen2-VL chat format. Content format
# `openai` hands image parts to the template as {"type": "image"}, which it turns into
# <|vision_start|><|image_pad|><|vision_end|>.
# --limit-mm-per-prompt takes JSON at this version ({"image": 2}; video 0 also skips video
# profiling). --generation-config vllm: fields a request leaves out take vLLM's neutral defaults,
# not the checkpoint's generation_config.json. --structured-outputs-config backend xgrammar: the
# workers' `structured_outputs` {"grammar" | "regex"} are xgrammar grammars, as for SGLang; with
# "auto" vLLM may hand a grammar to another engine with another syntax. Metrics are always on at
# /metrics (vLLM has no --enable-metrics flag); --enable-prompt-tokens-details reports
# usage.prompt_tokens_details.cached_tokens; prefix caching is on by default and pinned on here.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ops/weights_revision.sh
source "$here/weights_revision.sh"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # the weights must already be local
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1    # no usage report from an offline host

model=${JUDGE_MODEL:-jeongeunnn/pigreward}
host=${HOST:-127.0.0.1}
case $host in
  127.* | localhost | ::1 | '[::1]') ;;
  *)
    if [[ -z ${API_KEY:-} ]]; then
      echo "vllm_judge.sh: refusing to listen on $host without API_KEY (set API_KEY, or HOST=127.0.0.1)" >&2
      exit 2
    fi
    ;;
esac
template=${CHAT_TEMPLATE:-$here/templates/qwen2_vl.jinja}
if [[ ! -f $template ]]; then
  echo "vllm_judge.sh: chat template $template not found (set CHAT_TEMPLATE)" >&2
  exit 2
fi
rev=$(weights_revision "$model")
name=${SERVED_NAME:-pigreward-judge}
[[ $name == *@* ]] || name="$name@$rev"
auth=()
if [[ -n ${API_KEY:-} ]]; then auth=(--api-key "$API_KEY"); fi

exec python -m vllm.entrypoints.cli.main serve "$model" \
  --served-model-name "$name" \
  --host "$host" --port "${PORT:-30000}" \
  ${auth[@]+"${auth[@]}"} \
  --chat-template "$template" \
  --chat-template-content-format openai \
  --max-model-len "${CONTEXT_LENGTH:-12288}" \
  --limit-mm-per-prompt '{"image": 2, "video": 0}' \
  --generation-config vllm \
  --structured-outputs-config '{"backend": "xgrammar"}' \
  --enable-prompt-tokens-details \
  --enable-prefix-caching \
  --gpu-memory-utilization "${MEM_FRACTION:-0.85}" \
  --data-parallel-size "${DP:-1}" \
  "$@"
