#!/bin/sh
# Starts a 3-node NATS cluster with JetStream on this machine (loopback ports 4222-4224, routes on
# 6222-6224), stores under ./.jetfn/nats-cluster/, logs in ./.jetfn/nats-cluster/n*.log.
# Runs in the foreground until Ctrl-C (or SIGTERM), which stops the three servers by their process ids.
#   sh deploy/nats-cluster/start.sh
# Then, in another terminal:
#   NATS_URL=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 JETFN_REPLICAS=3 npx jetfn start
set -eu
here=$(cd "$(dirname "$0")" && pwd)
server=${NATS_SERVER_BIN:-nats-server}
mkdir -p .jetfn/nats-cluster
pids=""
stop() {
  trap - INT TERM EXIT
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  wait
  echo "cluster stopped"
}
trap stop INT TERM EXIT
for node in n1 n2 n3; do
  "$server" -c "$here/$node.conf" >".jetfn/nats-cluster/$node.log" 2>&1 &
  pids="$pids $!"
done
echo "started nats-server pids$pids; waiting for the JetStream meta leader"
tries=0
until grep -qs "metadata leader" .jetfn/nats-cluster/n1.log .jetfn/nats-cluster/n2.log .jetfn/nats-cluster/n3.log; do
  for pid in $pids; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a nats-server exited (port in use? see .jetfn/nats-cluster/n*.log):" >&2
      tail -n 3 .jetfn/nats-cluster/n*.log >&2
      exit 1
    fi
  done
  tries=$((tries + 1))
  if [ "$tries" -gt 60 ]; then
    echo "no JetStream meta leader after 30s; see .jetfn/nats-cluster/n*.log" >&2
    exit 1
  fi
  sleep 0.5
done
for pid in $pids; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "a nats-server exited (port in use? see .jetfn/nats-cluster/n*.log):" >&2
    tail -n 3 .jetfn/nats-cluster/n*.log >&2
    exit 1
  fi
done
echo "cluster ready: NATS_URL=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 (Ctrl-C stops it)"
wait
