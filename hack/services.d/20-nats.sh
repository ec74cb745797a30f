# nats-server from Debian with JetStream, on 127.0.0.1.
NATS_PORT=${AGENTOS_NATS_PORT:-54222}
NATS_MONITOR_PORT=${AGENTOS_NATS_MONITOR_PORT:-58222}

nats_install() { apt_install nats-server; }

nats_ready() { curl -fsS "http://127.0.0.1:$NATS_MONITOR_PORT/healthz?js-enabled-only=true"; }

nats_start() {
  if pid_alive nats && nats_ready >/dev/null 2>&1; then log "nats already running"; return; fi
  mkdir -p "$SVC/data/nats"
  start_daemon nats nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" \
    -js -sd "$SVC/data/nats" -n agentos-test
  wait_for nats 30 nats_ready
  log "nats up on 127.0.0.1:$NATS_PORT (JetStream)"
}

nats_env() {
  echo "AGENTOS_NATS_URL=nats://127.0.0.1:$NATS_PORT"
  echo "AGENTOS_NATS_MONITOR_URL=http://127.0.0.1:$NATS_MONITOR_PORT"
}
