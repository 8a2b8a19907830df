#!/usr/bin/env bash
# scripts/test.sh [vitest args...]  - the one command that runs every kiln test.
#
# On a fresh Debian machine (as root) it installs what is missing and starts what the tests
# need: Docker Engine (Debian's docker.io when no engine answers) with BuildKit, a second
# dockerd playing a second build host, qemu emulation for s390x/arm64, the local base
# images, npm packages (npm ci). Then it builds kiln, type-checks the tests and runs them all
# (unit tests and integration tests against the real engines, real sockets, real files).
# The last line is always `N passed, N failed`.
#   scripts/test.sh                 everything
#   scripts/test.sh test/unit       only the unit tests (any vitest filter works)
set -uo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cd "$ROOT"
tmp=$(mktemp -d /tmp/kiln-test.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
t_start=$(date +%s)
phase() { printf '[test.sh %4ss] %s\n' "$(( $(date +%s) - t_start ))" "$*" >&2; }
fail_early() {
  phase "FAILED: $*"
  echo "0 passed, 1 failed"
  exit 1
}

phase "infrastructure: scripts/infra/up.sh --second"
env_lines=$(bash scripts/infra/up.sh --second) || fail_early "scripts/infra/up.sh --second (see the messages above)"
set -a
eval "$env_lines"
set +a
phase "DOCKER_HOST=$DOCKER_HOST KILN_DOCKER_HOST_SECOND=${KILN_DOCKER_HOST_SECOND:-}"
phase "local Node base image for Dockerfile.agent: scripts/infra/make-node-image.sh"
bash scripts/infra/make-node-image.sh "$DOCKER_HOST" || fail_early "scripts/infra/make-node-image.sh"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  phase "npm ci"
  npm ci --no-audit --no-fund >&2 || fail_early "npm ci"
else
  phase "npm packages up to date (node_modules newer than package-lock.json)"
fi

phase "npm run build"
npm run build >&2 || fail_early "npm run build (TypeScript errors above)"

typecheck_failed=0
phase "type-check the tests: tsc -p tsconfig.test.json"
if ! npx tsc -p tsconfig.test.json --noEmit >&2; then
  typecheck_failed=1
  phase "type-check FAILED (counted as a failed test)"
fi

phase "vitest run $*"
npx vitest run --reporter=default --reporter=json --outputFile="$tmp/vitest.json" "$@" >&2
vitest_rc=$?
phase "vitest exited with $vitest_rc"

summary=$(node scripts/summarize-vitest.mjs "$tmp/vitest.json" "$typecheck_failed")
failed=${summary#* passed, }
failed=${failed% failed}
echo "$summary"
if [ "$vitest_rc" -eq 0 ] && [ "$failed" = 0 ]; then exit 0; fi
exit 1
