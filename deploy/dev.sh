#!/usr/bin/env bash
# Developer entry point on a fresh machine: sets up .venv, makes sure RabbitMQ runs, then
#   bash deploy/dev.sh test [pytest args]   runs the whole test suite (what CI runs)
#   bash deploy/dev.sh demo                 runs the worker end to end against the bundled DMS EMULATOR
set -euo pipefail
cd "$(dirname "$0")/.."

ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch .venv/.installed
  fi
}

broker_up() {
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

ensure_rabbitmq() {
  broker_up && return 0
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "RabbitMQ not installed; installing it with apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  echo "starting RabbitMQ" >&2
  rabbitmq-server -detached || true
  for _ in $(seq 1 90); do
    broker_up && return 0
    sleep 1
  done
  echo "RabbitMQ did not come up on 127.0.0.1:5672" >&2
  return 1
}

cmd="${1:-}"
shift || true
case "$cmd" in
  test)
    ensure_venv
    ensure_rabbitmq
    exec .venv/bin/python -m pytest "$@"
    ;;
  demo)
    ensure_venv
    ensure_rabbitmq
    exec .venv/bin/python -m worker demo "$@"
    ;;
  *)
    echo "usage: bash deploy/dev.sh {test|demo} [args]" >&2
    exit 2
    ;;
esac
