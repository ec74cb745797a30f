#!/usr/bin/env bash
# Build the Agent OS image from deploy/image/Containerfile with buildah: no Docker engine, no
# registry. Idempotent; cached layers make a re-run take seconds.
#
#   hack/build-image.sh [--import] [--out PATH]
#
#   1. The base, localhost/agentos/debian-python:bookworm: Debian 12 with python3 (and
#      ca-certificates) from Debian's packages, by `debootstrap --variant=minbase` from the
#      mirror apt uses here, upgraded from bookworm-updates and bookworm-security, slimmed (no
#      docs but copyrights, man pages, locales, apt lists or .debs). Its rootfs tarball is
#      cached in $AGENTOS_TOOLS_CACHE/image/ (default ~/.cache/agentos-tools) and made again
#      only when its recipe changes or AGENTOS_IMAGE_REFRESH_BASE=1 (for new security updates).
#   2. `buildah bud --layers` with chroot isolation (no user namespace, no runc) and the
#      overlay storage driver, or vfs where an overlay mount fails (AGENTOS_BUILDAH_DRIVER
#      forces one), storage in $AGENTOS_TOOLS_CACHE/image/storage-DRIVER; tagged
#      localhost/agentos/agentos:$(cat VERSION). Skipped when nothing that goes into the image
#      changed (AGENTOS_IMAGE_REBUILD=1 forces it). The host's CA bundle is passed as the
#      build secret `ca-bundle` (see the Containerfile).
#   3. `buildah push` to an OCI archive: PATH (default build/image/agentos-VERSION.tar), the
#      tar that `ctr images import` and `oci-archive:` agent images read.
#   4. With --import: `ctr images import` into the containerd of `make services`
#      (CONTAINERD_ADDRESS, CONTAINERD_NAMESPACE, CONTAINERD_SNAPSHOTTER from .services/env),
#      unless it already holds that very manifest under the name.
#
# Prints the archive's path on stdout. Needs root (debootstrap, buildah's chroot isolation).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${AGENTOS_TOOLS_CACHE:-$HOME/.cache/agentos-tools}/image
VERSION=$(cat "$ROOT/VERSION")
IMAGE=${AGENTOS_IMAGE:-localhost/agentos/agentos:$VERSION}
OUT="$ROOT/build/image/agentos-$VERSION.tar"
DO_IMPORT=0

SUITE=bookworm
BASE_IMAGE=localhost/agentos/debian-python:$SUITE
BUILDER_IMAGE=localhost/agentos/agentos-builder:cache
BASE_PACKAGES=python3,ca-certificates
# Bump when the way the base rootfs is made changes: the cached tarball is then made again.
BASE_RECIPE=1

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --import) DO_IMPORT=1 ;;
    --out) OUT=$(realpath -m "$2"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

[ "$(id -u)" -eq 0 ] || die "run as root: debootstrap and buildah's chroot isolation need it"
mkdir -p "$CACHE"
# One build at a time per cache (several checkouts share it).
exec {lock}>"$CACHE/.lock"
flock -w 1800 "$lock" || die "another hack/build-image.sh holds $CACHE/.lock"

APT_UPDATED_STAMP="$CACHE/.apt-updated"
# shellcheck source=hack/lib/apt.sh
. "$ROOT/hack/lib/apt.sh"
apt_install buildah debootstrap

# shellcheck source=hack/lib/overlay.sh
. "$ROOT/hack/lib/overlay.sh"
# overlay when the kernel lets us mount it here: 4-8 times faster than vfs and a fifth of the
# disk, as vfs copies a whole rootfs for every layer and working container. vfs needs nothing
# from the kernel (a container without mount rights, a cache on overlayfs): the fallback.
if [ -n "${AGENTOS_BUILDAH_DRIVER:-}" ]; then DRIVER=$AGENTOS_BUILDAH_DRIVER
elif overlay_mount_works "$CACHE/overlay-probe"; then DRIVER=overlay
else DRIVER=vfs; fi
BUILDAH=(buildah --root "$CACHE/storage-$DRIVER" --storage-driver "$DRIVER"
         --runroot "/run/agentos-buildah-$(printf '%s' "$CACHE/$DRIVER" | sha1sum | cut -c1-10)")
export BUILDAH_ISOLATION=chroot

image_id() { "${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$1"; }
# image_label IMAGE KEY: the label's value, empty when the image or the label is missing.
image_label() {
  "${BUILDAH[@]}" inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" \
    2>/dev/null || true
}

# The mirror apt uses here for SUITE (and -updates, -security); Debian's own when none is set.
apt_mirror() {
  local suite=$1 fallback=$2 uri
  uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
        | awk -v s="$suite" '$2 == s { print $1; exit }')
  echo "${uri:-$fallback}"
}

# The base rootfs tarball; its name carries a key of what went into it.
base_tarball() {
  local main security key
  main=$(apt_mirror "$SUITE" http://deb.debian.org/debian/)
  security=$(apt_mirror "$SUITE-security" http://deb.debian.org/debian-security/)
  key=$(printf '%s\n' "$BASE_RECIPE" "$SUITE" "$BASE_PACKAGES" "$main" "$security" \
        | sha256sum | cut -c1-12)
  local tar="$CACHE/debian-python-$SUITE-$key.tar"
  if [ -s "$tar" ] && [ "${AGENTOS_IMAGE_REFRESH_BASE:-0}" != 1 ]; then echo "$tar"; return; fi

  local rootfs="$CACHE/rootfs.tmp"
  rm -rf "$rootfs"
  log "debootstrap --variant=minbase $SUITE from $main (first time only; about a minute)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$main" \
    > "$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed; see $CACHE/debootstrap.log"
  cat > "$rootfs/etc/apt/sources.list" <<EOF
deb $main $SUITE main
deb $main $SUITE-updates main
deb $security $SUITE-security main
EOF
  log "apt-get upgrade from $SUITE-updates and $SUITE-security"
  # A chroot, not a container: the rootfs is not an image yet. resolv.conf is the host's, as
  # debootstrap left it; it is emptied below.
  { chroot "$rootfs" apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get upgrade -y -qq \
      && chroot "$rootfs" apt-get clean; } >> "$CACHE/debootstrap.log" 2>&1 \
    || die "upgrading the base failed; see $CACHE/debootstrap.log"
  # Slim, as Debian's own -slim images are: later apt installs skip these paths as well.
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/agentos-slim" <<'EOF'
# hack/build-image.sh: no documentation but copyrights, no man pages, no locales.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/usr/share/lintian/* "$rootfs"/var/log/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old
  find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$rootfs/usr/share/doc" -mindepth 1 -depth -type d -empty -delete
  : > "$rootfs/etc/resolv.conf"
  : > "$rootfs/etc/hostname"
  rm -f "$CACHE"/debian-python-"$SUITE"-*.tar*
  # /dev, /proc, /sys stay empty: the runtime mounts them.
  tar --numeric-owner --sort=name -C "$rootfs" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf "$tar.tmp" .
  mv "$tar.tmp" "$tar"
  rm -rf "$rootfs"
  log "base rootfs: $tar ($(du -h "$tar" | cut -f1))"
  echo "$tar"
}

# The base image in buildah's storage, made from the tarball unless it already is.
base_image() {
  local tar=$1 sum have ctr
  # The sum is kept beside the tarball: hashing 120 MB on every run would cost a second.
  [ -s "$tar.sha256" ] && [ "$tar.sha256" -nt "$tar" ] || sha256sum "$tar" | cut -d' ' -f1 > "$tar.sha256"
  sum=$(cat "$tar.sha256")
  have=$(image_label "$BASE_IMAGE" io.agentos.base.rootfs)
  [ "$have" = "sha256:$sum" ] && return 0
  log "importing the base rootfs as $BASE_IMAGE"
  ctr=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add --quiet "$ctr" "$tar" /
  "${BUILDAH[@]}" config \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd '["python3"]' --os linux --arch "$(dpkg --print-architecture)" \
    --label "io.agentos.base.rootfs=sha256:$sum" \
    --label "org.opencontainers.image.title=debian-python" \
    --label "org.opencontainers.image.description=Debian $SUITE (minbase) with Debian's python3" \
    "$ctr"
  "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
}

t0=$SECONDS
base_tar=$(base_tarball)
base_image "$base_tar"
log "base ready ($((SECONDS - t0))s)"

ca_secret=()
ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$ca" ] && ca_secret=(--secret "id=ca-bundle,src=$ca")
bud() {
  "${BUILDAH[@]}" bud --layers --isolation chroot --network host --format oci \
    -f "$ROOT/deploy/image/Containerfile" \
    --ignorefile "$ROOT/deploy/image/Containerfile.dockerignore" \
    "${ca_secret[@]}" --build-arg "BASE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" \
    "$@" "$ROOT" \
    >> "$CACHE/bud.log" 2>&1 \
    || { tail -n 30 "$CACHE/bud.log" >&2; die "buildah bud failed; see $CACHE/bud.log"; }
}
# What the image is made of: the Containerfile, the build context (what
# Containerfile.dockerignore lets through, or more), this script, the base and the labels.
# Recorded on the image; when it has not changed the build is skipped, which saves buildah's
# walk of its cached steps (10-20 s with overlay, a minute with vfs, which copies a whole
# rootfs per working container).
input_files() {
  find deploy/image hack/build-image.sh hack/lib pyproject.toml uv.lock README.md VERSION \
    controlplane operators -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0 \
    | LC_ALL=C sort -z
}
inputs_key() {
  (cd "$ROOT" && {
    printf '%s\n' "$(image_id "$BASE_IMAGE")" "$VERSION" "$REVISION"
    input_files | xargs -0 stat -c "%a %n"
    input_files | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1)
}
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
key="sha256:$(inputs_key)"
have=$(image_label "$IMAGE" io.agentos.build.inputs)
if [ "$have" = "$key" ] && [ "${AGENTOS_IMAGE_REBUILD:-0}" != 1 ]; then
  log "$IMAGE is up to date (inputs $key)"
else
  t1=$SECONDS
  : > "$CACHE/bud.log"
  log "buildah bud -f deploy/image/Containerfile -t $IMAGE ($DRIVER; log: $CACHE/bud.log)"
  # The builder stage gets a tag of its own: its layers are the cache of the next build, and
  # an untagged stage would be pruned below with everything it holds.
  bud --target builder -t "$BUILDER_IMAGE"
  bud -t "$IMAGE" --label "org.opencontainers.image.revision=$REVISION" \
    --label "io.agentos.build.inputs=$key"
  log "built $IMAGE ($((SECONDS - t1))s)"
  # Layers of earlier builds that no tag reaches any more.
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
fi

# The archive is written again only when the image changed.
id=$(image_id "$IMAGE")
if [ -s "$OUT" ] && [ "$(cat "$OUT.image-id" 2>/dev/null)" = "$id" ]; then
  log "$OUT is up to date"
else
  mkdir -p "$(dirname "$OUT")"
  rm -f "$OUT.tmp"
  "${BUILDAH[@]}" push --quiet "$IMAGE" "oci-archive:$OUT.tmp:$IMAGE"
  mv "$OUT.tmp" "$OUT"
  echo "$id" > "$OUT.image-id"
fi
digest=$(tar -xOf "$OUT" index.json \
         | python3 -c 'import json, sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')
log "wrote $OUT ($(du -h "$OUT" | cut -f1), manifest $digest)"

if [ "$DO_IMPORT" = 1 ]; then
  : "${CONTAINERD_ADDRESS:?set it (and CONTAINERD_NAMESPACE): set -a; . .services/env; set +a}"
  ns=${CONTAINERD_NAMESPACE:-agentos-test}
  ctrd() { ctr --address "$CONTAINERD_ADDRESS" --namespace "$ns" "$@"; }
  have=$(ctrd images ls | awk -v r="$IMAGE" '$1 == r { print $3 }')
  if [ "$have" = "$digest" ]; then
    log "containerd ($ns) already holds $IMAGE@$digest"
  else
    ctrd images import --snapshotter "${CONTAINERD_SNAPSHOTTER:-overlayfs}" "$OUT" >&2 \
      || die "ctr images import $OUT failed"
    have=$(ctrd images ls | awk -v r="$IMAGE" '$1 == r { print $3 }')
    [ "$have" = "$digest" ] || die "import did not create $IMAGE@$digest (got '$have')"
    log "imported $IMAGE@$digest into containerd ($ns)"
  fi
fi
log "done in $((SECONDS - t0))s"
echo "$OUT"
