#!/usr/bin/env bash
# The revision of the weights a model path points at, for the served name `NAME@REV`.
#
#   ops/weights_revision.sh MODEL      prints REV (or sourced: `weights_revision MODEL`)
#
# MODEL is a checkpoint directory or a hub id already in the local HF cache (the launch scripts
# run with HF_HUB_OFFLINE=1, so nothing is downloaded). REV is, in order:
#   1. $WEIGHTS_REVISION, when the operator sets it;
#   2. the snapshot hash, when the directory is `.../snapshots/<40 hex>` (the hub commit);
#   3. for a hub id, the commit `refs/${MODEL_REVISION:-main}` names in the HF cache;
#   4. otherwise 12 hex digits of a sha256 over config.json, model.safetensors.index.json (if any)
#      and, for every *.safetensors file, its name, its size and 1 MiB read at its start, middle and
#      end: retrained weights keep the config, the shapes and so the sizes, but not those bytes.
#      Cheap (3 MiB per shard, no full read); a copy of the same weights keeps the revision.
# It fails (exit 2, one line on stderr) when MODEL has no config.json or is not in the cache.

weights_revision() {
  local model=${1:?usage: weights_revision MODEL}
  if [[ -n ${WEIGHTS_REVISION:-} ]]; then
    printf '%s\n' "$WEIGHTS_REVISION"
    return 0
  fi
  local dir=$model
  if [[ ! -d $model ]]; then
    # A hub id: where huggingface_hub keeps it (same precedence as huggingface_hub's constants).
    local cache=${HF_HUB_CACHE:-${HUGGINGFACE_HUB_CACHE:-${HF_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/huggingface}/hub}}
    local repo="$cache/models--${model//\//--}" ref=${MODEL_REVISION:-main} commit
    if [[ $ref =~ ^[0-9a-f]{40}$ ]]; then
      commit=$ref
    elif [[ -f $repo/refs/$ref ]]; then
      commit=$(<"$repo/refs/$ref")
    else
      echo "weights_revision: $model is not a directory and not in the HF cache ($repo/refs/$ref missing); download it first (HF_HUB_OFFLINE=1)" >&2
      return 2
    fi
    dir="$repo/snapshots/$commit"
  fi
  if [[ ! -f $dir/config.json ]]; then
    echo "weights_revision: no config.json in $dir" >&2
    return 2
  fi
  local parent
  parent=$(basename "$(dirname "$dir")")
  local leaf
  leaf=$(basename "$dir")
  if [[ $parent == snapshots && $leaf =~ ^[0-9a-f]{40}$ ]]; then
    printf '%s\n' "$leaf"
    return 0
  fi
  python3 -c '
import hashlib, os, sys
d = sys.argv[1]
h = hashlib.sha256()
for name in ("config.json", "model.safetensors.index.json"):
    path = os.path.join(d, name)
    if os.path.isfile(path):
        with open(path, "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
block = 1 << 20
for name in sorted(n for n in os.listdir(d) if n.endswith(".safetensors")):
    path = os.path.join(d, name)
    size = os.path.getsize(path)
    h.update(f"{name}\0{size}\n".encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - block // 2), max(0, size - block)}):
            f.seek(offset)
            h.update(f.read(block))
print(h.hexdigest()[:12])
' "$dir"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -euo pipefail
  weights_revision "$@"
fi
