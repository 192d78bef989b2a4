#!/usr/bin/env bash
# Install the project with its test extras, make sure the services the tests need are up, then run, in
# this order: ruff (lint and format check), mypy (strict), pytest. Arguments go to pytest
# (`bash ops/test.sh -m "not slow"` is the quick subset).
# The tests start their own private Redis and SeaweedFS S3 servers; Postgres is the local server (or the
# admin URL in PIGREWARD_TEST_POSTGRES), on which each run creates and drops its own database.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install -q -e ".[cpu,dev]"

if [ -z "${PIGREWARD_TEST_POSTGRES:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "starting the local PostgreSQL cluster" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1; then
  echo "starting redis-server on 127.0.0.1:6379" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi

# The viewer test renders pages in headless Chromium (Debian's package).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium for the viewer test" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "ruff check, ruff format --check, mypy" >&2
python3 -m ruff check .
python3 -m ruff format --check .
python3 -m mypy
exec python3 -m pytest -q -p no:cacheprovider "$@"
