#!/usr/bin/env bash
# postgres.sh start|stop|restart|env  - (kiln test infrastructure) a PostgreSQL server from Debian's
# postgresql-15 (/usr/lib/postgresql/15/bin, or $KILN_PG_BIN) for the tests of the PostgreSQL
# state backend. Its own directory ($KILN_PG_DIR, default $KILN_RUN_DIR/postgres): the cluster in
# data/ (initdb on the first start), the socket in sock/, the log in postgres.log, the password of
# the role kiln in password, the port in port and the connection URL in env. The server runs as the
# unprivileged system user postgres (created when missing), listens on 127.0.0.1 only, on a free
# port chosen at the first start and kept while it stays free (so a restart keeps the URL), with
# scram-sha-256 password authentication over TCP and fsync on. The role kiln (LOGIN CREATEDB)
# owns what the tests create; each test file makes its own database (test/helpers/postgres.ts).
#   start    idempotent; prints KILN_TEST_POSTGRES=postgres://kiln:<pw>@127.0.0.1:<port>/postgres
#            (also written to <dir>/env)
#   stop     a fast shutdown (pg_ctl -m fast); the data is kept
#   restart  stop, then start (on the same port)
#   env      prints the line start prints, if the server was started once
# Progress on stderr, the NAME=value line on stdout:
#   set -a; eval "$(scripts/infra/postgres.sh start)"; set +a
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"

bin=${KILN_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=${KILN_PG_DIR:-$KILN_RUN_DIR/postgres}
data=$dir/data
sock=$dir/sock
log_file=$dir/postgres.log
timeout=${KILN_PG_TIMEOUT:-60}
user=postgres

usage() { die "usage: postgres.sh start|stop|restart|env (KILN_PG_DIR=$dir)"; }
[ $# -eq 1 ] || usage

# as_pg CMD... : run CMD as the postgres user, from a directory it may enter
as_pg() { (cd / && runuser -u "$user" -- "$@"); }

ensure_user() {
  getent passwd "$user" >/dev/null && return 0
  log "creating the system user $user (the server never runs as root)"
  useradd --system --home-dir /var/lib/postgresql --no-create-home --shell /usr/sbin/nologin "$user" \
    || die "cannot create the system user $user"
}

# the running postmaster's pid, if any (postmaster.pid's first line, checked against /proc)
server_pid() {
  local pid
  [ -s "$data/postmaster.pid" ] || return 1
  pid=$(head -n1 "$data/postmaster.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || return 1
  echo "$pid"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  local p i
  if [ -s "$dir/port" ]; then
    p=$(cat "$dir/port")
    if [[ "$p" =~ ^[0-9]+$ ]] && ! port_in_use "$p"; then echo "$p"; return 0; fi
    log "port $p (used last time) is taken; choosing another"
  fi
  for i in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 30000 ))
    port_in_use "$p" || { echo "$p"; return 0; }
  done
  die "no free port found on 127.0.0.1 (50 tries)"
}

url() { echo "postgres://kiln:$(cat "$dir/password")@127.0.0.1:$(cat "$dir/port")/postgres"; }

print_env() {
  local line; line="KILN_TEST_POSTGRES=$(url)"
  printf '%s\n' "$line" >"$dir/env.tmp" && chmod 600 "$dir/env.tmp" && mv "$dir/env.tmp" "$dir/env"
  echo "$line"
}

init_cluster() {
  log "initdb in $data (as $user; scram-sha-256 over TCP, peer on the socket)"
  mkdir -p "$data"
  chown "$user:" "$data"; chmod 700 "$data"
  as_pg "$bin/initdb" -D "$data" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >>"$log_file" 2>&1 || { tail -n 20 "$log_file" >&2; die "initdb failed; see $log_file"; }
  # every setting kiln's tests rely on, in one file the main config includes
  echo "include_if_exists = 'kiln.conf'" >>"$data/postgresql.conf"
  [ -s "$dir/password" ] || { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/password"; chmod 600 "$dir/password"; }
}

write_conf() {
  local port=$1
  cat >"$data/kiln.conf" <<EOF
# written by kiln's scripts/infra/postgres.sh at every start
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
fsync = on
synchronous_commit = on
password_encryption = 'scram-sha-256'
max_connections = 300
logging_collector = off
EOF
  chown "$user:" "$data/kiln.conf"
}

ensure_role() {
  local port=$1 pw; pw=$(cat "$dir/password")
  as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres >/dev/null <<EOF
SELECT format('CREATE ROLE kiln LOGIN CREATEDB PASSWORD %L', '$pw') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kiln') \\gexec
ALTER ROLE kiln LOGIN CREATEDB PASSWORD '$pw';
EOF
}

start() {
  local pid port
  [ -x "$bin/postgres" ] || die "$bin/postgres not found: install Debian's postgresql-15 (apt-get install postgresql-15; scripts/test.sh does)"
  require_root "the server runs as the postgres user (runuser)"
  ensure_user
  mkdir -p "$dir" "$sock"
  chown "$user:" "$dir" "$sock"; chmod 700 "$dir"; chmod 755 "$sock"
  [ -f "$data/PG_VERSION" ] || init_cluster
  if pid=$(server_pid); then
    port=$(cat "$dir/port")
    log "PostgreSQL already running (pid $pid) on 127.0.0.1:$port"
  else
    port=$(pick_port)
    echo "$port" >"$dir/port"
    write_conf "$port"
    log "starting PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $data, log $log_file)"
    touch "$log_file"; chown "$user:" "$log_file"
    echo "---- $(date -Is) postgres.sh start" >>"$log_file"
    as_pg "$bin/pg_ctl" -D "$data" -l "$log_file" -w -t "$timeout" start >/dev/null \
      || { tail -n 20 "$log_file" >&2; die "PostgreSQL did not start within ${timeout}s; see $log_file"; }
    log "PostgreSQL up (pid $(server_pid || echo '?'))"
  fi
  ensure_role "$port" || die "cannot create or update the role kiln (see $log_file)"
  print_env
}

stop() {
  local pid
  if ! pid=$(server_pid); then log "PostgreSQL in $data: not running"; return 0; fi
  log "stopping PostgreSQL (pid $pid, fast shutdown)"
  as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t "$timeout" stop >/dev/null || die "PostgreSQL (pid $pid) did not stop within ${timeout}s"
  log "PostgreSQL stopped"
}

case "$1" in
  start) start ;;
  stop) require_root; stop ;;
  restart) require_root; stop; start ;;
  env) [ -s "$dir/password" ] && [ -s "$dir/port" ] || die "no PostgreSQL was started in $dir (run scripts/infra/postgres.sh start)"; url | sed 's/^/KILN_TEST_POSTGRES=/' ;;
  -h|--help) sed -n '2,18p' "$0" ;;
  *) usage ;;
esac
