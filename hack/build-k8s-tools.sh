#!/usr/bin/env bash
# Build the Kubernetes test tools (kube-apiserver, kubectl, etcd, kwok, helm) from their Go
# modules, once, into a cache folder outside the repository. Pinned versions; see adr/0002.
# Nothing is downloaded except through the Go module proxy.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
K8S_VERSION=1.36.3
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.20.2
# Debian 12's etcd 3.4.23 is older than kube-apiserver 1.36 supports (it lacks the
# RequestWatchProgress fix, so streaming watch-lists fail and client-go informers, KWOK's
# among them, see events only on relists): etcd is built from its module, the 3.6 line the
# apiserver's own client (go.etcd.io/etcd/client/v3 v3.6.x) comes from.
ETCD_VERSION=v3.6.16
CACHE=${AGENTOS_TOOLS_CACHE:-$HOME/.cache/agentos-tools}
BIN="$CACHE/bin"
mkdir -p "$BIN"

# Only the module proxy is reachable: never let go fetch a newer toolchain.
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

stamp() { cat "$BIN/.$1.version" 2>/dev/null || true; }

if [ "$(stamp k8s)" != "$K8S_VERSION" ] || [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kubectl" ]; then
  echo "building kube-apiserver and kubectl v$K8S_VERSION (first time only; several minutes)" >&2
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=${K8S_VERSION%%.*}"
    minor=${K8S_VERSION#*.}; ld="$ld -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean"
  done
  (cd "$here/k8s-tools" && go build -trimpath -ldflags "$ld" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
  echo "$K8S_VERSION" > "$BIN/.k8s.version"
fi

if [ "$(stamp etcd)" != "$ETCD_VERSION" ] || [ ! -x "$BIN/etcd" ]; then
  echo "building etcd $ETCD_VERSION" >&2
  # `go install etcd@version` refuses: etcd's server module has replace directives. Build it
  # as a dependency of a throwaway module instead.
  tmp=$(mktemp -d)
  (cd "$tmp" && go mod init agentos.dev/hack/etcd-build >/dev/null 2>&1 \
    && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>&1 | { grep -v '^go: added' >&2 || true; } \
    && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) \
    || { rm -rf "$tmp"; echo "building etcd $ETCD_VERSION failed" >&2; exit 1; }
  rm -rf "$tmp"
  echo "$ETCD_VERSION" > "$BIN/.etcd.version"
fi

if [ "$(stamp kwok)" != "$KWOK_VERSION" ] || [ ! -x "$BIN/kwok" ]; then
  echo "building kwok $KWOK_VERSION" >&2
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  echo "$KWOK_VERSION" > "$BIN/.kwok.version"
fi

if [ "$(stamp helm)" != "$HELM_VERSION" ] || [ ! -x "$BIN/helm" ]; then
  echo "building helm $HELM_VERSION" >&2
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" > "$BIN/.helm.version"
fi
echo "$BIN"
