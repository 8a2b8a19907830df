#!/usr/bin/env bash
# down.sh [--all]  - stop what up.sh started (listed in $KILN_RUN_DIR/up.started), newest first.
#   --all: stop every dockerd kiln started that has a live pid file, whoever started it.
# Data (images, build cache) is kept; only processes are stopped.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=scripts/infra/lib.sh
. "$here/lib.sh"
require_root "it signals the dockerd daemons kiln started"

record=$KILN_RUN_DIR/up.started
comps=()
case "${1:-}" in
  "")
    if [ -s "$record" ]; then
      mapfile -t comps < <(tac "$record")
    else
      log "nothing recorded in $record: up.sh started nothing that is still up"
    fi ;;
  --all)
    for f in "$KILN_RUN_DIR"/*/dockerd.pid; do
      [ -e "$f" ] || continue
      n=$(basename "$(dirname "$f")")
      [ "$n" != default ] && pid_alive "$f" dockerd && comps+=("dockerd $n")
    done
    pid_alive "$KILN_RUN_DIR/default/dockerd.pid" dockerd && comps+=("dockerd default")
    [ ${#comps[@]} -gt 0 ] || log "no kiln-started daemon is running" ;;
  *) die "usage: down.sh [--all]" ;;
esac

stopped=()
for c in "${comps[@]}"; do
  case "$c" in
    "dockerd "*) "$here/stop-dockerd.sh" "${c#dockerd }" ;;
    registry) "$here/stop-registry.sh" ;;
    postgres) "$here/postgres.sh" stop ;;
    # More services (S3, ...) get their stop script here, as in up.sh.
    *) log "entry '$c' in $record is not a kiln component these scripts know; left alone"; continue ;;
  esac
  stopped+=("$c")
  # forget it once stopped
  if [ -f "$record" ]; then
    grep -vxF "$c" "$record" >"$record.tmp" || true
    mv "$record.tmp" "$record"
  fi
done
if [ -f "$record" ] && [ ! -s "$record" ]; then rm -f "$record"; fi
log "down: stopped ${stopped[*]:-nothing}"
