#!/usr/bin/env bash
# up.sh [--second]  - bring up what kiln needs on this machine:
#   install-system-packages.sh (Docker Engine from Debian's docker.io when no engine answers,
#   qemu-user-static + binfmt for s390x/arm64 emulation, busybox-static .debs),
#   the default dockerd (unless an engine already answers on /var/run/docker.sock),
#   and the base images kiln/busybox:1{,-amd64,-arm64,-s390x} there.
#   --second: also a second dockerd ("second", socket /run/kiln-infra/second/docker.sock)
#             with the same base images, to play a second build host in tests.
# What this run started is added to $KILN_RUN_DIR/up.started, so down.sh stops exactly that.
# Progress on stderr; NAME=value lines on stdout:  set -a; eval "$(scripts/infra/up.sh)"; set +a
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/lib.sh"
require_root

second=false
case "${1:-}" in
  "") ;;
  --second) second=true ;;
  -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
  *) die "usage: up.sh [--second]" ;;
esac

mkdir -p "$KILN_RUN_DIR"
record=$KILN_RUN_DIR/up.started
started=()
out=""

# run SCRIPT ARGS... : run a sibling script, fail loudly, keep its stdout in $out
run() { out=$("$here/$1" "${@:2}") || die "$* failed"; }
# start COMPONENT SOCKET -- SCRIPT ARGS... : like run, and records COMPONENT if it was down before
start() {
  local comp=$1 sock=$2 was_up=true
  shift 3
  docker_ping "$sock" || was_up=false
  run "$@"
  if ! $was_up; then
    started+=("$comp")
    grep -qxF "$comp" "$record" 2>/dev/null || echo "$comp" >>"$record"
  fi
}

t0=$(date +%s%N)
env_out=()
run install-system-packages.sh
start "dockerd default" /var/run/docker.sock -- start-dockerd.sh
env_out+=("$out")
run make-base-images.sh unix:///var/run/docker.sock
if $second; then
  second_sock=$(docker_sock second)
  start "dockerd second" "$second_sock" -- start-dockerd.sh second
  env_out+=("KILN_DOCKER_HOST_SECOND=${out#DOCKER_HOST=}")
  run make-base-images.sh "unix://$second_sock"
fi
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "up in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s; started by this run: ${started[*]:-nothing (all was up)}"
printf '%s\n' "${env_out[@]}"
