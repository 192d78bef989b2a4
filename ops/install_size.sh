#!/usr/bin/env bash
# Measure README's first command: a fresh clone of this checkout's HEAD, a fresh venv, the core install
# (no pip cache), then the demo. Prints the install's time and the venv's size.
#   bash ops/install_size.sh [EXTRAS]        # e.g. bash ops/install_size.sh cpu  (for ".[cpu]")
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
extras="${1:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/clone"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
cd "$work/clone"
start=$(date +%s)
pip install --no-cache-dir -q -e "$spec" 2>"$work/pip.err" || { cat "$work/pip.err" >&2; exit 1; }
took=$(( $(date +%s) - start ))
size=$(du -sm "$work/venv" | cut -f1)
echo "install of $spec: ${took} s, venv ${size} MB"
for m in torch transformers xgrammar; do
  python -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('$m') else 1)" && echo "  has $m" || echo "  no $m"
done
PIGREWARD_DATA_DIR="$work/data" pigreward demo --no-progress | tail -3
