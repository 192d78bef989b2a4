#!/usr/bin/env bash
# Several GPUs, one endpoint: SGLang's router starts DP replicas of the judge and routes requests
# cache-aware (requests sharing a user's context prefix go to the replica that holds it).
#
# Flags checked against sglang-router 0.3.2 (sglang_router/launch_server.py: the parser is
# ServerArgs.add_cli_args + RouterArgs.add_cli_args(use_router_prefix=True, exclude_host_port=True)
# from sglang_router/router_args.py + --router-dp-worker-base-port), on top of sglang 0.5.23
# (python/sglang/srt/server_args.py). Names: tests/data/server_flags/sglang-router-0.3.2.txt and
# sglang-0.5.23.txt.
#
# Variables as in ops/sglang_judge.sh (JUDGE_MODEL, SERVED_NAME, HOST, PORT, API_KEY,
# CONTEXT_LENGTH, MEM_FRACTION), plus:
#   DP                    replicas, one per GPU (default 8)
#   WORKER_BASE_PORT      first replica port (default 31000); replicas bind HOST too
#   ROUTER_METRICS_PORT   the router's Prometheus port (default 29000), bound to HOST: the router's
#                         own default would be 0.0.0.0
# Context length 12288 and every server flag as in ops/sglang_judge.sh (arithmetic there).
# The router binds HOST:PORT (it takes --host/--port from the server arguments). With API_KEY set,
# the replicas require it (--api-key) and the router both sends it to them and demands it from its
# own clients as a Bearer token (--router-api-key).
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
      echo "sglang_router.sh: refusing to listen on $host without API_KEY (set API_KEY, or HOST=127.0.0.1)" >&2
      exit 2
    fi
    ;;
esac
rev=$(weights_revision "$model")
name=${SERVED_NAME:-pigreward-judge}
[[ $name == *@* ]] || name="$name@$rev"
auth=()
if [[ -n ${API_KEY:-} ]]; then auth=(--api-key "$API_KEY" --router-api-key "$API_KEY"); fi

exec python -m sglang_router.launch_server \
  --model-path "$model" \
  --served-model-name "$name" --weight-version "$rev" \
  --host "$host" --port "${PORT:-30000}" \
  ${auth[@]+"${auth[@]}"} \
  --dp-size "${DP:-8}" \
  --router-policy cache_aware \
  --router-dp-worker-base-port "${WORKER_BASE_PORT:-31000}" \
  --router-prometheus-host "$host" \
  --router-prometheus-port "${ROUTER_METRICS_PORT:-29000}" \
  --chat-template qwen2-vl \
  --context-length "${CONTEXT_LENGTH:-12288}" \
  --limit-mm-data-per-request '{"image": 2}' \
  --sampling-defaults openai \
  --grammar-backend xgrammar \
  --enable-cache-report \
  --enable-metrics \
  --mem-fraction-static "${MEM_FRACTION:-0.85}" \
  "$@"
