#!/usr/bin/env bash
# up.sh [--second]  - bring up what kiln needs on this machine (as root), idempotently:
#   install-system-packages.sh (qemu-user-static + binfmt for s390x/arm64 emulation,
#   busybox-static .debs, Docker Engine from Debian's docker.io unless one is installed),
#   the default dockerd (unless an engine already answers on /var/run/docker.sock; one that
#   kiln did not start is used as it is), and the base images kiln/busybox:1{,-amd64,-arm64,-s390x} there.
#   --second: also a second dockerd ("second", socket /run/kiln-infra/second/docker.sock)
#             with the same base images, to play a second build host in tests.
#   --registry: also an OCI registry (Debian's docker-registry, no auth) on 127.0.0.1:5000.
#   --postgres: also PostgreSQL 15 (postgres.sh start; Debian's postgresql-15 must be installed),
#             printing KILN_TEST_POSTGRES=postgres://kiln:...@127.0.0.1:<port>/postgres.
# What this run started is added to $KILN_RUN_DIR/up.started, so down.sh stops exactly that.
# Progress on stderr; NAME=value lines on stdout:
#   set -a; eval "$(scripts/infra/up.sh --second)"; set +a
#   -> DOCKER_HOST=unix:///var/run/docker.sock, KILN_DOCKER_HOST_SECOND=unix:///run/kiln-infra/second/docker.sock
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=scripts/infra/lib.sh
. "$here/lib.sh"
require_root "it may apt-get install Docker Engine and qemu, start dockerd and mount/register qemu binfmt handlers"

second=false
registry=false
postgres=false
for arg in "$@"; do
  case "$arg" in
    --second) second=true ;;
    --registry) registry=true ;;
    --postgres) postgres=true ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "usage: up.sh [--second] [--registry] [--postgres]" ;;
  esac
done

mkdir -p "$KILN_RUN_DIR"
record=$KILN_RUN_DIR/up.started
started=()
out=""

# run SCRIPT ARGS... : run a sibling script, fail loudly, keep its stdout in $out
run() { out=$("$here/$1" "${@:2}") || die "$* failed"; }
# start COMPONENT IS_UP_FUNC [ARG] -- SCRIPT ARGS... : like run, and records COMPONENT in
# $record if IS_UP_FUNC ARG said it was down before (so down.sh stops only what up.sh started)
start() {
  local comp=$1 check=$2 arg=${3:-} was_up=true
  shift 3; [ "${1:-}" = -- ] && shift
  "$check" ${arg:+"$arg"} >/dev/null 2>&1 || was_up=false
  run "$@"
  if ! $was_up; then
    started+=("$comp")
    grep -qxF "$comp" "$record" 2>/dev/null || echo "$comp" >>"$record"
  fi
}
postgres_up() { "$here/postgres.sh" env >/dev/null 2>&1 && [ -s "${KILN_PG_DIR:-$KILN_RUN_DIR/postgres}/data/postmaster.pid" ]; }
registry_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$KILN_REGISTRY_ADDR/v2/" || true)" = 200 ]; }
# More services plug in the same way (a start/stop script pair and a case in down.sh).

t0=$(date +%s%N)
env_out=()
run install-system-packages.sh
start "dockerd default" docker_ping "$(docker_sock default)" -- start-dockerd.sh
env_out+=("$out")
run make-base-images.sh "unix://$(docker_sock default)"
if $second; then
  second_sock=$(docker_sock second)
  start "dockerd second" docker_ping "$second_sock" -- start-dockerd.sh second
  env_out+=("KILN_DOCKER_HOST_SECOND=${out#DOCKER_HOST=}")
  run make-base-images.sh "unix://$second_sock"
fi
if $registry; then
  start "registry" registry_up "" -- start-registry.sh
  env_out+=("$out")
fi
if $postgres; then
  start "postgres" postgres_up "" -- postgres.sh start
  env_out+=("$out")
fi
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
log "up in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s; started by this run: ${started[*]:-nothing (all was up)}"
printf '%s\n' "${env_out[@]}"
