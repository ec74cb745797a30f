# Kubernetes for tests: etcd, kube-apiserver and KWOK, built from their Go modules by
# hack/build-k8s-tools.sh. (Not Debian 12's etcd 3.4.23: it is older than kube-apiserver 1.36
# supports, and client-go informers such as KWOK's then see changes only on relists.)
#
# etcd and kube-apiserver listen on 127.0.0.1 only. The apiserver serves TLS with certificates
# made here by openssl (under .services/data/kube), authenticates an admin by client
# certificate (group system:masters), enforces RBAC (--authorization-mode=Node,RBAC) and signs
# ServiceAccount tokens (TokenRequest). No kube-controller-manager, scheduler or kubelet runs:
# KWOK plays the kubelet for nodes annotated kwok.x-k8s.io/node=fake (Ready nodes, Running
# pods). Without a controller manager nothing creates a namespace's "default" ServiceAccount,
# finalizes deleted namespaces or garbage-collects owned objects; tests create what they need.
KUBE_ETCD_PORT=${AGENTOS_ETCD_PORT:-52379}
KUBE_ETCD_PEER_PORT=${AGENTOS_ETCD_PEER_PORT:-52380}
KUBE_API_PORT=${AGENTOS_KUBE_API_PORT:-56443}
KUBE_KWOK_PORT=${AGENTOS_KWOK_PORT:-56480}
KUBE_SERVICE_CIDR=10.96.0.0/16
KUBE_BIN="${AGENTOS_TOOLS_CACHE:-$HOME/.cache/agentos-tools}/bin"
KUBE_PKI="$SVC/data/kube"
KUBE_ETCD_DATA="$SVC/data/etcd"
KUBECONFIG_FILE="$SVC/kubeconfig"
KUBE_KWOK_CONFIG="$SVC/data/kube/kwok.yaml"
KUBE_SERVER="https://127.0.0.1:$KUBE_API_PORT"

kube_install() {
  apt_install openssl curl iproute2
  # Cached: returns at once when the pinned versions are already built. Prints the bin dir.
  KUBE_BIN=$("$ROOT/hack/build-k8s-tools.sh") || die "hack/build-k8s-tools.sh failed"
  for b in etcd kube-apiserver kubectl kwok helm; do
    [ -x "$KUBE_BIN/$b" ] || die "$KUBE_BIN/$b missing after hack/build-k8s-tools.sh"
  done
  kube_kwok_config
}

# kwok (since v0.4) does nothing without Stages in its config. Use the ones kwokctl uses by
# default, from kwok's own module (the Go module proxy): node-initialize and node-heartbeat
# make nodes Ready and keep their status fresh; pod-ready, pod-complete and pod-delete make
# pods Running (or Succeeded) and remove deleted ones. No node leases: without a controller
# manager nothing reads them, and nothing would garbage-collect a deleted node's lease.
kube_kwok_config() {
  local version header dir f tmp="$KUBE_KWOK_CONFIG.$$.tmp"
  version=$(cat "$KUBE_BIN/.kwok.version")
  header="# kwok $version stages: node-fast, node-heartbeat, pod-fast"
  [ "$(head -1 "$KUBE_KWOK_CONFIG" 2>/dev/null)" = "$header" ] && return
  dir=$(cd /tmp && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/kustomize/stage" ] || die "cannot find the stages of sigs.k8s.io/kwok@$version"
  mkdir -p "$(dirname "$KUBE_KWOK_CONFIG")"
  echo "$header" > "$tmp"
  for f in node/fast/node-initialize node/heartbeat/node-heartbeat \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    { echo "---"; cat "$dir/kustomize/stage/$f.yaml"; } >> "$tmp"
  done
  mv "$tmp" "$KUBE_KWOK_CONFIG"
}

kube_etcd_ready() {
  curl -fsS "http://127.0.0.1:$KUBE_ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'
}

kube_api_ready() {
  curl -fsS --cacert "$KUBE_PKI/ca.crt" --cert "$KUBE_PKI/admin.crt" --key "$KUBE_PKI/admin.key" \
    "$KUBE_SERVER/readyz" 2>/dev/null | grep -qx ok
}

kube_kwok_ready() { curl -fsS "http://127.0.0.1:$KUBE_KWOK_PORT/healthz" >/dev/null 2>&1; }

# The PKI: a CA, the apiserver's serving certificate, the admin's client certificate and the
# ServiceAccount signing key. Made once; kept across restarts so kubeconfigs stay valid.
kube_pki() {
  local d=$KUBE_PKI
  mkdir -p "$d"; chmod 700 "$d"
  if [ ! -s "$d/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=agentos-test-ca" \
      -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    rm -f "$d/apiserver.crt" "$d/admin.crt"
  fi
  if [ ! -s "$d/apiserver.crt" ]; then
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=kube-apiserver" \
      -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
      > "$d/apiserver.ext"
    openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  fi
  if [ ! -s "$d/admin.crt" ]; then
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/O=system:masters/CN=agentos-admin" \
      -keyout "$d/admin.key" -out "$d/admin.csr" 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth" > "$d/admin.ext"
    openssl x509 -req -in "$d/admin.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$d/admin.ext" -out "$d/admin.crt" 2>/dev/null
  fi
  if [ ! -s "$d/sa.key" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/sa.key" 2>/dev/null
    openssl pkey -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  fi
}

kube_kubeconfig() {
  local tmp="$KUBECONFIG_FILE.$$.tmp"
  (
    umask 077
    cat > "$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: agentos-test
  cluster:
    server: $KUBE_SERVER
    certificate-authority-data: $(base64 -w0 < "$KUBE_PKI/ca.crt")
users:
- name: agentos-admin
  user:
    client-certificate-data: $(base64 -w0 < "$KUBE_PKI/admin.crt")
    client-key-data: $(base64 -w0 < "$KUBE_PKI/admin.key")
contexts:
- name: agentos-test
  context:
    cluster: agentos-test
    user: agentos-admin
    namespace: default
current-context: agentos-test
EOF
  )
  mv "$tmp" "$KUBECONFIG_FILE"
}

# etcd's data is test data: start afresh when it was written by another etcd minor version
# (3.6 does not read 3.4's data; upgrades go one minor at a time).
kube_etcd_data() {
  local want have
  want=$(cat "$KUBE_BIN/.etcd.version"); want=${want%.*}
  have=$(cat "$KUBE_ETCD_DATA.version" 2>/dev/null || true)
  if [ -d "$KUBE_ETCD_DATA/member" ] && [ "$have" != "$want" ]; then
    log "etcd data in $KUBE_ETCD_DATA is from etcd ${have:-3.4 (Debian)}; starting afresh with $want"
    rm -rf "$KUBE_ETCD_DATA"
  fi
  mkdir -p "$KUBE_ETCD_DATA"; chmod 700 "$KUBE_ETCD_DATA"
  echo "$want" > "$KUBE_ETCD_DATA.version"
}

# Two `up`s at once (parallel sessions of one checkout) must not make two CAs or start two
# of anything: the start runs under a lock, in a subshell.
kube_start() {
  ( flock 9; kube_start_locked ) 9>"$SVC/data/kube.lock" || die "kube services did not start"
}

# start_daemon with the lock's descriptor closed, so the daemon does not hold the lock.
kube_daemon() { ( exec 9>&-; start_daemon "$@" ); }

kube_start_locked() {
  kube_pki
  kube_kubeconfig

  if kube_alive etcd; then
    kube_wait etcd 30 kube_etcd_ready
    log "etcd already running"
  else
    kube_port_free etcd "$KUBE_ETCD_PORT" "$KUBE_ETCD_PEER_PORT"
    kube_etcd_data
    kube_daemon etcd "$KUBE_BIN/etcd" --name agentos-test --data-dir "$KUBE_ETCD_DATA" \
      --listen-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
      --advertise-client-urls "http://127.0.0.1:$KUBE_ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
      --initial-advertise-peer-urls "http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
      --initial-cluster "agentos-test=http://127.0.0.1:$KUBE_ETCD_PEER_PORT" \
      --initial-cluster-state new --quota-backend-bytes 2147483648 \
      --watch-progress-notify-interval 5s --unsafe-no-fsync --log-level warn
    kube_wait etcd 30 kube_etcd_ready
    log "etcd up on 127.0.0.1:$KUBE_ETCD_PORT"
  fi

  if kube_alive kube-apiserver; then
    kube_wait kube-apiserver 120 kube_api_ready
    log "kube-apiserver already running"
  else
    local p=$KUBE_PKI
    kube_port_free kube-apiserver "$KUBE_API_PORT"
    kube_daemon kube-apiserver "$KUBE_BIN/kube-apiserver" \
      --etcd-servers "http://127.0.0.1:$KUBE_ETCD_PORT" \
      --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$KUBE_API_PORT" \
      --cert-dir "$p" --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
      --client-ca-file "$p/ca.crt" \
      --authorization-mode Node,RBAC \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
      --api-audiences https://kubernetes.default.svc.cluster.local \
      --service-cluster-ip-range "$KUBE_SERVICE_CIDR" \
      --allow-privileged=true --profiling=false --endpoint-reconciler-type none
    kube_wait kube-apiserver 120 kube_api_ready
    log "kube-apiserver up on $KUBE_SERVER (RBAC)"
  fi

  if kube_alive kwok; then
    kube_wait kwok 30 kube_kwok_ready
    log "kwok already running"
  else
    kube_port_free kwok "$KUBE_KWOK_PORT"
    kube_daemon kwok "$KUBE_BIN/kwok" --kubeconfig "$KUBECONFIG_FILE" --config "$KUBE_KWOK_CONFIG" \
      --manage-all-nodes=false \
      --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
      --cidr 10.244.0.1/16 --node-ip 10.244.0.1 \
      --server-address "127.0.0.1:$KUBE_KWOK_PORT"
    kube_wait kwok 30 kube_kwok_ready
    log "kwok up (manages nodes annotated kwok.x-k8s.io/node=fake)"
  fi
}

# PID runs and is not a zombie (the container's PID 1 may not reap orphans).
kube_running() { kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

kube_alive() { [ -s "$SVC/pids/$1.pid" ] && kube_running "$(cat "$SVC/pids/$1.pid")"; }

# kube_port_free NAME PORT...: fail, naming the holder, when a port is already listened on
# (by a process `down` did not stop: started by hand, or its PID file was lost).
kube_port_free() {
  local name=$1 port held; shift
  for port in "$@"; do
    held=$(ss -Htlnp "sport = :$port" 2>/dev/null || true)
    [ -z "$held" ] || die "cannot start $name: port $port is in use: $held"
  done
}

# kube_wait NAME TIMEOUT_S READY_FN: like wait_for, but fail at once when NAME has exited
# (say, because a process that `down` did not stop holds its port).
kube_wait() {
  local name=$1 deadline=$((SECONDS + $2)) ready=$3
  until "$ready"; do
    kube_alive "$name" || die "$name exited; see $SVC/logs/$name.log"
    [ $SECONDS -lt "$deadline" ] || die "$name did not come up within ${2}s; see $SVC/logs/$name.log"
    sleep 0.2
  done
  kube_alive "$name" || die "$name exited; see $SVC/logs/$name.log"
}

# Stop in dependency order (kwok, apiserver, etcd); services.sh stops anything left by PID.
kube_stop() {
  local name pid
  for name in kwok kube-apiserver etcd; do
    [ -s "$SVC/pids/$name.pid" ] || continue
    pid=$(cat "$SVC/pids/$name.pid")
    if kube_running "$pid"; then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kube_running "$pid" || break; sleep 0.1; done
      kube_running "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$SVC/pids/$name.pid"
  done
}

kube_env() {
  echo "KUBECONFIG=$KUBECONFIG_FILE"
  echo "AGENTOS_KUBECTL=$KUBE_BIN/kubectl"
  echo "AGENTOS_KUBE_BIN=$KUBE_BIN"
  echo "AGENTOS_KUBE_APISERVER=$KUBE_SERVER"
  echo "AGENTOS_KUBE_VERSION=v$(cat "$KUBE_BIN/.k8s.version")"
  echo "AGENTOS_KWOK_VERSION=$(cat "$KUBE_BIN/.kwok.version")"
  echo "AGENTOS_ETCD_VERSION=$(cat "$KUBE_BIN/.etcd.version")"
  echo "AGENTOS_HELM=$KUBE_BIN/helm"
  echo "AGENTOS_ETCD_URL=http://127.0.0.1:$KUBE_ETCD_PORT"
}
