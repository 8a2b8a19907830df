# scripts/install/common.sh - what install-agent.sh and install-coordinator.sh share: errors,
# argument checks, the program under /opt/kiln (built dist/ and the production node_modules of
# this checkout, copied without network), system users, and files written only when their
# content changes (so a second run changes nothing). Sourced, not executed.
# Both services run the one program in /opt/kiln: whoever replaces it first stops every kiln
# unit that runs (the agent with a drain: running builds finish), so no running process loads a
# module of a different version, and starts them again after; it is removed only with the
# last kiln unit.

KILN_PREFIX=${KILN_PREFIX:-/opt/kiln}
# removed with rm -rf on uninstall: an absolute path of at least two levels, never a system dir
case "$KILN_PREFIX" in
  /*/*) ;;
  *) printf 'error: KILN_PREFIX=%s must be an absolute path like /opt/kiln\n' "$KILN_PREFIX" >&2; exit 2 ;;
esac
case "${KILN_PREFIX%/}" in
  /usr/*|/etc/*|/var/lib|/var/cache|/var|/boot/*|/proc/*|/sys/*|/dev/*|*/..|*/../*|*/.|*/./*) printf 'error: KILN_PREFIX=%s is not a place for the kiln program\n' "$KILN_PREFIX" >&2; exit 2 ;;
esac
UNIT_DIR=${KILN_UNIT_DIR:-/etc/systemd/system}
CHECKOUT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)
changed=false   # set when anything on disk changed (the service is then (re)started)

say() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }
die() { printf '%s: error: %s\n' "$SCRIPT" "$*" >&2; exit "${2:-1}"; }
usage_error() { printf '%s: error: %s\n%s\n' "$SCRIPT" "$1" "$USAGE" >&2; exit 2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a value"; }
# mode_flag ARG : the flags both scripts take (--upgrade, --uninstall, --purge, --help); false
# for any other. check_modes: the combinations they refuse.
mode_flag() {
  case "$1" in
    --upgrade) upgrade=true ;;
    --uninstall) uninstall=true ;;
    --purge) purge=true ;;
    -h|--help) echo "$USAGE"; exit 0 ;;
    *) return 1 ;;
  esac
}
check_modes() {
  $purge && ! $uninstall && usage_error "--purge goes with --uninstall"
  $uninstall && $upgrade && usage_error "--uninstall and --upgrade exclude each other"
  true
}
require_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (it creates a system user, writes /etc and $UNIT_DIR and runs systemctl); re-run with sudo"; }
require_systemd() { [ -d /run/systemd/system ] || die "systemd is not running on this host (no /run/systemd/system): these scripts install systemd services"; }

# node: absolute path of a Node.js the services can run (>= 20.19, outside /home: ProtectHome=yes)
find_node() {
  local n; n=$(command -v node) || die "node not found in PATH (install Node.js >= 20.19 system-wide, e.g. /usr/bin/node)"
  n=$(readlink -f "$n")
  "$n" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
    || die "Node.js >= 20.19 is needed ($n is $("$n" --version))"
  case "$n" in /home/*|/root/*) die "$n is under a home directory, which the services cannot see (ProtectHome=yes): install Node.js system-wide" ;; esac
  NODE_BIN=$n
}

# The checkout must be built: dist/cli/main.js and node_modules.
require_built() {
  [ -f "$CHECKOUT/dist/cli/main.js" ] || die "no built program in $CHECKOUT/dist (run: npm ci && npm run build in $CHECKOUT first)"
  [ -f "$CHECKOUT/package-lock.json" ] && [ -d "$CHECKOUT/node_modules" ] || die "no node_modules in $CHECKOUT (run: npm ci in $CHECKOUT first)"
}

# write_file PATH MODE CONTENT-FILE : install CONTENT-FILE at PATH (owner root) unless equal;
# sets changed=true when it wrote. Prints nothing when nothing changed.
write_file() {
  local path=$1 mode=$2 src=$3
  if [ -f "$path" ] && cmp -s "$src" "$path" && [ "$(stat -c %a "$path")" = "$mode" ]; then return 0; fi
  mkdir -p "$(dirname "$path")"
  install -o root -g root -m "$mode" "$src" "$path.kiln-new" || die "cannot write $path.kiln-new"
  mv -f "$path.kiln-new" "$path" || die "cannot replace $path"
  say "wrote $path"; changed=true
}

# remove_path PATH... : rm -rf each that exists, saying so.
remove_path() { local p; for p in "$@"; do [ -e "$p" ] || [ -L "$p" ] || continue; rm -rf "$p"; say "removed $p"; done; }

# ensure_user NAME HOME : a system user and group (no login, no home created).
ensure_user() {
  getent passwd "$1" >/dev/null && return 0
  useradd --system --user-group --home-dir "$2" --no-create-home --shell /usr/sbin/nologin --comment "kiln ($1)" "$1" \
    || die "useradd $1 failed"
  say "created system user $1"; changed=true
}

remove_user() {
  getent passwd "$1" >/dev/null || return 0
  userdel "$1" || die "userdel $1 failed"
  getent group "$1" >/dev/null && groupdel "$1" 2>/dev/null || true
  say "removed system user $1"
}

# stage_program DIR : dist/, package.json and the production packages of package-lock.json
# (not "dev"; optional ones only if present) copied from the checkout into DIR. No network.
stage_program() {
  local dir=$1 list
  list=$(mktemp)
  "$NODE_BIN" -e '
    const fs = require("fs"), path = require("path");
    const root = process.argv[1];
    const lock = JSON.parse(fs.readFileSync(path.join(root, "package-lock.json"), "utf8"));
    const out = ["dist", "package.json"], missing = [];
    for (const [p, v] of Object.entries(lock.packages ?? {})) {
      // top-level entries only: a package directory carries its own nested node_modules
      if (!p || v.dev || v.link || p.split("node_modules/").length !== 2) continue;
      if (fs.existsSync(path.join(root, p))) out.push(p);
      else if (!v.optional) missing.push(p);
    }
    if (missing.length) { console.error(`production packages missing from ${root}/node_modules: ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""} (run: npm ci)`); process.exit(1); }
    process.stdout.write(out.join("\n") + "\n");
  ' "$CHECKOUT" >"$list" || { rm -f "$list"; die "cannot list the production packages of $CHECKOUT"; }
  rm -rf "$dir"; mkdir -p "$dir"
  tar -C "$CHECKOUT" --exclude=node_modules/.bin -cf - -T "$list" | tar -C "$dir" --no-same-owner -xf - \
    || { rm -f "$list"; die "copying the program to $dir failed"; }
  rm -f "$list"
  chown -R root:root "$dir"; chmod -R u=rwX,go=rX "$dir"
}

# install_program REPLACE : the program at $KILN_PREFIX. Absent: installed. Present and
# REPLACE=true (--upgrade): replaced if it differs from this checkout's (PROGRAM_REPLACED=true).
# Present and REPLACE=false: kept (a note when it differs).
PROGRAM_REPLACED=false
install_program() {
  local replace=$1 stage="$KILN_PREFIX.kiln-new"
  if [ -f "$KILN_PREFIX/dist/cli/main.js" ] && ! $replace; then
    diff -rq "$CHECKOUT/dist" "$KILN_PREFIX/dist" >/dev/null 2>&1 \
      || say "note: the program in $KILN_PREFIX differs from this checkout's (kept; --upgrade replaces it)"
    return 0
  fi
  stage_program "$stage"
  if [ -d "$KILN_PREFIX" ] && diff -rq "$KILN_PREFIX" "$stage" >/dev/null 2>&1; then
    rm -rf "$stage"; say "program in $KILN_PREFIX is up to date"; return 0
  fi
  if [ -d "$KILN_PREFIX" ]; then
    stop_kiln_units
    rm -rf "$KILN_PREFIX.kiln-old"; mv "$KILN_PREFIX" "$KILN_PREFIX.kiln-old"; mv "$stage" "$KILN_PREFIX"; rm -rf "$KILN_PREFIX.kiln-old"
    PROGRAM_REPLACED=true; say "replaced the program in $KILN_PREFIX ($("$NODE_BIN" "$KILN_PREFIX/dist/cli/main.js" --version 2>/dev/null || echo '?'))"
  else
    mv "$stage" "$KILN_PREFIX"; say "installed the program in $KILN_PREFIX"
  fi
  changed=true
}

# install_unit SRC NAME : the unit file at $UNIT_DIR/NAME, with this host's node in ExecStart=.
install_unit() {
  local tmp; tmp=$(mktemp)
  sed -e "s#^ExecStart=/usr/bin/node #ExecStart=$NODE_BIN #" "$1" >"$tmp"
  write_file "$UNIT_DIR/$2" 644 "$tmp"; rm -f "$tmp"
}

# The other kiln units installed here (they share $KILN_PREFIX).
other_units() { local u; for u in kiln-agent.service kiln-coordinator.service; do [ "$u" != "$1" ] && [ -f "$UNIT_DIR/$u" ] && echo "$u"; done; true; }

# stop_kiln_units : before the program is replaced, stop the kiln units that run: the agent
# first (its drain reports the running builds to the coordinator), then the coordinator.
STOPPED_UNITS=""
stop_kiln_units() {
  local u; for u in kiln-agent.service kiln-coordinator.service; do
    [ -f "$UNIT_DIR/$u" ] && systemctl is-active --quiet "$u" || continue
    say "stopping $u before replacing the program (running builds finish first)"
    systemctl stop "$u" || say "warning: stopping $u failed (systemctl status $u)"
    STOPPED_UNITS="$STOPPED_UNITS $u"
  done
}

# start_others UNIT : start again the kiln units stop_kiln_units stopped, but UNIT (the
# script activates that one itself): the coordinator first.
start_others() {
  local u; for u in kiln-coordinator.service kiln-agent.service; do
    [ "$u" != "$1" ] && [[ " $STOPPED_UNITS " == *" $u "* ]] || continue
    say "starting $u again (it runs the new program)"; systemctl start "$u" || say "warning: starting $u failed (systemctl status $u)"
  done
}

# remove_service UNIT USER ETC DROPIN_DIR : stop (the agent: a drain) and remove the unit,
# its drop-ins, its settings and credentials dir and its system user; the program too when
# no other kiln unit uses it. State and cache dirs are the caller's (kept unless --purge).
remove_service() {
  local unit=$1 user=$2 etc=$3 dropins=$4
  if [ -f "$UNIT_DIR/$unit" ]; then
    say "stopping $unit (running builds finish first)"
    systemctl disable --now "$unit" >/dev/null 2>&1 || systemctl stop "$unit" || true
  fi
  remove_path "$UNIT_DIR/$unit" "$dropins" "$etc"
  systemctl daemon-reload
  systemctl reset-failed "$unit" >/dev/null 2>&1 || true
  if [ -n "$(other_units "$unit")" ]; then say "kept $KILN_PREFIX (used by $(other_units "$unit" | tr '\n' ' '))"; else remove_path "$KILN_PREFIX"; fi
  remove_user "$user"
}

# activate UNIT : enable it; start it if stopped; restart it if something changed while it ran.
activate() {
  local u=$1
  systemctl daemon-reload
  systemctl enable --quiet "$u" 2>/dev/null || systemctl enable "$u" || die "systemctl enable $u failed"
  if ! systemctl is-active --quiet "$u"; then
    systemctl start "$u" || die "$u did not start: see systemctl status $u and journalctl -u $u"
    say "started $u"
  elif $changed; then
    say "restarting $u (${RESTART_NOTE:-its files changed})"
    systemctl restart "$u" || die "$u did not restart: see systemctl status $u and journalctl -u $u"
  else
    say "nothing changed; $u keeps running"
    return 0
  fi
  # Type=exec reports the start once node runs: a bad setting shows a moment later (exit 78)
  local i; for i in $(seq 1 ${KILN_INSTALL_SETTLE_TICKS:-12}); do
    sleep 0.25
    systemctl is-active --quiet "$u" && continue
    journalctl -u "$u" -n 15 --no-pager -o cat >&2 || true
    die "$u stopped right after it started (above: its last log lines; systemctl status $u)"
  done
}
