#!/usr/bin/env bash
# scripts/sim-nightly.sh [--seeds N] [--first S] [--chunk C] [--clock-skew]
#
# The nightly run of the deterministic simulation (test/unit/simulation.test.ts, harness in
# test/sim/): N seeds (default 10000) from seed S (default 1), in vitest runs of C seeds each
# (default 1000), one after the other. Prints one line per chunk, then every failing seed with
# its violations and the command that replays it; exits 1 when a seed failed, 2 on bad usage.
#   --clock-skew   also give some agents a wrong clock (KILN_SIM_CLOCK_SKEW=1)
# A failing seed is a regression test as it is: replay it, fix, and keep it passing.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"

seeds=10000 first=1 chunk=1000 skew=0
usage() { echo "usage: scripts/sim-nightly.sh [--seeds N] [--first S] [--chunk C] [--clock-skew]" >&2; exit 2; }
int() { [[ "$2" =~ ^[0-9]+$ ]] && (( $2 >= $3 )) || { echo "sim-nightly: $1 must be an integer >= $3 (got '$2')" >&2; exit 2; }; }
while (($#)); do
  case "$1" in
    --seeds) [[ $# -ge 2 ]] || usage; int --seeds "$2" 1; seeds=$2; shift 2 ;;
    --first) [[ $# -ge 2 ]] || usage; int --first "$2" 0; first=$2; shift 2 ;;
    --chunk) [[ $# -ge 2 ]] || usage; int --chunk "$2" 1; chunk=$2; shift 2 ;;
    --clock-skew) skew=1; shift ;;
    -h|--help) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "sim-nightly: unknown argument '$1'" >&2; usage ;;
  esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-sim-nightly.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failed_chunks=0
start=$first
end=$((first + seeds))
t0=$(date +%s)
while ((start < end)); do
  n=$((end - start < chunk ? end - start : chunk))
  report=$tmp/report-$start.json
  log=$tmp/vitest-$start.log
  rc=0
  KILN_SIM_FIRST=$start KILN_SIM_SEEDS=$n KILN_SIM_CLOCK_SKEW=$skew KILN_SIM_REPORT=$report \
    npx vitest run test/unit/simulation.test.ts -t 'keeps every invariant' >"$log" 2>&1 || rc=$?
  if [[ ! -s $report ]]; then
    echo "seeds $start..$((start + n - 1)): the run did not finish (vitest exit $rc); its output:" >&2
    tail -50 "$log" >&2
    failed_chunks=$((failed_chunks + 1))
  else
    bad=$(node -e 'console.log(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).length)' "$report")
    echo "seeds $start..$((start + n - 1)) (+ the regression seeds): $bad failed ($(( $(date +%s) - t0 )) s so far)"
  fi
  start=$((start + n))
done

# every failing seed: violations and replay command
node -e '
  const fs = require("fs");
  const bySeed = new Map();  // (every chunk also runs the regression seeds of the test file)
  for (const f of fs.readdirSync(process.argv[1]).filter((f) => f.startsWith("report-")).sort()) for (const r of JSON.parse(fs.readFileSync(process.argv[1] + "/" + f, "utf8"))) bySeed.set(r.seed, r);
  const all = [...bySeed.values()].sort((a, b) => a.seed - b.seed);
  const byInvariant = {};
  for (const r of all) for (const v of r.violations) byInvariant[v.invariant] = (byInvariant[v.invariant] || 0) + 1;
  for (const r of all) {
    console.log(`seed ${r.seed}: ${r.violations.map((v) => `[${v.invariant}] ${v.detail.split("\n")[0].slice(0, 300)}`).join("; ")}`);
    console.log(`  replay: ${r.replay}`);
  }
  console.log(`${all.length} failing seeds${all.length ? ` (${Object.entries(byInvariant).map(([k, n]) => `${k}: ${n}`).join(", ")})` : ""}`);
  fs.writeFileSync(process.argv[1] + "/count", String(all.length));
' "$tmp"
count=$(cat "$tmp/count")
echo "$seeds seeds from $first in $(( $(date +%s) - t0 )) s"
if ((count > 0 || failed_chunks > 0)); then exit 1; fi
