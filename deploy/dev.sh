#!/usr/bin/env bash
# Developer entry point on a fresh machine: sets up .venv, makes sure RabbitMQ runs, then
#   bash deploy/dev.sh check                ruff check, ruff format --check, mypy (worker/ and tests/)
#   bash deploy/dev.sh test [pytest args]   the check step, then the whole test suite (what CI runs)
#   bash deploy/dev.sh demo                 runs the worker end to end against the bundled DMS EMULATOR
#   bash deploy/dev.sh broker               only makes sure RabbitMQ runs (with rabbitmq_sharding)
#   bash deploy/dev.sh broker-inventory     the queues and exchanges on the machine's broker, sorted (for CI's
#                                           check that the tests leave it as they found it)
#   bash deploy/dev.sh lock [uv args]       pins the dependency set anew from pyproject.toml's ranges into
#                                           requirements/runtime.txt and requirements/dev.txt (with uv; e.g.
#                                           `--upgrade-package aiohttp`, or `--upgrade` for everything)
# What `test` does to the machine: installs RabbitMQ with apt if missing and starts it (127.0.0.1:5672),
# enables its rabbitmq_sharding plugin, installs Debian's prometheus package for promtool (the server is not
# started), iproute2 and nftables for the network-fault tests (which make network namespaces of their own and
# never touch another address), Debian's chromium and chromium-driver for the console's browser tests, and
# starts throwaway RabbitMQ nodes of its own on 5681-5683 and 5691 for the broker-fault tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The venv gets exactly the versions in requirements/dev.txt (hashes checked), then the package itself without
# dependencies; again whenever the lock or pyproject.toml is newer than the last install.
ensure_venv() {
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f .venv/.installed ] || [ requirements/dev.txt -nt .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.txt
    .venv/bin/python -m pip install --quiet --no-deps -e .
    touch .venv/.installed
  fi
}

TEST_PROCESSES=4  # pytest-xdist processes for `test`: the tests mostly wait on timers and sockets, not on the CPU

UV_VERSION=0.13.9  # the tool that writes the lock files; pinned so that two engineers' locks read alike

# Both lock files resolve for every platform (--universal), so a laptop on macOS installs from them too. Extra
# arguments go to both `uv pip compile` runs: without any, versions already pinned stay as they are.
update_locks() {
  if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
  .venv/bin/python -m pip install --quiet "uv==$UV_VERSION"
  local common=(--quiet --universal --python-version 3.11 --generate-hashes --custom-compile-command "bash deploy/dev.sh lock")
  .venv/bin/uv pip compile pyproject.toml "${common[@]}" -o requirements/runtime.txt "$@"
  .venv/bin/uv pip compile pyproject.toml --extra dev "${common[@]}" -o requirements/dev.txt "$@"
}

broker_up() {
  (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null
}

# The topology routes commands with the x-modulus-hash exchange: a plugin before RabbitMQ 4.3, built in after.
ensure_broker_plugins() {
  local available
  # The CLI can hang on an overloaded node: bounded, so a setup step never stalls CI.
  available=$(timeout 120 rabbitmq-plugins list -m 2>/dev/null </dev/null) || return 0  # not our node (e.g. remote)
  if grep -qx rabbitmq_sharding <<<"$available" \
    && ! timeout 120 rabbitmq-plugins list -e -m 2>/dev/null </dev/null | grep -qx rabbitmq_sharding; then
    echo "enabling the rabbitmq_sharding plugin (x-modulus-hash exchange)" >&2
    timeout 120 rabbitmq-plugins enable --quiet rabbitmq_sharding >/dev/null </dev/null || true
  fi
}

ensure_rabbitmq() {
  start_rabbitmq || return 1
  ensure_broker_plugins
}

start_rabbitmq() {
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

# promtool comes with Debian's prometheus package. Installing it must not start a Prometheus server: where
# no policy-rc.d forbids starting services already, one does for the duration of the install.
ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  echo "promtool not installed; installing Debian's prometheus package with apt (the server is not started)" >&2
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  local status=0
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } || status=$?
  if [ -n "$made_policy" ]; then rm -f "$policy"; fi
  if [ -d /run/systemd/system ]; then  # nor at the next boot
    systemctl disable --now --quiet prometheus 2>/dev/null || true
  fi
  return $status
}

# The operator console's browser tests (tests/integration/test_console.py) drive Debian's Chromium through
# Playwright, pointed at /usr/bin/chromium: no browser is downloaded. chromium-driver comes along for Selenium
# users and keeps the two at the same version.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  echo "chromium not installed; installing Debian's chromium and chromium-driver with apt (browser tests)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
}

# The network-fault tests (tests/integration/netns.py) make namespaces with iproute2 and cut links with nftables.
ensure_network_tools() {
  command -v ip >/dev/null 2>&1 && command -v nft >/dev/null 2>&1 && return 0
  echo "installing iproute2 and nftables with apt (for the network-fault tests)" >&2
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 nftables >/dev/null; } ||
    echo "could not install iproute2/nftables: the network-fault tests will say what is missing" >&2
}

run_checks() {
  echo "check: ruff check, ruff format --check, mypy, promtool (alert rules)" >&2
  .venv/bin/ruff check .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
  ensure_promtool
  promtool check rules deploy/prometheus/alerts.yml >/dev/null
  (cd deploy/prometheus && promtool test rules alerts.test.yml)
}

cmd="${1:-}"
shift || true
case "$cmd" in
  check)
    ensure_venv
    run_checks
    ;;
  test)
    ensure_venv
    run_checks
    ensure_rabbitmq
    ensure_network_tools
    ensure_chromium
    # Several processes (pytest-xdist); tests that share fixed resources run in one of them, by group (see
    # tests/conftest.py). A later -n wins: `bash deploy/dev.sh test -n 0` runs in one process.
    exec .venv/bin/python -m pytest -n "$TEST_PROCESSES" --dist loadgroup "$@"
    ;;
  broker)
    ensure_rabbitmq
    ;;
  broker-inventory)
    # Bounded: an overloaded node's CLI can hang. Prints nothing when the node is not ours to ask.
    { timeout 120 rabbitmqctl -q list_queues name --no-table-headers </dev/null | sed 's/^/queue /' &&
      timeout 120 rabbitmqctl -q list_exchanges name --no-table-headers </dev/null | sed 's/^/exchange /'; } | sort
    ;;
  lock)
    update_locks "$@"
    ;;
  demo)
    ensure_venv
    ensure_rabbitmq
    exec .venv/bin/python -m worker demo "$@"
    ;;
  *)
    echo "usage: bash deploy/dev.sh {check|test|demo|broker|broker-inventory|lock} [args]" >&2
    exit 2
    ;;
esac
