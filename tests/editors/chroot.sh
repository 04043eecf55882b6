#!/usr/bin/env bash
# Build (once) and enter a Debian 13 chroot that contains real GIMP 3.0 and Krita 5.2.
#
#   tests/editors/chroot.sh build            create or reuse the cached chroot, print its path
#   tests/editors/chroot.sh run [--net] CMD  run CMD inside it in private mount and pid namespaces
#
# The chroot is cached outside the checkout, keyed by its package list, under a lock, so that
# later runs take seconds. Without --net a run has no network namespace access at all.
# Environment: AIRB_CHROOT (cache path), AIRB_DEBIAN_MIRROR (apt mirror), AIRB_BIND (extra
# host folders, colon-separated, bind-mounted read-write at the same path inside the chroot).
set -euo pipefail

ROOT=${AIRB_CHROOT:-/var/cache/ai-remove-background/trixie}
MIRROR=${AIRB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="gimp python3 python3-gi gir1.2-gimp-3.0 krita python3-pyqt5 xvfb xauth python3-venv ca-certificates"
CACHE_KEY="v1 trixie $PACKAGES"

# Run a command inside the chroot in private mount and pid namespaces, so nothing needs
# unmounting and every leftover Xvfb or editor process dies with the call. Bash stays PID 1
# of the new pid namespace because xvfb-run hangs forever when it is PID 1 itself.
run_in_chroot() {
  local net_option=--net
  if [ "${1:-}" = "--net" ]; then net_option=""; shift; fi
  unshare --mount --pid $net_option --fork --kill-child --propagation private /bin/bash -c '
    root=$1; shift
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount -t tmpfs shm "$root/dev/shm"
    mount -t tmpfs tmp "$root/tmp"
    [ "$AIRB_NET" = 1 ] && cp /etc/resolv.conf "$root/etc/resolv.conf"
    IFS=: read -r -a binds <<< "${AIRB_BIND:-}"
    for dir in "${binds[@]}"; do
      [ -n "$dir" ] || continue
      mkdir -p "$root$dir"
      mount --bind "$dir" "$root$dir"
    done
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
      XDG_RUNTIME_DIR=/tmp HOME=/root "$@"
  ' _ "$ROOT" "$@"
}

build_chroot() {
  mkdir -p "$(dirname "$ROOT")"
  exec 9>"$ROOT.lock"
  flock 9
  if [ "$(cat "$ROOT/.airb-cache-key" 2>/dev/null)" != "$CACHE_KEY" ]; then
    echo "building the editor chroot in $ROOT (about 3 minutes, once)" >&2
    if ! command -v debootstrap >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    rm -rf "$ROOT"
    if ! debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1; then
      tail -20 "$ROOT.debootstrap.log" >&2
      exit 1
    fi
    AIRB_NET=1 run_in_chroot --net apt-get update -qq
    AIRB_NET=1 run_in_chroot --net env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends $PACKAGES >"$ROOT.apt.log"
    run_in_chroot apt-get clean
    echo "$CACHE_KEY" >"$ROOT/.airb-cache-key"
  fi
  flock -u 9
  echo "$ROOT"
}

case "${1:-}" in
  build) build_chroot ;;
  run)
    shift
    if [ "${1:-}" = "--net" ]; then export AIRB_NET=1; fi
    run_in_chroot "$@"
    ;;
  *)
    echo "usage: $0 build | run [--net] COMMAND..." >&2
    exit 2
    ;;
esac
