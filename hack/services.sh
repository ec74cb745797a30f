#!/usr/bin/env bash
# Start (or stop) the real services the tests talk to, on loopback, with data under .services/.
#
#   hack/services.sh up [NAME...]  install what is missing, start what is not running
#                                   (idempotent); NAMEs pick services (e.g. `up containerd`)
#   hack/services.sh down   stop what `up` started, by recorded PID
#   hack/services.sh status one line per service
#
# Each service lives in hack/services.d/NN-name.sh and defines name_install, name_start and
# name_env (lines of KEY=VALUE for .services/env). See adr/0002-real-services-in-tests.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SVC="$ROOT/.services"
# Unix sockets have a 108-byte path limit, so they live in a short per-checkout folder.
RUN_DIR="/tmp/agentos-svc-$(printf '%s' "$ROOT" | sha1sum | cut -c1-10)"
mkdir -p "$SVC/pids" "$SVC/logs" "$SVC/data" "$RUN_DIR"
export ROOT SVC RUN_DIR

log() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# pid_alive NAME: the process recorded for NAME is running.
pid_alive() {
  local f="$SVC/pids/$1.pid"
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# start_daemon NAME CMD...: start CMD detached, log to .services/logs/NAME.log, record its PID.
start_daemon() {
  local name=$1; shift
  setsid "$@" >>"$SVC/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$SVC/pids/$name.pid"
}

# wait_for DESC TIMEOUT_S CMD...: poll CMD until it succeeds; fail naming DESC and its log.
wait_for() {
  local desc=$1 timeout_s=$2; shift 2
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      die "$desc did not come up within ${timeout_s}s; see $SVC/logs/"
    fi
    sleep 0.2
  done
}

# apt_install PKG...: install Debian packages that are not installed yet.
APT_UPDATED_STAMP="$SVC/.apt-updated"
# shellcheck source=hack/lib/apt.sh
. "$ROOT/hack/lib/apt.sh"
# shellcheck source=hack/lib/overlay.sh
. "$ROOT/hack/lib/overlay.sh"

# One `up`/`down` at a time per checkout. `flock -o` holds the lock in flock itself and
# closes it for the script, so no daemon started below inherits it (one that did would hold
# the lock for its whole life, and the next `down` would wait forever).
if [ -z "${AGENTOS_SERVICES_LOCKED:-}" ]; then
  export AGENTOS_SERVICES_LOCKED=1
  exec flock -o "$SVC/.lock" "$0" "$@"
fi

ALL_SERVICES=()
SERVICES=()
for f in "$ROOT"/hack/services.d/*.sh; do
  # shellcheck source=/dev/null
  . "$f"
  n=$(basename "$f" .sh); SERVICES+=("${n#*-}")
done
ALL_SERVICES=("${SERVICES[@]}")

cmd=${1:-up}
shift || true
if [ "$cmd" = up ] && [ $# -gt 0 ]; then
  for want in "$@"; do
    printf '%s\n' "${SERVICES[@]}" | grep -qx "$want" || die "unknown service: $want"
  done
  SERVICES=("$@")
fi
case "$cmd" in
  up)
    # The console's tests drive Debian's Chromium (tests/e2e/test_console.py), with a font for
    # its text (chromium only recommends one; apt_install adds no recommends); not for `up NAME`.
    if [ $# -eq 0 ]; then apt_install chromium fonts-liberation; fi
    for s in "${SERVICES[@]}"; do "${s}_install"; done
    for s in "${SERVICES[@]}"; do "${s}_start"; done
    tmp="$SVC/env.tmp"
    {
      echo "# written by hack/services.sh; source it: set -a; . .services/env; set +a"
      echo "AGENTOS_SERVICES_DIR=$SVC"
      # Settings of every service, started now or not (`up containerd` must not lose the
      # others'); each is a fixed address, so it stays true.
      for s in "${ALL_SERVICES[@]}"; do "${s}_env"; done
    } > "$tmp"
    mv "$tmp" "$SVC/env"
    log "all services up; settings in $SVC/env"
    ;;
  down)
    for ((i=${#SERVICES[@]}-1; i>=0; i--)); do
      s=${SERVICES[$i]}
      if declare -F "${s}_stop" >/dev/null; then "${s}_stop"; fi
    done
    for f in "$SVC"/pids/*.pid; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .pid); pid=$(cat "$f")
      if kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -f "$f"
    done
    rm -f "$SVC/env"
    ;;
  status)
    for f in "$SVC"/pids/*.pid; do
      [ -e "$f" ] || continue
      name=$(basename "$f" .pid)
      if pid_alive "$name"; then echo "$name running (pid $(cat "$f"))"; else echo "$name stopped"; fi
    done
    ;;
  *) die "usage: $0 up|down|status" ;;
esac
