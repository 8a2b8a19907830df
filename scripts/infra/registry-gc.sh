#!/usr/bin/env bash
# registry-gc.sh [--dry-run]  - free the disk space of deleted and untagged manifests in the
# registry start-registry.sh runs (distribution's garbage collection). kiln's layer-cache
# retention (cache.keep, coordinator/builds/cache-retention.ts) only deletes manifests of
# old cache tags through the registry API; their blobs stay on disk until this runs.
#   --dry-run: print what would be deleted; the registry keeps running.
#   otherwise: the registry must not take pushes while it collects (distribution's rule),
#   so this stops the registry kiln started (stop-registry.sh), runs
#   `docker-registry garbage-collect --delete-untagged`, and starts it again
#   (start-registry.sh). Run it when no build pushes, e.g. from cron at night.
# For another registry: the same `garbage-collect --delete-untagged CONFIG` with that
# registry's config, while it is stopped or in read-only mode (storage.maintenance.readonly).
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
. "$here/lib.sh"
require_root
need_cmd docker-registry

dry=false
case "${1:-}" in
  --dry-run) dry=true ;;
  "") ;;
  -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
  *) die "usage: registry-gc.sh [--dry-run]" ;;
esac
config=$KILN_STATE_DIR/registry/config.yml
[ -f "$config" ] || die "no registry config at $config (start-registry.sh writes it)"

if $dry; then
  docker-registry garbage-collect --dry-run --delete-untagged "$config"
  exit 0
fi
was_running=false
if pid_alive "$KILN_RUN_DIR/registry.pid" docker-registry; then
  was_running=true
  "$here/stop-registry.sh"
fi
log "collecting garbage in $(dirname "$config")/data"
status=0
docker-registry garbage-collect --delete-untagged "$config" || status=$?
if $was_running; then "$here/start-registry.sh" >/dev/null; fi
[ "$status" = 0 ] || die "garbage-collect failed (exit $status)"
log "registry garbage collection done"
