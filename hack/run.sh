#!/usr/bin/env bash
# `make run`: Agent OS on embedded defaults (SQLite, the embedded nats-server) with the
# example agents, then one run to each agent on the SDK, followed live.
#
# Starts the private containerd of hack/services.sh (runc and gVisor sandboxes, the example
# image), then `agentos serve`, applies examples/agents/ and shows the agents until all are
# Ready. Agent OS keeps running until Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
UV=${UV:-uv}

hack/services.sh up containerd
set -a; . .services/env; set +a
unset AGENTOS_DATABASE_URL AGENTOS_NATS_URL      # embedded defaults: SQLite, own nats-server
export AGENTOS_RUNTIME=containerd AGENTOS_LOG_FORMAT=${AGENTOS_LOG_FORMAT:-console}
export AGENTOS_STATE_DIR=${AGENTOS_STATE_DIR:-$ROOT/.agentos}
export AGENTOS_SANDBOX_DIR=${AGENTOS_SANDBOX_DIR:-$AGENTOS_STATE_DIR/sandboxes}
# Sandboxes have their own network (adr/0017): they reach the gateway and the egress proxy on
# the sandbox bridge's host address, which hack/services.sh brought up.
bridge=$(printf '%s' "${AGENTOS_SANDBOX_SUBNET:-10.89.0.0/16}" | sed 's#\.0/[0-9]*$#.1#')
export AGENTOS_GATEWAY_HOST="127.0.0.1,$bridge"
export AGENTOS_GATEWAY_URL="http://$bridge:${AGENTOS_GATEWAY_PORT:-8091}"
port=${AGENTOS_PORT:-8080}
export AGENTOS_API_URL="http://127.0.0.1:$port"
agentos() { "$UV" run --frozen agentos "$@"; }

"$UV" run --frozen agentos serve > "$AGENTOS_STATE_DIR.log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT INT TERM
mkdir -p "$AGENTOS_STATE_DIR"
for _ in $(seq 1 300); do
  curl -fsS "$AGENTOS_API_URL/healthz" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { cat "$AGENTOS_STATE_DIR.log"; exit 1; }
  sleep 0.2
done
echo "Agent OS is up at $AGENTOS_API_URL (log: $AGENTOS_STATE_DIR.log)"
# Authentication is always on: a platform-admin token, made on the same (SQLite) database.
AGENTOS_TOKEN=$(agentos token create --principal make-run --platform-admin)
export AGENTOS_TOKEN
agentos apply -f examples/agents/
want=$(ls examples/agents/*.yaml | wc -l)
for _ in $(seq 1 180); do
  table=$(agentos get agents -o wide)
  ready=$(printf '%s\n' "$table" | awk 'NR>1 && $2=="Ready"' | wc -l)
  settled=$(printf '%s\n' "$table" | awk 'NR>1 && ($2=="Ready" || $2=="Failed")' | wc -l)
  printf '\033[2J\033[H%s\n\n%s of %s Ready\n' "$table" "$ready" "$want"
  [ "$settled" -ge "$want" ] && break  # flaky-agent may end Failed: it shows the restart policy
  sleep 1
done

# Work for the agents on the SDK: each run is followed live, then its steps are shown.
demo_run() {  # AGENT INPUT
  echo; echo "== agentos run $1 --input '$2' --follow"
  local out name
  out=$(mktemp)
  agentos run "$1" --input "$2" --follow | tee "$out" || true
  name=$(sed -n 's#^run/\([^ ]*\) created$#\1#p' "$out" | head -n 1)
  rm -f "$out"
  if [ -n "$name" ]; then agentos describe run "$name" || true; fi
}
demo_run tool-agent '{"task": "compute 2+3*4 and save it to result.txt"}'
echo "   the file it wrote: $(cat .agentos/work/tool-agent/result.txt 2>/dev/null)"
demo_run checkpoint-agent '{"stages": 4, "stage_seconds": 0.3}'
demo_run tool-agent-runc '{"expression": "(2+3)*4", "file": "result.txt"}'
demo_run tool-agent-gvisor '{"expression": "7*6", "file": "result.txt"}'
# A run that waits for a human: the destructive write_file of tool-agent-approval.
echo; echo "== agentos run tool-agent-approval --input '{\"expression\": \"6*7\", \"file\": \"answer.txt\"}'"
waiting=$(agentos run tool-agent-approval --input '{"expression": "6*7", "file": "answer.txt"}' \
  | sed -n 's#^run/\([^ ]*\) created$#\1#p' | head -n 1) || true
for _ in $(seq 1 60); do
  agentos get approvals | grep -q "${waiting:-none}" && break
  sleep 0.5
done
agentos get approvals || true
echo "   run/$waiting is InputRequired: it waits for a human to approve its write_file."
echo "   Approve it: agentos approve run $waiting [--edits '{\"path\": \"other.txt\"}']"
echo "   or reject:  agentos reject run $waiting --comment 'not today'"
echo
echo "Try: agentos run tool-agent --input '{\"expression\": \"6*7\"}' --follow"
echo "     agentos get runs; agentos describe agent flaky-agent   (AGENTOS_API_URL=$AGENTOS_API_URL)"
echo "     with AGENTOS_TOKEN=$AGENTOS_TOKEN"
echo
echo "The console: $AGENTOS_API_URL/ui/  (the agents, these runs and their traces, the approval)"
echo "   log in with the token: $AGENTOS_TOKEN"
echo "Agent OS keeps running; Ctrl-C stops it."
wait $server
