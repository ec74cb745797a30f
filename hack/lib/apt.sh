# Sourced by hack/ scripts (not run): install Debian packages with apt.
#
# The caller defines log() and sets APT_UPDATED_STAMP, a file whose presence says that
# `apt-get update` has run once (a fresh machine may have no package lists yet).

# apt_install PKG...: install Debian packages that are not installed yet.
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  if [ ! -f "$APT_UPDATED_STAMP" ]; then apt-get update -qq && touch "$APT_UPDATED_STAMP"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
