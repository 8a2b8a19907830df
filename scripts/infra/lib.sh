# shellcheck shell=bash
# Shared helpers for kiln's infra scripts (scripts/infra): logging, waiting, pid files,
# Docker sockets, host architecture and qemu binfmt handlers. Sourced, not executed.

KILN_STATE_DIR=${KILN_STATE_DIR:-/var/lib/kiln-infra}   # persistent data (dockerd data-roots, registry storage)
KILN_RUN_DIR=${KILN_RUN_DIR:-/run/kiln-infra}           # pid files, sockets, exec-roots
KILN_CACHE_DIR=${KILN_CACHE_DIR:-/var/cache/kiln-infra} # downloaded .debs
KILN_LOG_DIR=${KILN_LOG_DIR:-/var/log/kiln-infra}       # daemon logs, apt log
KILN_REGISTRY_ADDR=${KILN_REGISTRY_ADDR:-127.0.0.1:5000} # the registry start-registry.sh runs
# Everything talks to Docker through the Engine API with curl, so any docker CLI (or none)
# works; /usr/local/bin/docker 28.x without buildx, for one, cannot do BuildKit builds.

export DEBIAN_FRONTEND=noninteractive

KILN_SCRIPT=$(basename "$0")

# Progress goes to stderr; stdout is kept for machine-readable NAME=value lines.
log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$KILN_SCRIPT" "$*" >&2; }
die() { printf '[%s %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$KILN_SCRIPT" "$*" >&2; exit 1; }

# require_root [WHY] : die with a clear message unless running as root.
require_root() {
  [ "$(id -u)" -eq 0 ] && return 0
  die "must run as root: ${1:-it installs Debian packages (apt-get), starts dockerd and mounts/registers qemu binfmt handlers}. Re-run as root (e.g. sudo $0)"
}

need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run install-system-packages.sh first"
  done
}

# wait_until TIMEOUT_S DESCRIPTION CMD... : polls CMD every 0.2 s until it succeeds.
wait_until() {
  local timeout=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  while ! "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      return 1
    fi
    sleep 0.2
  done
  log "$what ready"
}

# pid_alive FILE [COMM] : true if FILE holds the pid of a live process (whose /proc/PID/comm
# is COMM, when given; /run is not a tmpfs on this VM, so a pid file can outlive a reboot
# and its pid can belong to something else by then).
pid_alive() {
  local f=$1 comm=${2:-} pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [ -z "$comm" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ]
}

# stop_pidfile FILE COMM DESCRIPTION [TIMEOUT_S] : SIGTERM the pid in FILE, wait, SIGKILL if needed.
stop_pidfile() {
  local f=$1 comm=$2 what=$3 timeout=${4:-30} pid
  if ! pid_alive "$f" "$comm"; then
    log "$what: not running (no live $comm pid in $f)"
    rm -f "$f"
    return 0
  fi
  pid=$(cat "$f")
  log "$what: sending SIGTERM to pid $pid"
  kill -TERM "$pid"
  local deadline=$(( $(date +%s) + timeout ))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$what: pid $pid still alive after ${timeout}s, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && die "$what: pid $pid would not exit"
  rm -f "$f"
  log "$what: stopped (pid $pid)"
}

# docker_sock NAME -> socket path of a kiln dockerd instance ("default" = /var/run/docker.sock)
docker_sock() {
  if [ "${1:-default}" = default ]; then echo /var/run/docker.sock; else echo "$KILN_RUN_DIR/$1/docker.sock"; fi
}

valid_instance_name() { [[ "$1" =~ ^[a-z0-9][a-z0-9-]{0,19}$ ]]; }

docker_ping() { curl -fsS --max-time 2 --unix-socket "$1" http://localhost/_ping 2>/dev/null | grep -qx OK; }

# docker_api SOCK METHOD PATH [curl args...] : a call to the Engine API (no docker CLI needed).
docker_api() {
  local sock=$1 method=$2 path=$3; shift 3
  curl -fsS --unix-socket "$sock" -X "$method" "$@" "http://localhost/v1.41$path"
}

# json_str KEY < JSON : the first string value of "KEY" in a compact JSON document (the Engine
# API's image JSON has Id, Architecture and Variant once, at the top level); empty if absent.
json_str() { grep -o "\"$1\":\"[^\"]*\"" | head -n1 | sed -E 's/^"[^"]*":"(.*)"$/\1/' || true; }

# Host architecture in Docker/OCI terms.
host_arch() {
  case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    s390x) echo s390x ;;
    *) die "unsupported host arch $(uname -m)" ;;
  esac
}

# qemu binfmt handlers needed to run amd64, arm64 and s390x binaries on this host.
foreign_binfmt_handlers() {
  local h; h=$(host_arch)
  [ "$h" = amd64 ] || echo qemu-x86_64
  [ "$h" = arm64 ] || echo qemu-aarch64
  [ "$h" = s390x ] || echo qemu-s390x
}

# Make sure binfmt_misc is mounted and qemu handlers for the given qemu names are registered.
ensure_binfmt() {
  local names=("$@") n missing=()
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    log "mounting binfmt_misc on /proc/sys/fs/binfmt_misc"
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
      || die "cannot mount binfmt_misc (kernel module missing? container without privileges?)"
  fi
  for n in "${names[@]}"; do [ -e "/proc/sys/fs/binfmt_misc/$n" ] || missing+=("$n"); done
  if [ ${#missing[@]} -gt 0 ]; then
    need_cmd update-binfmts
    log "registering binfmt handlers (missing: ${missing[*]}) with update-binfmts --enable"
    update-binfmts --enable >/dev/null 2>&1 || true
    for n in "${missing[@]}"; do
      [ -e "/proc/sys/fs/binfmt_misc/$n" ] || update-binfmts --enable "$n" \
        || die "binfmt handler $n not registered; is qemu-user-static installed?"
    done
  fi
  for n in "${names[@]}"; do
    grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$n" || die "binfmt handler $n exists but is disabled"
    grep -q '^flags:.*F' "/proc/sys/fs/binfmt_misc/$n" \
      || die "binfmt handler $n lacks the F (fix-binary) flag; containers could not find the interpreter"
  done
}
