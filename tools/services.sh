#!/usr/bin/env bash
# Start the loopback services the integration tests use, when they are down (see SERVICES.md).
# On a machine without them, say which are missing; the tests that need them skip with that
# reason, except under CI (CI=true) where a missing service fails the run.
set -uo pipefail
up() { (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start() { # port name command...
  local port=$1 name=$2; shift 2
  up "$port" && return 0
  if command -v "$1" >/dev/null 2>&1; then
    echo "starting $name on 127.0.0.1:$port"
    "$@" >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do up "$port" && return 0; sleep 0.5; done
  fi
  echo "warning: $name is not running on 127.0.0.1:$port; its integration tests will skip" >&2
  [ "${CI:-}" = "true" ] && return 1
  return 0
}
status=0
start 6379 redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
  --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log || status=1
start 4222 nats start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server \
  -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || status=1
start 5672 rabbitmq rabbitmq-server -detached || status=1
start 1883 mosquitto mosquitto -d -c /etc/mosquitto/mosquitto.conf || status=1
# Prometheus: only the binary (its tests start a private server per session)
"$(dirname "$0")/ensure-prometheus.sh" || status=1
exit $status
