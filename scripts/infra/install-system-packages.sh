#!/usr/bin/env bash
# Installs the Debian packages kiln needs on a build host, registers qemu binfmt handlers,
# and caches busybox-static .debs for amd64, arm64 and s390x (for make-base-images.sh).
# Docker Engine comes from Debian's docker.io only when no engine answers on
# /var/run/docker.sock (an existing Docker installation is used as it is).
# Idempotent: installed packages and cached .debs are skipped.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
require_root

PACKAGES=(qemu-user-static binfmt-support busybox-static curl)
docker_ping /var/run/docker.sock || PACKAGES=(docker.io "${PACKAGES[@]}")
TARGET_ARCHS=(amd64 arm64 s390x)   # busybox-static .debs kept in $KILN_CACHE_DIR/debs

missing=()
for p in "${PACKAGES[@]}"; do
  if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ]; then
    log "package $p: already installed ($(dpkg-query -W -f='${Version}' "$p"))"
  else
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get update"
  apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null || die "apt-get update failed (no access to Debian's mirror?)"
  log "apt-get install --no-install-recommends ${missing[*]}"
  mkdir -p "$KILN_LOG_DIR"
  apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >"$KILN_LOG_DIR/apt-install.log" 2>&1 \
    || { tail -n 20 "$KILN_LOG_DIR/apt-install.log" >&2; die "apt-get install ${missing[*]} failed (log: $KILN_LOG_DIR/apt-install.log)"; }
  for p in "${missing[@]}"; do
    log "package $p: installed $(dpkg-query -W -f='${Version}' "$p")"
  done
fi

for c in qemu-s390x-static qemu-aarch64-static update-binfmts curl; do
  need_cmd "$c"
done
docker_ping /var/run/docker.sock || need_cmd dockerd containerd runc

# binfmt: qemu-user-static registers its handlers through binfmt-support; without
# systemd (this VM) binfmt_misc may be unmounted and the handlers not loaded.
mapfile -t handlers < <(foreign_binfmt_handlers)
ensure_binfmt "${handlers[@]}"
log "binfmt handlers ${handlers[*]}: enabled (fix-binary)"

# busybox-static .debs for every target arch. A private apt lists dir with
# APT::Architectures set keeps dpkg's own architecture list untouched (no
# dpkg --add-architecture, so the next plain apt-get update stays amd64-only).
debdir=$KILN_CACHE_DIR/debs
mkdir -p "$debdir"
need_download=()
for a in "${TARGET_ARCHS[@]}"; do
  if compgen -G "$debdir/busybox-static_*_${a}.deb" >/dev/null; then
    log "busybox-static:$a: cached $(basename "$(compgen -G "$debdir/busybox-static_*_${a}.deb" | head -n1)")"
  else
    need_download+=("$a")
  fi
done
if [ ${#need_download[@]} -gt 0 ]; then
  lists=$KILN_CACHE_DIR/apt-lists
  mkdir -p "$lists/partial"
  apt_opts=(-q -o DPkg::Lock::Timeout=300 -o "Dir::State::Lists=$lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
            -o "APT::Architecture=$(dpkg --print-architecture)" -o APT::Sandbox::User=root)
  for a in "${TARGET_ARCHS[@]}"; do apt_opts+=(-o "APT::Architectures::=$a"); done
  log "apt-get update into private lists $lists (archs: ${TARGET_ARCHS[*]})"
  apt-get "${apt_opts[@]}" update >/dev/null || die "apt-get update for foreign archs failed"
  (cd "$debdir" && apt-get "${apt_opts[@]}" download "${need_download[@]/#/busybox-static:}" >/dev/null) \
    || die "apt-get download busybox-static for ${need_download[*]} failed"
  for a in "${need_download[@]}"; do
    compgen -G "$debdir/busybox-static_*_${a}.deb" >/dev/null || die "busybox-static:$a .deb missing after download"
    log "busybox-static:$a: downloaded $(basename "$(compgen -G "$debdir/busybox-static_*_${a}.deb" | head -n1)")"
  done
  rm -rf "$lists"   # ~55 MB of indexes, only needed for the download
fi

log "done"
