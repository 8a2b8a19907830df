#!/usr/bin/env bash
# scripts/kill-loop-nightly.sh [--rounds R] [--runs N] [--seed S] [--agents A] [--no-build]
#
# The nightly run of the coordinator kill -9 loop (test/integration/fault.coordinator-kill-loop.test.ts):
# N runs (default 1) of R kill rounds each (default 100), one after the other, seeds S, S+1, ...
# (default: a random S). Builds dist/ first (the test runs dist/cli/main.js) unless --no-build.
# Needs no Docker (noop agents). Prints one line per run (its counts and violations), then each
# failing run's violations and the command that replays it; exits 1 when a run failed, 2 on bad
# usage. A failing run keeps its temp dir (data dir, agent run records) and names it.
#   CI runs the same test with its default of 10 rounds.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$ROOT"

rounds=100 runs=1 seed=$(( (RANDOM << 15 | RANDOM) )) agents=3 build=1
usage() { echo "usage: scripts/kill-loop-nightly.sh [--rounds R] [--runs N] [--seed S] [--agents A] [--no-build]" >&2; exit 2; }
int() { [[ "$2" =~ ^[0-9]+$ ]] && (( $2 >= $3 )) || { echo "kill-loop-nightly: $1 must be an integer >= $3 (got '$2')" >&2; exit 2; }; }
while (($#)); do
  case "$1" in
    --rounds) [[ $# -ge 2 ]] || usage; int --rounds "$2" 1; rounds=$2; shift 2 ;;
    --runs) [[ $# -ge 2 ]] || usage; int --runs "$2" 1; runs=$2; shift 2 ;;
    --seed) [[ $# -ge 2 ]] || usage; int --seed "$2" 0; seed=$2; shift 2 ;;
    --agents) [[ $# -ge 2 ]] || usage; int --agents "$2" 1; agents=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kill-loop-nightly: unknown argument '$1'" >&2; usage ;;
  esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-kill-nightly.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ((build)); then
  npm run build >"$tmp/build.log" 2>&1 || { echo "kill-loop-nightly: npm run build failed:" >&2; tail -30 "$tmp/build.log" >&2; exit 1; }
fi

t0=$(date +%s)
for ((i = 0; i < runs; i++)); do
  s=$((seed + i))
  report=$tmp/report-$i.json
  rc=0
  KILN_KILL_ROUNDS=$rounds KILN_KILL_SEED=$s KILN_KILL_AGENTS=$agents KILN_KILL_REPORT=$report \
    npx vitest run test/integration/fault.coordinator-kill-loop.test.ts -t 'kill -9 loop' >"$tmp/vitest-$i.log" 2>&1 || rc=$?
  if [[ ! -s $report ]]; then
    echo "run $((i + 1))/$runs (seed $s): did not finish (vitest exit $rc); its output:" >&2
    tail -60 "$tmp/vitest-$i.log" >&2
    echo '{"fatal":"the run did not finish (see above)","seed":'"$s"'}' >"$report"
  else
    node -e '
      const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
      const v = r.fatal ? "FATAL" : Object.entries(r.violations).map(([k, n]) => `${k}: ${n}`).join(", ") || "none";
      const parts = r.fatal ? [] : [`${r.seconds} s`, `${r.builds_acknowledged} builds`, `${r.cancels_acknowledged} cancels`, `${r.pins_acknowledged} pins (${r.pins_lost} lost)`, `${r.runs_completed} runs`, `kills with double runs: ${JSON.stringify(r.kills_with_double_runs)}`];
      console.log(`run ${process.argv[2]} (seed ${r.seed}): violations ${v}${parts.length ? "; " + parts.join(", ") : ""}`);
    ' "$report" "$((i + 1))/$runs"
  fi
done

node -e '
  const fs = require("fs");
  const dir = process.argv[1];
  const reports = fs.readdirSync(dir).filter((f) => f.startsWith("report-")).map((f) => JSON.parse(fs.readFileSync(`${dir}/${f}`, "utf8")));
  const failed = reports.filter((r) => r.fatal || Object.keys(r.violations).length > 0);
  const runsWith = {};
  for (const r of failed) for (const k of r.fatal ? ["fatal"] : Object.keys(r.violations)) runsWith[k] = (runsWith[k] || 0) + 1;
  for (const r of failed) {
    console.log(`seed ${r.seed}: ${r.fatal ? r.fatal.split("\n")[0] : JSON.stringify(r.violations)}`);
    const shown = {};  // the first two of each kind
    for (const d of r.details || []) if ((shown[d.kind] = (shown[d.kind] || 0) + 1) <= 2) console.log(`  [${d.kind}] ${d.detail.slice(0, 400)}`);
    if (r.replay) console.log(`  replay: ${r.replay}`);
    if (r.dir) console.log(`  temp dir: ${r.dir}`);
  }
  // how often each kind of kill was followed by a node running twice (the double-run window)
  const modes = {};
  for (const r of reports) for (const k of r.kill_log || []) { const m = (modes[k.mode] ??= [0, 0]); m[0]++; if (k.double_run) m[1]++; }
  const kills = Object.entries(modes).map(([m, [n, d]]) => `${m} ${d}/${n}`).join(", ");
  if (kills) console.log(`kills followed by a node run twice: ${kills}`);
  const pins = reports.reduce((a, r) => [a[0] + (r.pins_lost || 0), a[1] + (r.pins_acknowledged || 0)], [0, 0]);
  if (pins[1]) console.log(`acknowledged pins lost: ${pins[0]}/${pins[1]}`);
  console.log(`${failed.length} of ${reports.length} runs failed${failed.length ? ` (runs with each violation: ${Object.entries(runsWith).map(([k, n]) => `${k}: ${n}`).join(", ")})` : ""}`);
  fs.writeFileSync(`${dir}/count`, String(failed.length));
' "$tmp"
count=$(cat "$tmp/count")
echo "$runs runs of $rounds rounds from seed $seed in $(( $(date +%s) - t0 )) s"
if ((count > 0)); then exit 1; fi
