# Sourced by hack/ scripts (not run): whether the kernel's overlay filesystem works here.

# overlay_mount_works DIR: an overlay mount with its upper layer under DIR (created, then
# removed) succeeds. False on a host without overlayfs, without the right to mount, or whose
# DIR is itself on an overlay that cannot be an upper layer.
overlay_mount_works() {
  local d=$1 ok=1
  rm -rf "$d"; mkdir -p "$d/lower" "$d/upper" "$d/work" "$d/merged"
  if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" \
      "$d/merged" 2>/dev/null; then
    umount "$d/merged" && ok=0
  fi
  rm -rf "$d"
  return $ok
}
