# Prometheus from Debian (which also brings promtool, used by the rule tests), on 127.0.0.1.
#
# Scrapes every Agent OS process of the local stack and loads deploy/prometheus/rules/:
#   job agentos        `agentos serve` (API, controller and in-process relay) on
#                      127.0.0.1:${AGENTOS_PORT:-8080}/metrics
#   job agentos-relay  a standalone `agentos relay`, only when AGENTOS_RELAY_METRICS_PORT is
#                      set (the relay serves metrics only then)
# The config is written at every `up` to .services/data/prometheus/prometheus.yml; a running
# Prometheus whose config changed is told to reload (SIGHUP). Data under
# .services/data/prometheus/tsdb. No Alertmanager runs: alerts show at /alerts.
PROM_PORT=${AGENTOS_PROMETHEUS_PORT:-59090}
PROM_DATA="$SVC/data/prometheus"
PROM_CONFIG="$PROM_DATA/prometheus.yml"

prometheus_install() { apt_install prometheus; }

prometheus_ready() { curl -fsS "http://127.0.0.1:$PROM_PORT/-/ready"; }

# prometheus_config: the scrape config, on stdout.
prometheus_config() {
  cat <<EOF
# written by hack/services.d/50-prometheus.sh at \`hack/services.sh up\`; edits are lost
global:
  scrape_interval: 15s
  evaluation_interval: 30s
rule_files:
  - $ROOT/deploy/prometheus/rules/*.rules.yml
scrape_configs:
  - job_name: agentos
    static_configs:
      - targets: ["127.0.0.1:${AGENTOS_PORT:-8080}"]
EOF
  if [ -n "${AGENTOS_RELAY_METRICS_PORT:-}" ]; then
    cat <<EOF
  - job_name: agentos-relay
    static_configs:
      - targets: ["127.0.0.1:$AGENTOS_RELAY_METRICS_PORT"]
EOF
  fi
  cat <<EOF
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROM_PORT"]
EOF
}

prometheus_start() {
  mkdir -p "$PROM_DATA/tsdb"
  prometheus_config > "$PROM_CONFIG.tmp"
  promtool check config "$PROM_CONFIG.tmp" >>"$SVC/logs/prometheus.log" 2>&1 \
    || die "the generated Prometheus config or the rules do not check; see $SVC/logs/prometheus.log"
  if pid_alive prometheus && prometheus_ready >/dev/null 2>&1; then
    if cmp -s "$PROM_CONFIG.tmp" "$PROM_CONFIG"; then
      rm -f "$PROM_CONFIG.tmp"
    else
      mv "$PROM_CONFIG.tmp" "$PROM_CONFIG"
      kill -HUP "$(cat "$SVC/pids/prometheus.pid")"
      log "prometheus config changed: reloaded"
    fi
    log "prometheus already running"
    return
  fi
  mv "$PROM_CONFIG.tmp" "$PROM_CONFIG"
  start_daemon prometheus prometheus --config.file="$PROM_CONFIG" \
    --storage.tsdb.path="$PROM_DATA/tsdb" --web.listen-address="127.0.0.1:$PROM_PORT"
  wait_for prometheus 60 prometheus_ready
  log "prometheus up on http://127.0.0.1:$PROM_PORT (rules from deploy/prometheus/rules)"
}

prometheus_env() {
  echo "AGENTOS_PROMETHEUS_URL=http://127.0.0.1:$PROM_PORT"
}
