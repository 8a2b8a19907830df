#!/usr/bin/env bash
# scripts/install-coordinator.sh - installs the kiln coordinator as the systemd service
# kiln-coordinator, from the checkout this script is in (built dist/ and production
# node_modules; no network needed).
#   [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE | --no-tls]   install (or update)
#   --upgrade [same options]                          replace the program, restart
#   --uninstall [--purge]                             remove it (--purge: its state too)
# What it installs: the program in /opt/kiln; the system user kiln-coordinator;
# /etc/kiln-coordinator/coordinator.env (0600; other settings added there by hand are kept);
# /etc/systemd/system/kiln-coordinator.service; the data dir is in the unit's StateDirectory,
# /var/lib/kiln-coordinator/data (tokens: data/tokens/agent, data/tokens/api). With --tls-cert/--tls-key:
# the two files as /etc/kiln-coordinator/tls-{cert,key} (0600, root), handed over with
# LoadCredential= by the drop-in kiln-coordinator.service.d/tls.conf, which sets
# KILN_TLS_CERT/KILN_TLS_KEY to them. A port below 1024 gets the drop-in port.conf (the one
# capability that binds it). Running it again changes nothing and restarts nothing unless a file
# changed. Exit status: 0 done, 1 failed, 2 usage error.
set -euo pipefail
SCRIPT=install-coordinator.sh
USAGE="usage: install-coordinator.sh [--listen HOST:PORT] [--tls-cert FILE --tls-key FILE | --no-tls] [--upgrade]
       install-coordinator.sh --uninstall [--purge]"
. "$(dirname "$(readlink -f "$0")")/install/common.sh"

UNIT=kiln-coordinator.service
ETC=/etc/kiln-coordinator
STATE=/var/lib/kiln-coordinator
DROPIN_DIR=$UNIT_DIR/kiln-coordinator.service.d

listen="" tls_cert="" tls_key="" no_tls=false upgrade=false uninstall=false purge=false
while [ $# -gt 0 ]; do
  case "$1" in
    --listen) need_value "$@"; listen=$2; shift 2 ;;
    --tls-cert) need_value "$@"; tls_cert=$2; shift 2 ;;
    --tls-key) need_value "$@"; tls_key=$2; shift 2 ;;
    --no-tls) no_tls=true; shift ;;
    *) mode_flag "$1" || usage_error "unknown argument '$1'"; shift ;;
  esac
done
check_modes
{ [ -n "$tls_cert" ] && [ -z "$tls_key" ]; } || { [ -z "$tls_cert" ] && [ -n "$tls_key" ]; } && usage_error "--tls-cert and --tls-key go together"
$no_tls && [ -n "$tls_cert" ] && usage_error "--no-tls and --tls-cert exclude each other"
port=""
if [ -n "$listen" ]; then
  [[ "$listen" =~ ^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})$ ]] && port=${BASH_REMATCH[2]} && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] \
    || usage_error "--listen '${listen:0:200}' must be HOST:PORT or :PORT (port 1-65535)"
fi
for f in "$tls_cert" "$tls_key"; do
  [ -z "$f" ] && continue
  [ -f "$f" ] && [ -r "$f" ] || die "TLS file '$f' does not exist or cannot be read"
  [ -s "$f" ] || die "TLS file '$f' is empty"
  [ "$(stat -c %s "$f")" -le 1048576 ] || die "TLS file '$f' is larger than 1 MiB"
  grep -q -- '-----BEGIN ' "$f" || die "TLS file '$f' is not PEM (no '-----BEGIN' line)"
done
require_root
require_systemd

if $uninstall; then
  remove_service "$UNIT" kiln-coordinator "$ETC" "$DROPIN_DIR"
  if $purge; then remove_path "$STATE" "/var/lib/private/kiln-coordinator"; else [ -d "$STATE" ] && say "kept $STATE, the coordinator's state (--purge removes it)"; fi
  say "uninstalled"
  exit 0
fi

require_built
find_node
install_program "$upgrade"
ensure_user kiln-coordinator "$STATE"

managed='KILN_LISTEN'
old_value() { [ -f "$ETC/coordinator.env" ] && sed -n "s/^$1=//p" "$ETC/coordinator.env" | tail -n1 || true; }
[ -n "$listen" ] || listen=$(old_value KILN_LISTEN)
# the port in effect (given now or kept from the last run): a re-run must not lose port.conf
if [ -z "$port" ] && [[ "$listen" =~ :([0-9]{1,5})$ ]]; then port=${BASH_REMATCH[1]}; fi
env_tmp=$(mktemp)
{
  echo "# /etc/kiln-coordinator/coordinator.env - read by kiln-coordinator.service. Written by"
  echo "# scripts/install-coordinator.sh: it rewrites the settings below; lines it does not manage"
  echo "# (e.g. KILN_LOG_FORMAT=json for JSON logs in the journal) are kept. The data dir is"
  echo "# $STATE/data (in the unit's StateDirectory). Settings: kiln coordinator --help."
  [ -z "$listen" ] || echo "KILN_LISTEN=$listen"
  if [ -f "$ETC/coordinator.env" ]; then grep -vE "^(#|[[:space:]]*$|($managed)=)" "$ETC/coordinator.env" || true; fi
} >"$env_tmp"
write_file "$ETC/coordinator.env" 600 "$env_tmp"; rm -f "$env_tmp"
chmod 700 "$ETC"

install_unit "$CHECKOUT/config/kiln-coordinator.service" "$UNIT"

# TLS: the files as credentials; the drop-in exists only while they do
if [ -n "$tls_cert" ]; then
  write_file "$ETC/tls-cert" 600 "$tls_cert"
  write_file "$ETC/tls-key" 600 "$tls_key"
  tls_tmp=$(mktemp)
  cat >"$tls_tmp" <<'CONF'
# written by scripts/install-coordinator.sh --tls-cert/--tls-key: the certificate and key reach the
# coordinator as credentials (%d = $CREDENTIALS_DIRECTORY). systemd copies them at start: after
# replacing the files, restart (re-run the script, which does it).
[Service]
LoadCredential=tls-cert:/etc/kiln-coordinator/tls-cert
LoadCredential=tls-key:/etc/kiln-coordinator/tls-key
Environment=KILN_TLS_CERT=%d/tls-cert KILN_TLS_KEY=%d/tls-key
CONF
  write_file "$DROPIN_DIR/tls.conf" 644 "$tls_tmp"; rm -f "$tls_tmp"
elif $no_tls && [ -e "$DROPIN_DIR/tls.conf" ]; then
  remove_path "$DROPIN_DIR/tls.conf" "$ETC/tls-cert" "$ETC/tls-key"; changed=true
fi

# a port below 1024 needs CAP_NET_BIND_SERVICE, in the host's user namespace (PrivateUsers=no)
if [ -n "$port" ] && [ "$port" -lt 1024 ]; then
  port_tmp=$(mktemp)
  printf '%s\n' "# written by scripts/install-coordinator.sh: --listen names a port below 1024" \
    "[Service]" "PrivateUsers=no" "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" "AmbientCapabilities=CAP_NET_BIND_SERVICE" >"$port_tmp"
  write_file "$DROPIN_DIR/port.conf" 644 "$port_tmp"; rm -f "$port_tmp"
elif [ -e "$DROPIN_DIR/port.conf" ]; then
  remove_path "$DROPIN_DIR/port.conf"; changed=true
fi

$PROGRAM_REPLACED && RESTART_NOTE="program upgraded"
activate "$UNIT"
start_others "$UNIT"
say "done: systemctl status kiln-coordinator; logs: journalctl -u kiln-coordinator -f"
say "agent token: $STATE/data/tokens/agent, API token: $STATE/data/tokens/api (created at first start)"
