#!/usr/bin/env bash
# scripts/nightly.sh  - the long versions of the randomised tests, one after the other:
#   1. the deterministic simulation, 10,000 seeds          (scripts/sim-nightly.sh)
#   2. the coordinator kill -9 loop, 100 rounds             (scripts/kill-loop-nightly.sh)
#   3. the OpenAPI conformance test, 500 requests per operation and kind, a random seed
#   4. the hostile-string property test, 300 generated strings, a random seed
# Each prints its own summary; seeds are printed so a failure can be replayed. Exits 1 if
# any part failed. Needs what scripts/test.sh sets up (run that once first: it builds
# dist/ and installs packages); parts 2-4 need no Docker.
set -uo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"

failed=()
run() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then echo "== $name: ok"; else echo "== $name: FAILED"; failed+=("$name"); fi
}
seed=$(( (RANDOM << 15 | RANDOM) ))
npm run build >/dev/null || { echo "npm run build failed" >&2; exit 1; }
run simulation bash scripts/sim-nightly.sh --seeds 10000
run kill-loop bash scripts/kill-loop-nightly.sh --rounds 100 --no-build
run conformance env KILN_CONFORMANCE_RUNS=500 KILN_CONFORMANCE_SEED="$seed" npx vitest run test/integration/http-openapi.conformance.test.ts
run hostile env KILN_HOSTILE_RUNS=300 KILN_HOSTILE_SEED="$seed" npx vitest run test/integration/http-hostile.property.test.ts
if ((${#failed[@]} > 0)); then
  echo "nightly: failed: ${failed[*]} (seed $seed for conformance and hostile)"
  exit 1
fi
echo "nightly: all parts passed (seed $seed for conformance and hostile)"
