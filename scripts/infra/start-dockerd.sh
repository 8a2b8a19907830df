#!/usr/bin/env bash
# start-dockerd.sh [NAME]  - start a dockerd in the background unless its socket already answers.
#   default:  socket /var/run/docker.sock, data-root /var/lib/docker, exec-root /var/run/docker
#   NAME:     socket $KILN_RUN_DIR/NAME/docker.sock, data-root $KILN_STATE_DIR/NAME/docker,
#             exec-root $KILN_RUN_DIR/NAME/exec
# Every instance: --bridge none --iptables=false (kiln builds use network `none`, and the
# default bridge does not work on every VM), BuildKit as default builder, its own
# daemon.json (so /etc/docker/daemon.json is ignored), log in $KILN_LOG_DIR/dockerd-NAME.log.
# Prints DOCKER_HOST=unix://SOCK on stdout.
set -euo pipefail
# shellcheck source=scripts/infra/lib.sh
. "$(dirname "$(readlink -f "$0")")/lib.sh"
require_root "it starts dockerd (and its containerd) in the background"
need_cmd curl

name=${1:-default}
valid_instance_name "$name" || die "bad instance name '$name' (use [a-z0-9-], max 20 chars)"
timeout=${KILN_DOCKERD_TIMEOUT:-60}

sock=$(docker_sock "$name")
rundir=$KILN_RUN_DIR/$name
pidfile=$rundir/dockerd.pid
log_file=$KILN_LOG_DIR/dockerd-$name.log
mkdir -p "$rundir" "$KILN_LOG_DIR"
chmod 755 "$KILN_RUN_DIR"

if [ "$name" = default ]; then
  data_root=/var/lib/docker
  dirs=()   # standard /var/lib/docker and /var/run/docker
else
  data_root=$KILN_STATE_DIR/$name/docker
  mkdir -p "$data_root" "$rundir/exec"
  dirs=(--data-root "$data_root" --exec-root "$rundir/exec")
fi
[ ${#sock} -lt 100 ] || die "socket path too long for a unix socket: $sock"

if docker_ping "$sock"; then
  if pid_alive "$pidfile" dockerd; then
    log "dockerd '$name' already running (pid $(cat "$pidfile")), socket $sock answers"
  else
    log "a docker daemon not started by kiln already answers on $sock; using it as is"
  fi
elif pid_alive "$pidfile" dockerd; then
  log "dockerd '$name' (pid $(cat "$pidfile")) is running but $sock does not answer yet; waiting"
  wait_until "$timeout" "dockerd '$name'" docker_ping "$sock" \
    || die "dockerd '$name' pid $(cat "$pidfile") did not answer on $sock within ${timeout}s; see $log_file"
else
  need_cmd dockerd containerd runc
  cfg=$rundir/daemon.json
  cat >"$cfg" <<EOF
{
  "features": { "buildkit": true }
}
EOF
  log "starting dockerd '$name' (socket $sock, log $log_file)"
  echo "---- $(date -Is) start-dockerd.sh $name" >>"$log_file"
  setsid dockerd --config-file "$cfg" --host "unix://$sock" --pidfile "$pidfile" "${dirs[@]}" \
    --bridge none --iptables=false --ip-forward=false \
    >>"$log_file" 2>&1 </dev/null &
  launched=$!
  deadline=$(( $(date +%s) + timeout ))
  until docker_ping "$sock"; do
    if ! kill -0 "$launched" 2>/dev/null; then
      tail -n 15 "$log_file" >&2
      mountpoint -q "$data_root" && log "note: dockerd left $data_root bind-mounted on itself; 'umount $data_root' before deleting it"
      die "dockerd '$name' exited during startup; see $log_file"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 15 "$log_file" >&2
      die "dockerd '$name' (pid $launched) did not answer on $sock within ${timeout}s; see $log_file"
    fi
    sleep 0.2
  done
  # dockerd writes its own pid file; make sure it is there for stop-dockerd.sh
  [ -s "$pidfile" ] || echo "$launched" >"$pidfile"
  log "dockerd '$name' up (pid $(cat "$pidfile"))"
fi

ver=$(curl -fsS --unix-socket "$sock" http://localhost/version) || die "GET /version on $sock failed"
log "server: $(printf '%s' "$ver" | sed -E 's/.*"Version":"([^"]*)".*"ApiVersion":"([^"]*)".*/docker \1, API \2/')"
echo "DOCKER_HOST=unix://$sock"
