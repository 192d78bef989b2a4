#!/usr/bin/env bash
# Launch SGLang for the PIGReward judge on a GPU host, in SGLang's own environment
# (SGLang pins its own torch/transformers; the project's workers only speak HTTP to it).
#
# Flags checked against sglang 0.5.23 (the released package): python/sglang/srt/server_args.py
# (ServerArgs.add_cli_args) with the fields in python/sglang/srt/arg_groups/fields/*.py; the
# parser's flag names are in tests/data/server_flags/sglang-0.5.23.txt.
#
#   JUDGE_MODEL     checkpoint directory or HF-cache id of the judge (default jeongeunnn/pigreward)
#   SERVED_NAME     served model id, "@<weights revision>" appended (default pigreward-judge);
#                   the revision comes from ops/weights_revision.sh (WEIGHTS_REVISION overrides)
#   HOST, PORT      bind address (default 127.0.0.1, loopback) and port (default 30000)
#   API_KEY         required by clients when set; a HOST that is not loopback needs it
#   CONTEXT_LENGTH  tokens per request, prompt + answer (default 12288, sized below)
#   MEM_FRACTION    share of GPU memory for weights + KV cache (default 0.85)
#   DP              data-parallel replicas, one per GPU (default 1; several GPUs: ops/sglang_router.sh)
# Extra arguments pass through to sglang.launch_server.
#
# Context length, worst-case judge prompt (Qwen2-VL: 14-px patches, 2x2 merge), 15 references (the
# paper's setting; a user with more is fitted by the workers' token budget, which leaves the oldest out):
#   15 rationales x 512 tokens (a rationale cut off at reasoner_max_tokens 256 is asked again
#   with twice the budget)                                                 7680
#   2 images at the 448x448 pixel budget: (448/14)^2 / 4 = 256 tokens
#     + <|vision_start|> + <|vision_end|> = 258 each                        516
#   instructions                                                            ~300
#   user prompt, <= 2,000 characters                                        ~600
#   chat framing (default system turn, role markers)                         ~20
#   answer: the largest the workers send (json-v1 sized from its schema)    1701
#   total                                                                 ~10817  -> 12288 (~13% headroom)
# SGLang answers 400 when prompt + max_tokens exceed it (no silent truncation: --allow-auto-truncate
# is off by default).
#
# Chat template: `qwen2-vl` is SGLang's built-in Qwen2-VL conversation template
# (python/sglang/srt/parser/conversation.py), pinned so the checkpoint's own template, if any,
# cannot change the prompt bytes. --limit-mm-data-per-request caps images per request (400 above
# it). --sampling-defaults openai: fields a request leaves out take the OpenAI defaults instead of
# the checkpoint's generation_config.json; the workers send every sampling field anyway.
# --grammar-backend xgrammar: the `ebnf` / `regex` the workers send are xgrammar grammars (the
# default is resolved at start-up; pinned so it cannot move).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=ops/weights_revision.sh
source "$here/weights_revision.sh"

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 # the weights must already be local

model=${JUDGE_MODEL:-jeongeunnn/pigreward}
host=${HOST:-127.0.0.1}
case $host in
  127.* | localhost | ::1 | '[::1]') ;;
  *)
    if [[ -z ${API_KEY:-} ]]; then
      echo "sglang_judge.sh: refusing to listen on $host without API_KEY (set API_KEY, or HOST=127.0.0.1)" >&2
      exit 2
    fi
    ;;
esac
rev=$(weights_revision "$model")
name=${SERVED_NAME:-pigreward-judge}
[[ $name == *@* ]] || name="$name@$rev"
auth=()
if [[ -n ${API_KEY:-} ]]; then auth=(--api-key "$API_KEY"); fi

exec python -m sglang.launch_server \
  --model-path "$model" \
  --served-model-name "$name" --weight-version "$rev" \
  --host "$host" --port "${PORT:-30000}" \
  ${auth[@]+"${auth[@]}"} \
  --chat-template qwen2-vl \
  --context-length "${CONTEXT_LENGTH:-12288}" \
  --limit-mm-data-per-request '{"image": 2}' \
  --sampling-defaults openai \
  --grammar-backend xgrammar \
  --enable-cache-report \
  --enable-metrics \
  --mem-fraction-static "${MEM_FRACTION:-0.85}" \
  --dp-size "${DP:-1}" \
  "$@"
