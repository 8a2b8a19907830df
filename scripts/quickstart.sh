#!/usr/bin/env bash
# scripts/quickstart.sh [hello|wheel-refinery|stop]  - kiln on this machine in one command.
#
# Installs what is missing (Docker Engine from Debian's docker.io when no engine answers,
# qemu for s390x/arm64 emulation, npm packages), starts dockerd if needed, makes the local
# base images (kiln/busybox:1, :1-arm64, :1-s390x; no registry is needed), builds kiln,
# starts a coordinator and one local agent (kept running afterwards), submits
# examples/hello/kiln.yaml and shows every node's log live. Ends with the build's result and
# where its data is stored. Running it again reuses what is already running.
#
#   scripts/quickstart.sh                  run examples/hello
#   scripts/quickstart.sh wheel-refinery   run examples/wheel-refinery (s390x artifacts DAG),
#                                          then show its artifacts and the final wheel's provenance
#   scripts/quickstart.sh stop             stop the coordinator and agent it started
#
# Environment: KILN_QUICKSTART_PORT (default 8080), KILN_QUICKSTART_DIR (default .kiln/quickstart).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$ROOT"
QS=${KILN_QUICKSTART_DIR:-$ROOT/.kiln/quickstart}
PORT=${KILN_QUICKSTART_PORT:-8080}
DATA=$QS/coordinator
URL=http://127.0.0.1:$PORT
KILN=(node "$ROOT/dist/cli/main.js")

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_all() {
  local f
  for f in "$QS/agent.pid" "$QS/coordinator.pid"; do
    if alive "$f"; then
      kill -TERM "$(cat "$f")"
      for _ in $(seq 1 100); do alive "$f" || break; sleep 0.1; done
      echo "stopped $(basename "$f" .pid) (pid $(cat "$f"))" >&2
    fi
    rm -f "$f"
  done
}

EXAMPLE=hello
case "${1:-hello}" in
  stop) stop_all; exit 0 ;;
  hello|wheel-refinery) EXAMPLE=${1:-hello} ;;
  *) die "usage: scripts/quickstart.sh [hello|wheel-refinery|stop]" ;;
esac
[ $# -le 1 ] || die "usage: scripts/quickstart.sh [hello|wheel-refinery|stop]"

# --- 1. tools and infrastructure ------------------------------------------------------
command -v node >/dev/null || die "Node.js 20.19 or newer is needed (node not found)"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || die "Node.js 20.19 or newer is needed (found $(node --version))"
if [ "$(id -u)" -ne 0 ]; then
  die "run as root: it may install Debian packages (docker.io, qemu-user-static), start dockerd and register qemu binfmt handlers"
fi
say "Docker Engine, qemu emulation and base images (scripts/infra/up.sh)"
infra_env=$("$ROOT/scripts/infra/up.sh")
eval "$infra_env"
export DOCKER_HOST

# --- 2. kiln itself -------------------------------------------------------------------
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  say "npm ci"
  npm ci --no-audit --no-fund >&2
fi
if [ ! -f dist/cli/main.js ] || [ -n "$(find shared coordinator agent cli package.json -newer dist/cli/main.js -print -quit 2>/dev/null)" ]; then
  say "npm run build"
  npm run build >&2
fi

# --- 3. coordinator and agent -----------------------------------------------------------
mkdir -p "$QS"
if alive "$QS/coordinator.pid" && curl -fsS "$URL/readyz" >/dev/null 2>&1; then
  say "coordinator already running on $URL (pid $(cat "$QS/coordinator.pid"))"
else
  if curl -fsS "$URL/livez" >/dev/null 2>&1; then
    die "something else already answers on $URL; set KILN_QUICKSTART_PORT to a free port"
  fi
  say "starting a coordinator on $URL (data: $DATA, log: $QS/coordinator.log)"
  setsid "${KILN[@]}" coordinator --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-format text \
    >>"$QS/coordinator.log" 2>&1 </dev/null &
  echo $! >"$QS/coordinator.pid"
  for _ in $(seq 1 100); do curl -fsS "$URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "$URL/readyz" >/dev/null 2>&1 || { tail -n 20 "$QS/coordinator.log" >&2; die "the coordinator did not start (log: $QS/coordinator.log)"; }
fi
export KILN_COORDINATOR=$URL KILN_TOKEN_FILE=$DATA/tokens/api

if alive "$QS/agent.pid"; then
  say "agent already running (pid $(cat "$QS/agent.pid"))"
else
  say "starting an agent: native $(uname -m), plus linux/s390x and linux/arm64 under qemu (log: $QS/agent.log)"
  setsid "${KILN[@]}" agent --coordinator "$URL" --token-file "$DATA/tokens/agent" --name quickstart-agent \
    --platforms linux/s390x,linux/arm64 --max-jobs 2 --work-dir "$QS/agent" --docker-host "$DOCKER_HOST" --log-format text \
    >>"$QS/agent.log" 2>&1 </dev/null &
  echo $! >"$QS/agent.pid"
fi
for _ in $(seq 1 100); do
  "${KILN[@]}" agents 2>/dev/null | grep -q '^quickstart-agent  connected' && break
  sleep 0.1
done
"${KILN[@]}" agents | grep -q '^quickstart-agent  connected' || { tail -n 20 "$QS/agent.log" >&2; die "the agent did not connect (log: $QS/agent.log)"; }
"${KILN[@]}" agents >&2

# --- 4. the example build ----------------------------------------------------------------
set +e
if [ "$EXAMPLE" = hello ]; then
  say "kiln submit examples/hello/kiln.yaml --follow"
  "${KILN[@]}" submit examples/hello/kiln.yaml --follow
  code=$?
else
  say "kiln submit examples/wheel-refinery/kiln.yaml --follow"
  "${KILN[@]}" submit examples/wheel-refinery/kiln.yaml --follow
  code=$?
  build=$("${KILN[@]}" builds --limit 1 --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s.split("\n")[0]).id))')
  if [ "$code" -eq 0 ]; then
    say "kiln artifacts $build"
    "${KILN[@]}" artifacts "$build"
    say "kiln artifacts get $build repair wheel -o $QS/wheelhouse"
    "${KILN[@]}" artifacts get "$build" repair wheel -o "$QS/wheelhouse"
    ls -l "$QS/wheelhouse" >&2
    say "kiln provenance $build repair"
    "${KILN[@]}" provenance "$build" repair
  fi
fi
set -e
cat >&2 <<EOF

Where things are:
  coordinator   $URL (pid $(cat "$QS/coordinator.pid"), log $QS/coordinator.log)
  dashboard     $URL/ in a browser: sign in with the API token in $DATA/tokens/api
                (or a key from 'kiln keys create'; the browser keeps only a session cookie)
  agent         quickstart-agent (pid $(cat "$QS/agent.pid"), log $QS/agent.log)
  data dir      $DATA
                  state.json (builds), builds/ (finished builds), logs/<build>/<node>/attempt-N.log,
                  cas/ (contexts, artifacts, provenance by sha256), reuse/ (idempotency keys),
                  tokens/ (the shared agent token and the admin API token), access/ (API keys and
                  agent credentials, hashed), audit.log (who did what)
Try:
  export KILN_COORDINATOR=$URL KILN_TOKEN_FILE=$DATA/tokens/api
  node dist/cli/main.js builds            # or: npm install -g . && kiln builds
  node dist/cli/main.js status <build-id>
  node dist/cli/main.js keys create --scope read --name viewer   # a read-only API key
  node dist/cli/main.js audit             # who did what
  node dist/cli/main.js cluster           # who leads (this one; several coordinators share a PostgreSQL state: README)
  scripts/install-agent.sh --help         # agents as systemd services on build hosts
  scripts/quickstart.sh stop              # stop the coordinator and the agent
EOF
exit $code
