#!/usr/bin/env bash
# A throwaway RabbitMQ cluster (3 nodes, or CLUSTER_NODES) on this machine, for the tests that kill or restart
# brokers (tests/cluster/). It never
# touches the machine's own broker (rabbit@localhost on 5672): its nodes have their own names, ports, config
# files and data directories, all under CLUSTER_DIR.
#
#   tests/cluster/cluster.sh start          start the nodes, join them into one cluster, enable rabbitmq_sharding
#   tests/cluster/cluster.sh stop           stop every node and remove CLUSTER_DIR
#   tests/cluster/cluster.sh kill N         kill -9 node N (1..3)
#   tests/cluster/cluster.sh restart N      start node N again with its old data: it rejoins by itself
#   tests/cluster/cluster.sh urls           the nodes' AMQP URLs, one a line
#   tests/cluster/cluster.sh ctl N ARGS...  rabbitmqctl against node N
#
# Environment: CLUSTER_DIR (default /tmp/dms-upload-worker-cluster), CLUSTER_PORT (first AMQP port, 5681),
# CLUSTER_DIST_PORT (first distribution port, 25681), CLUSTER_NODE_PREFIX (node names, dmsc -> dmsc1@localhost),
# CLUSTER_SAVE_LOGS (stop copies the nodes' logs there first), CLUSTER_NODES (how many nodes, 3).
# Needs root (Debian's wrapper runs each node as the rabbitmq user, whose cookie the nodes share) or the
# rabbitmq user itself.
set -euo pipefail

DIR=${CLUSTER_DIR:-/tmp/dms-upload-worker-cluster}
PORT=${CLUSTER_PORT:-5681}
DIST_PORT=${CLUSTER_DIST_PORT:-25681}
PREFIX=${CLUSTER_NODE_PREFIX:-dmsc}
NODES=${CLUSTER_NODES:-3}
RABBIT_HOME=/var/lib/rabbitmq  # the Erlang cookie lives here; every node and rabbitmqctl must use it

node_name() { echo "${PREFIX}$1@localhost"; }
node_port() { echo $((PORT + $1 - 1)); }
node_dir() { echo "$DIR/node$1"; }

# RabbitMQ's scripts read unprefixed variables too (LOGS, NODENAME, ...): nodes get a clean environment.
clean_env() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$RABBIT_HOME" LANG=C.UTF-8 LC_ALL=C.UTF-8 "$@"
}

ctl() {
  local n=$1
  shift
  clean_env rabbitmqctl -q -n "$(node_name "$n")" "$@"
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

prepare() {
  local n=$1 d
  d=$(node_dir "$n")
  mkdir -p "$d/mnesia" "$d/log"
  # /etc/rabbitmq/rabbitmq.conf pins 127.0.0.1:5672, which would win over RABBITMQ_NODE_PORT: own config file.
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(node_port "$n")
loopback_users = none
EOF
  echo '[rabbitmq_sharding].' >"$d/enabled_plugins"
  # The machine's rabbitmq-env.conf names its own node; ours keep only its loopback-only distribution.
  cat >"$d/rabbitmq-env.conf" <<EOF
ERL_EPMD_ADDRESS=127.0.0.1
EOF
  chown -R rabbitmq:rabbitmq "$DIR"
}

start_node() {
  local n=$1 d
  d=$(node_dir "$n")
  clean_env \
    RABBITMQ_NODENAME="$(node_name "$n")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(node_port "$n")" \
    RABBITMQ_DIST_PORT=$((DIST_PORT + n - 1)) \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/log" \
    RABBITMQ_PID_FILE="$d/pid" \
    RABBITMQ_SERVER_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    rabbitmq-server -detached
  if ! timeout 60 bash -c "$(declare -f clean_env ctl node_name); PREFIX=$PREFIX RABBIT_HOME=$RABBIT_HOME; ctl $n wait '$d/pid' --timeout 60" >/dev/null; then
    echo "node $(node_name "$n") did not start; its log:" >&2
    tail -n 30 "$d/log/"*.log >&2 || true
    return 1
  fi
}

start() {
  if [ -e "$DIR" ]; then
    echo "$DIR exists: a cluster may be running (run stop first)" >&2
    return 1
  fi
  local n
  for n in $(seq 1 $NODES); do
    for p in "$(node_port "$n")" $((DIST_PORT + n - 1)); do
      port_free "$p" || { echo "port $p is in use" >&2; return 1; }
    done
  done
  for n in $(seq 1 $NODES); do prepare "$n"; done
  for n in $(seq 1 $NODES); do start_node "$n"; done
  for n in $(seq 2 $NODES); do
    ctl "$n" stop_app
    ctl "$n" join_cluster "$(node_name 1)"
    ctl "$n" start_app
  done
  ctl 1 await_startup
  echo "cluster up: $(urls | paste -sd' ')" >&2
}

pid_of() {
  local f
  f="$(node_dir "$1")/pid"
  [ -s "$f" ] && cat "$f"
}

kill_node() {
  local pid
  pid=$(pid_of "$1") || { echo "node $1 has no pid file" >&2; return 1; }
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

stop() {
  local n pid
  for n in $(seq 1 $NODES); do
    pid=$(pid_of "$n" 2>/dev/null) || continue
    kill -0 "$pid" 2>/dev/null || continue
    timeout 30 bash -c "$(declare -f clean_env ctl node_name); PREFIX=$PREFIX RABBIT_HOME=$RABBIT_HOME; ctl $n stop" \
      >/dev/null 2>&1 || true
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ -n "${CLUSTER_SAVE_LOGS:-}" ]; then  # for a post-mortem: the nodes' logs outlive the cluster
    for n in $(seq 1 $NODES); do
      mkdir -p "$CLUSTER_SAVE_LOGS/node$n" && cp -r "$(node_dir "$n")/log/." "$CLUSTER_SAVE_LOGS/node$n/" 2>/dev/null || true
    done
  fi
  rm -rf "$DIR"
}

urls() {
  local n
  for n in $(seq 1 $NODES); do echo "amqp://guest:guest@127.0.0.1:$(node_port "$n")/"; done
}

cmd=${1:-}
shift || true
case "$cmd" in
  start) start ;;
  stop) stop ;;
  kill) kill_node "${1:?node number}" ;;
  restart) start_node "${1:?node number}" ;;
  urls) urls ;;
  ctl) n=${1:?node number}; shift; ctl "$n" "$@" ;;
  *)
    echo "usage: $0 {start|stop|kill N|restart N|urls|ctl N ARGS...}" >&2
    exit 2
    ;;
esac
