#!/usr/bin/env bash
# start-registry.sh  - (kiln test infrastructure) run Debian's docker-registry (distribution 2.8) on 127.0.0.1:5000,
# no auth (the packaged /etc/docker/registry/config.yml wants htpasswd, so a generated
# config is used), storage in $KILN_STATE_DIR/registry/data, log in $KILN_LOG_DIR/registry.log.
# Waits until GET http://127.0.0.1:5000/v2/ returns 200. Prints KILN_REGISTRY=127.0.0.1:5000.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
require_root
need_cmd docker-registry curl

addr=$KILN_REGISTRY_ADDR
dir=$KILN_STATE_DIR/registry
pidfile=$KILN_RUN_DIR/registry.pid
log_file=$KILN_LOG_DIR/registry.log
timeout=${KILN_REGISTRY_TIMEOUT:-30}
mkdir -p "$dir/data" "$KILN_RUN_DIR" "$KILN_LOG_DIR"

v2_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr/v2/" 2>/dev/null || true; }
v2_ok() { [ "$(v2_status)" = 200 ]; }

if v2_ok; then
  if pid_alive "$pidfile" docker-registry; then
    log "registry already running (pid $(cat "$pidfile")) on $addr"
  else
    log "a registry not started by kiln already answers 200 on http://$addr/v2/; using it"
  fi
else
  if pid_alive "$pidfile" docker-registry; then
    log "registry pid $(cat "$pidfile") is running but /v2/ does not answer 200 yet; waiting"
    wait_until "$timeout" "registry" v2_ok || die "registry did not answer on http://$addr/v2/ within ${timeout}s; see $log_file"
  else
    code=$(v2_status)
    [ "$code" = 000 ] || die "something else answers on $addr (HTTP $code on /v2/); not starting a registry there"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    log "starting docker-registry on $addr (config $dir/config.yml, log $log_file)"
    echo "---- $(date -Is) start-registry.sh" >>"$log_file"
    setsid docker-registry serve "$dir/config.yml" >>"$log_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    deadline=$(( $(date +%s) + timeout ))
    until v2_ok; do
      kill -0 "$pid" 2>/dev/null || { tail -n 10 "$log_file" >&2; rm -f "$pidfile"; die "docker-registry exited during startup; see $log_file"; }
      [ "$(date +%s)" -lt "$deadline" ] || { tail -n 10 "$log_file" >&2; die "registry (pid $pid) did not answer 200 on http://$addr/v2/ within ${timeout}s"; }
      sleep 0.1
    done
    log "registry up (pid $pid): GET http://$addr/v2/ -> 200"
  fi
fi
echo "KILN_REGISTRY=$addr"
