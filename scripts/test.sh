#!/usr/bin/env bash
# scripts/test.sh [vitest args...]  - the one command that runs every kiln test (what .ci/run calls).
#
# As root on a Debian 12 machine it installs what is missing and starts what the tests need
# (scripts/infra/up.sh --second --registry --postgres: Docker Engine with BuildKit, a second dockerd
# playing a second build host, qemu emulation for arm64/s390x, the local base images kiln/busybox:1*,
# a registry, and PostgreSQL 15 from Debian's postgresql-15, exported as KILN_TEST_POSTGRES), then
#   Debian's chromium for the dashboard tests (headless, driven by playwright-core),
#   npm ci (only when node_modules is missing or older than package-lock.json),
#   npm run build, type-checks the tests and web/ (tsc -p tsconfig.test.json, web/tsconfig.json), lints (npm run lint),
#   and runs vitest.
# Progress goes to stderr ("[test.sh] ..." lines with each phase's duration); stdout gets exactly
# one line, always the last one, even when something fails or the run is interrupted:
#   N passed, N failed
# Exit status 0 only if nothing failed. A failed build, type-check or lint counts as 1 failed test
# (the tests still run); failing infrastructure or npm ci stops the run ("0 passed, 1 failed").
# The Docker daemons are left running for the next run (scripts/infra/down.sh stops them).
#   scripts/test.sh                      everything
#   scripts/test.sh test/unit            only the unit tests (any vitest filter or option works)
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-test.XXXXXX")
report=$tmp/vitest.json
failed_steps=()     # steps outside vitest that failed; each counts as one failed test
vitest_rc=""        # empty until vitest has run
summary_printed=false

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { local ms=$1; printf '%d.%d s' $((ms / 1000)) $(((ms % 1000) / 100)); }
t_start=$(now_ms)
say() { printf '[test.sh] %s\n' "$*" >&2; }
phase_name="" phase_t0=0
begin() { phase_name=$1; phase_t0=$(now_ms); say "$1 ..."; }
end() { say "$phase_name: ${1:-ok} ($(secs $(( $(now_ms) - phase_t0 ))))"; }

# Prints the summary line (last line of output, the only one on stdout) and returns the exit status.
summarize() {
  local line args=("$report" --vitest-exit "${vitest_rc:-1}") s failed
  for s in "${failed_steps[@]}"; do args+=(--failed-step "$s"); done
  line=$(node scripts/summarize-vitest.mjs "${args[@]}") || line=""
  if ! [[ "$line" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    say "scripts/summarize-vitest.mjs gave no summary; counting 1 failed"
    line="0 passed, 1 failed"
  fi
  failed=${line#* passed, }; failed=${failed% failed}
  say "total $(secs $(( $(now_ms) - t_start )))"
  summary_printed=true
  echo "$line"
  [ "$failed" -eq 0 ] && [ "${vitest_rc:-1}" -eq 0 ]
}

on_exit() {
  local rc=$?
  set +e
  if ! $summary_printed; then
    # stopped before the end: an error in this script or an interruption
    # (no vitest report and no vitest exit status: counted as 1 failed)
    say "stopped early (exit status $rc)${phase_name:+ during: $phase_name}"
    summarize
    [ "$rc" -ne 0 ] || rc=1
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A step the tests cannot do without: print why, then the summary, and stop.
stop_run() {
  end "FAILED"
  say "ERROR: $*"
  summarize || true   # no vitest report yet: 0 passed, 1 failed
  exit 1
}

# --- 0. what must be there before anything else -------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  say "ERROR: Node.js >= 20.19 with npm is needed (node/npm not found in PATH)"; exit 1
fi
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || { say "ERROR: Node.js >= 20.19 is needed (found $(node --version))"; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
  say "ERROR: scripts/test.sh must run as root: scripts/infra/up.sh may apt-get install Docker Engine and qemu,"
  say "       starts dockerd (two instances) and registers qemu binfmt handlers. Re-run as root (e.g. sudo scripts/test.sh)."
  say "       (The unit tests alone need no root: npm ci && npx vitest run test/unit)"
  exit 1
fi

# --- 1. infrastructure ---------------------------------------------------------------------
begin "infra: postgresql-15 (Debian's, for the PostgreSQL state backend tests; no service started by apt)"
if [ -x /usr/lib/postgresql/15/bin/postgres ]; then end "already installed"
else
  # a temporary policy-rc.d keeps apt from starting Debian's own cluster: kiln runs its own (postgres.sh)
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=/usr/sbin/policy-rc.d; fi
  pg_ok=false
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends postgresql-15 >&2 \
    || { apt-get update -q -o DPkg::Lock::Timeout=300 >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends postgresql-15 >&2; } && pg_ok=true
  [ -z "$made_policy" ] || rm -f "$made_policy"
  $pg_ok || stop_run "apt-get install postgresql-15 failed (see above)"
  end
fi

begin "infra: scripts/infra/up.sh --second --registry --postgres (packages, two dockerds, base images, a registry, PostgreSQL)"
env_lines=$(bash scripts/infra/up.sh --second --registry --postgres) || stop_run "scripts/infra/up.sh --second --registry --postgres failed (see its messages above)"
while IFS= read -r l; do
  [[ "$l" =~ ^[A-Z_][A-Z0-9_]*=[A-Za-z0-9_./:@%+,=-]*$ ]] || stop_run "unexpected output line from scripts/infra/up.sh: '$l'"
done <<<"$env_lines"
set -a; eval "$env_lines"; set +a
say "  DOCKER_HOST=$DOCKER_HOST KILN_DOCKER_HOST_SECOND=${KILN_DOCKER_HOST_SECOND:-} KILN_REGISTRY=${KILN_REGISTRY:-} KILN_TEST_POSTGRES=${KILN_TEST_POSTGRES:+${KILN_TEST_POSTGRES%%:*}://kiln:***@${KILN_TEST_POSTGRES##*@}}"
end

begin "infra: scripts/infra/make-node-image.sh (kiln/node:20-local for the Dockerfile.agent test)"
if bash scripts/infra/make-node-image.sh "$DOCKER_HOST"; then end; else
  end "FAILED (the Dockerfile.agent test will fail; the other tests still run)"
fi

begin "infra: scripts/infra/systemd-host.sh image (a real systemd for the services test; built once)"
if bash scripts/infra/systemd-host.sh image; then end; else
  end "FAILED (the systemd services test will fail; the other tests still run)"
fi

begin "infra: chromium (Debian's, for the dashboard tests in headless Chromium)"
if [ -x /usr/bin/chromium ]; then end "already installed"
elif DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends chromium >&2 \
  || { apt-get update -q -o DPkg::Lock::Timeout=300 >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends chromium >&2; }; then end
else
  end "FAILED (the dashboard browser tests will fail; the other tests still run)"
fi

# --- 2. npm packages and build -------------------------------------------------------------
if [ ! -d node_modules ]; then
  why="node_modules is missing"
elif [ package-lock.json -nt node_modules/.package-lock.json ]; then
  why="node_modules is older than package-lock.json"
else
  why=""
fi
if [ -n "$why" ]; then
  begin "npm ci ($why)"
  npm ci --no-audit --no-fund >&2 || stop_run "npm ci failed (see above)"
  end
else
  say "npm ci: skipped (node_modules is newer than package-lock.json)"
fi

begin "build: npm run build (tsc to dist/)"
if npm run build >&2; then end; else
  failed_steps+=("build (npm run build)")
  end "FAILED (counted as 1 failed; the tests still run against what dist/ has)"
fi

# --- 3. type-check the tests and the dashboard (web/: its own tsconfig, DOM and JSX) --------
begin "type-check: npx tsc -p tsconfig.test.json --noEmit; npx tsc -p web/tsconfig.json"
if npx tsc -p tsconfig.test.json --noEmit >&2 && npx tsc -p web/tsconfig.json >&2; then end; else
  failed_steps+=("type-check (tsc -p tsconfig.test.json, tsc -p web/tsconfig.json)")
  end "FAILED (counted as 1 failed)"
fi

# --- 4. lint (ESLint with typescript-eslint's type-aware rules) -----------------------------
begin "lint: npm run lint"
if npm run --silent lint >&2; then end; else
  failed_steps+=("lint (npm run lint)")
  end "FAILED (counted as 1 failed)"
fi

# --- 5. the tests --------------------------------------------------------------------------
begin "vitest run${*:+ $*}"
rc=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" >&2 || rc=$?
vitest_rc=$rc
end "exit status $vitest_rc"

summarize
