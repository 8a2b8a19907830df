#!/usr/bin/env bash
# scripts/bench/install-comparators.sh - installs the benchmarks' comparators that are not
# kiln dependencies into .bench-deps/ (gitignored): better-sqlite3 (C8, state store), a native
# addon compiled here by node-gyp (python3, make, g++). v12: v13 needs Node 22 and crashes on 20.
# Idempotent; `npm run bench` calls it. A failure only skips those comparators.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
DEPS=$ROOT/.bench-deps
SQLITE=better-sqlite3@12.11.1
if [ -f "$DEPS/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ] \
  && grep -q '"version": "12.11.1"' "$DEPS/node_modules/better-sqlite3/package.json"; then
  exit 0
fi
mkdir -p "$DEPS"
[ -f "$DEPS/package.json" ] || echo '{ "name": "kiln-bench-deps", "private": true }' > "$DEPS/package.json"
echo "[bench] installing $SQLITE into .bench-deps/ (compiles a native addon; about a minute)" >&2
(cd "$DEPS" && npm install --no-audit --no-fund --no-save "$SQLITE" >&2) \
  || echo "[bench] $SQLITE could not be installed: the sqlite comparators will be skipped" >&2
