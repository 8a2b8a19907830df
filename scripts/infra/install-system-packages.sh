#!/usr/bin/env bash
# Installs the Debian packages kiln needs on a build host (qemu-user-static, binfmt-support,
# busybox-static, curl, docker-registry (an OCI registry for image pushes and the layer cache
# in tests), and Docker Engine from Debian's docker.io), registers qemu binfmt
# handlers, and caches busybox-static .debs for amd64, arm64 and s390x (for make-base-images.sh).
# docker.io is skipped when dockerd, containerd and runc are already installed (e.g. Docker's
# docker-ce, which conflicts with it): an existing Docker installation is used as it is.
# Idempotent: installed packages and cached .debs are skipped (then it takes ~0.1 s).
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
require_root "it installs Debian packages with apt-get and mounts/registers qemu binfmt handlers"

PACKAGES=(qemu-user-static binfmt-support busybox-static curl docker-registry apache2-utils)
DOCKER_PACKAGES=(docker.io)        # Debian's Docker Engine 20.10 (dockerd, containerd, runc, CLI)
TARGET_ARCHS=(amd64 arm64 s390x)   # busybox-static .debs kept in $KILN_CACHE_DIR/debs

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]; }

apt_updated=false
made_policy=""   # the temporary policy-rc.d, removed on exit whatever happens
trap '[ -z "$made_policy" ] || rm -f "$made_policy"' EXIT
# apt_install PKG... : apt-get update (once per run) and install; services are not started
# (a temporary policy-rc.d, unless the machine has one): kiln starts dockerd with its own flags.
apt_install() {
  local p policy=/usr/sbin/policy-rc.d rc=0
  if ! $apt_updated; then
    log "apt-get update"
    apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null || die "apt-get update failed (no access to Debian's mirror?)"
    apt_updated=true
  fi
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# kiln install-system-packages.sh: no service starts during apt-get install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=$policy
  fi
  log "apt-get install --no-install-recommends $*"
  mkdir -p "$KILN_LOG_DIR"; echo "---- $(date -Is) apt-get install $*" >>"$KILN_LOG_DIR/apt-install.log"
  apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "$@" >>"$KILN_LOG_DIR/apt-install.log" 2>&1 || rc=$?
  if [ -n "$made_policy" ]; then rm -f "$made_policy"; made_policy=""; fi
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$KILN_LOG_DIR/apt-install.log" >&2
    die "apt-get install $* failed (log: $KILN_LOG_DIR/apt-install.log)"
  fi
  for p in "$@"; do
    log "package $p: installed $(dpkg-query -W -f='${Version}' "$p")"
  done
}

missing=()
for p in "${PACKAGES[@]}"; do
  if installed "$p"; then
    log "package $p: already installed ($(dpkg-query -W -f='${Version}' "$p"))"
  else
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

# Docker Engine: Debian's docker.io unless dockerd, containerd and runc are already installed
# (docker.io conflicts with Docker's docker-ce/containerd.io packages). Even when a daemon
# kiln did not start answers on /var/run/docker.sock, the binaries are needed for --second.
if command -v dockerd >/dev/null 2>&1 && command -v containerd >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then
  log "Docker Engine: $(dockerd --version 2>/dev/null || echo 'dockerd (version unknown)') installed$(installed docker.io && echo " (docker.io $(dpkg-query -W -f='${Version}' docker.io))")"
else
  missing=()
  for p in "${DOCKER_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  need_cmd dockerd containerd runc
fi

need_cmd update-binfmts curl
for h in $(foreign_binfmt_handlers); do need_cmd "$h-static"; done

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
