#!/usr/bin/env bash
# scripts/infra/systemd-host.sh image|start [NAME]|stop [NAME]  - a real systemd (Debian 12, PID 1
# in a Docker container) to test kiln's service units end to end on a machine whose own PID 1 is
# not systemd (test/integration/systemd.services.test.ts).
#   image           build kiln/debian-systemd:12 once (debootstrap minbase + systemd from the
#                   mirror apt already uses, ~45 s, ~150 MB); reused afterwards
#   start [NAME]    boot it (host network, the default dockerd's socket at /run/docker.sock, the
#                   host's node at /usr/bin/node, read-only); prints the container id on stdout
#                   once `systemctl is-system-running` answers (about 0.5 s)
#   stop [NAME]     remove it
# Then: docker exec ID systemctl start UNIT / journalctl -u UNIT / systemctl stop UNIT.
# Extra `docker run` options via SYSTEMD_HOST_RUN_OPTS (e.g. "-v /path/checkout:/src/kiln:ro").
# Why each option is there:
# - --privileged fails on some hosts (CAP_SYS_RESOURCE outside the bounding set): all caps but that.
# - `mount --make-rshared /` before init: systemd's per-service mounts (LoadCredential=,
#   PrivateTmp=) must propagate to the service; without it $CREDENTIALS_DIRECTORY is silently empty.
# - `systemctl is-system-running` says "Failed to connect to bus" for a moment after boot: polled.
# - the container's docker group carries the socket's gid, so SupplementaryGroups=docker works;
#   a stub docker.service (oneshot, checks the socket) satisfies units that order after Docker.
# - test long drains with `systemctl stop` inside, not `docker stop` (Docker kills after 10 s).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/lib.sh"
KILN_SCRIPT=systemd-host.sh
require_root "it runs a privileged container and may apt-get install debootstrap"
DOCKER_BIN=${KILN_DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}
[ -n "$DOCKER_BIN" ] || die "no docker CLI found (install docker.io, or set KILN_DOCKER)"
IMAGE=${SYSTEMD_HOST_IMAGE:-kiln/debian-systemd:12}
ROOTFS=${SYSTEMD_HOST_ROOTFS:-/var/tmp/kiln-infra/systemd-rootfs}
DOCKER_SOCK=${SYSTEMD_HOST_DOCKER_SOCK:-/var/run/docker.sock}
cmd=${1:-}; name=${2:-kiln-systemd-host}
mkdir -p "$KILN_LOG_DIR"

build_image() {
  "$DOCKER_BIN" image inspect "$IMAGE" >/dev/null 2>&1 && { log "image $IMAGE present"; return; }
  if [ ! -x "$ROOTFS/sbin/init" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; } \
      || die "cannot install debootstrap"
    # the mirror this machine's apt already uses (deb822 or one-line sources); else debootstrap's default
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    log "debootstrap bookworm into $ROOTFS (minbase + systemd)"
    rm -rf "$ROOTFS"; mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl,procps \
      bookworm "$ROOTFS" ${mirror:+"$mirror"} >"$KILN_LOG_DIR/systemd-debootstrap.log" 2>&1 \
      || die "debootstrap failed (log: $KILN_LOG_DIR/systemd-debootstrap.log)"
    rm -f "$ROOTFS"/var/cache/apt/archives/*.deb; rm -rf "$ROOTFS"/var/lib/apt/lists/*
  fi
  # the stub docker.service (the host's dockerd is reached through the bind-mounted socket)
  cat >"$ROOTFS/etc/systemd/system/docker.service" <<'UNIT'
[Unit]
Description=Docker (stub: the host's dockerd, socket bind-mounted at /run/docker.sock)
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/test -S /run/docker.sock
UNIT
  tar -C "$ROOTFS" -c . | "$DOCKER_BIN" import - "$IMAGE" >/dev/null
  log "imported $IMAGE"
}

case "$cmd" in
  image) build_image ;;
  start)
    build_image
    [ -S "$DOCKER_SOCK" ] || die "no Docker socket at $DOCKER_SOCK (scripts/infra/up.sh starts dockerd)"
    node_bin=$(readlink -f "$(command -v node)") || die "node not found in PATH"
    "$DOCKER_BIN" rm -f "$name" >/dev/null 2>&1 || true
    # shellcheck disable=SC2086
    cid=$("$DOCKER_BIN" run -d --name "$name" --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
      --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
      --network host -e container=docker --stop-signal SIGRTMIN+3 \
      -v "$node_bin":/usr/bin/node:ro -v "$DOCKER_SOCK":/run/docker.sock \
      ${SYSTEMD_HOST_RUN_OPTS:-} \
      "$IMAGE" /bin/sh -c 'mount --make-rshared / && exec /sbin/init')
    s=""
    for _ in $(seq 1 100); do  # the bus is not up at once: "Failed to connect to bus" until it is
      s=$("$DOCKER_BIN" exec "$cid" systemctl is-system-running --wait 2>/dev/null) && break
      [ "$s" = degraded ] && break; sleep 0.2
    done
    [ "$s" = running ] || [ "$s" = degraded ] || { "$DOCKER_BIN" rm -f "$name" >/dev/null 2>&1 || true; die "systemd in $name did not come up (state: '${s:-none}')"; }
    # the docker group inside must carry the socket's gid, so SupplementaryGroups=docker works
    "$DOCKER_BIN" exec "$cid" sh -c "getent group docker >/dev/null || groupadd -o -g $(stat -c %g "$DOCKER_SOCK") docker"
    log "systemd up in $name ($s)"
    echo "$cid" ;;
  stop) "$DOCKER_BIN" rm -f "$name" >/dev/null 2>&1 || true; log "removed $name" ;;
  *) die "usage: systemd-host.sh image|start [NAME]|stop [NAME]" ;;
esac
