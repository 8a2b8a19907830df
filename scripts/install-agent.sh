#!/usr/bin/env bash
# scripts/install-agent.sh - installs a kiln agent as the systemd service kiln-agent, from the
# checkout this script is in (built dist/ and production node_modules; no network needed).
#   --coordinator URL[,URL...] --token-file FILE [--name N] [--labels k=v,...] [--max-jobs N]
#   [--platforms linux/arm64,...] [--gpu|--no-gpu]      install (or update the settings)
#   [--ca-file FILE|--no-ca]                             the CA that signed an https:// coordinator's certificate
#   --upgrade [same options]                             replace the program, restart (drain)
#   --uninstall [--purge]                                remove it (--purge: its state and cache too)
# What it installs: the program in /opt/kiln; the system user kiln-agent (group docker);
# /etc/kiln-agent/agent.env (0600: coordinator, name, labels, max jobs, platforms, work dir;
# other settings added there by hand are kept); the token as /etc/kiln-agent/token (0600,
# root; the unit hands it over with LoadCredential=); /etc/systemd/system/kiln-agent.service;
# on GPU hosts (nvidia-smi in PATH, or --gpu) the drop-in kiln-agent.service.d/gpu.conf that
# opens /dev/nvidia*; with --ca-file, the CA as /etc/kiln-agent/ca.pem (0600, handed over with
# LoadCredential= by the drop-in kiln-agent.service.d/ca.conf, which sets KILN_CA_FILE). Then `systemctl enable --now kiln-agent`. Running it again changes
# nothing and restarts nothing unless a file changed; a restart (or stop) drains: running
# builds finish first. State: /var/lib/kiln-agent, cache and scratch: /var/cache/kiln-agent.
# Exit status: 0 done, 1 failed, 2 usage error.
set -euo pipefail
SCRIPT=install-agent.sh
USAGE="usage: install-agent.sh --coordinator URL[,URL...] --token-file FILE [--name NAME] [--labels k=v,...] [--max-jobs N]
                        [--platforms linux/arm64,...] [--gpu|--no-gpu] [--ca-file FILE|--no-ca] [--upgrade]
       install-agent.sh --uninstall [--purge]"
. "$(dirname "$(readlink -f "$0")")/install/common.sh"

UNIT=kiln-agent.service
ETC=/etc/kiln-agent
STATE=/var/lib/kiln-agent
CACHE=/var/cache/kiln-agent
DROPIN_DIR=$UNIT_DIR/kiln-agent.service.d

coordinator="" token_file="" name="" labels="" max_jobs="" platforms="" gpu=auto ca_file="" no_ca=false upgrade=false uninstall=false purge=false
while [ $# -gt 0 ]; do
  case "$1" in
    --coordinator) need_value "$@"; coordinator=$2; shift 2 ;;
    --token-file) need_value "$@"; token_file=$2; shift 2 ;;
    --name) need_value "$@"; name=$2; shift 2 ;;
    --labels) need_value "$@"; labels=$2; shift 2 ;;
    --max-jobs) need_value "$@"; max_jobs=$2; shift 2 ;;
    --platforms) need_value "$@"; platforms=$2; shift 2 ;;
    --gpu) gpu=yes; shift ;;
    --no-gpu) gpu=no; shift ;;
    --ca-file) need_value "$@"; ca_file=$2; shift 2 ;;
    --no-ca) no_ca=true; shift ;;
    *) mode_flag "$1" || usage_error "unknown argument '$1'"; shift ;;
  esac
done
check_modes
$no_ca && [ -n "$ca_file" ] && usage_error "--no-ca and --ca-file exclude each other"

# --- checks of the values (before touching anything) --------------------------------------
if ! $uninstall; then
  if [ -z "$coordinator" ] && ! { $upgrade && [ -f "$ETC/agent.env" ]; }; then usage_error "--coordinator URL is required"; fi
  if [ -z "$token_file" ] && ! { $upgrade && [ -f "$ETC/token" ]; }; then usage_error "--token-file FILE is required"; fi
  if [ -n "$coordinator" ]; then
    # One URL, or several comma-separated (the agent follows the leader among them; it checks the rest).
    url_re='^(https?|wss?)://[][A-Za-z0-9.:-]+(/[A-Za-z0-9._~%/-]*)?$'
    [ ${#coordinator} -le 32768 ] || usage_error "--coordinator is longer than 32768 characters"
    IFS=',' read -ra coordinator_urls <<< "$coordinator,"
    for url in "${coordinator_urls[@]}"; do
      [[ "$url" =~ $url_re ]] && [ ${#url} -le 2048 ] \
        || usage_error "--coordinator '${url:0:200}' is not an http(s):// or ws(s):// URL"
    done
  fi
  [ -z "$name" ] || [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] \
    || usage_error "--name '${name:0:100}' must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
  [ -z "$labels" ] || { [[ "$labels" =~ ^[A-Za-z0-9._/-]+=[A-Za-z0-9._/:-]*(,[A-Za-z0-9._/-]+=[A-Za-z0-9._/:-]*)*$ ]] && [ ${#labels} -le 4096 ]; } \
    || usage_error "--labels '${labels:0:200}' must be k=v pairs separated by commas (letters, digits, '.', '_', '/', '-')"
  [ -z "$max_jobs" ] || { [[ "$max_jobs" =~ ^[0-9]{1,4}$ ]] && [ "$max_jobs" -ge 1 ] && [ "$max_jobs" -le 1024 ]; } \
    || usage_error "--max-jobs '${max_jobs:0:20}' must be an integer in 1..1024"
  [ -z "$platforms" ] || [[ "$platforms" =~ ^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?(,[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?)*$ ]] \
    || usage_error "--platforms '${platforms:0:200}' must be os/arch[/variant] separated by commas, e.g. linux/arm64,linux/s390x"
  if [ -n "$token_file" ]; then
    [ -f "$token_file" ] && [ -r "$token_file" ] || die "token file '$token_file' does not exist or cannot be read"
    [ "$(stat -c %s "$token_file")" -le 4096 ] || die "token file '$token_file' is larger than 4096 bytes: not a token"
    token=$(tr -d ' \t\r\n' <"$token_file")
    [ -n "$token" ] || die "token file '$token_file' is empty"
    [ "$(grep -c . "$token_file")" -le 1 ] || die "token file '$token_file' must hold one line (the token)"
    [[ "$token" =~ ^[A-Za-z0-9._~+/=-]+$ ]] || die "token file '$token_file' holds characters no kiln token has"
  fi
  if [ -n "$ca_file" ]; then
    [ -f "$ca_file" ] && [ -r "$ca_file" ] || die "CA file '$ca_file' does not exist or cannot be read"
    [ "$(stat -c %s "$ca_file")" -le 1048576 ] || die "CA file '$ca_file' is larger than 1 MiB"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" || die "CA file '$ca_file' holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
  fi
fi
require_root
require_systemd

# --- uninstall ------------------------------------------------------------------------------
if $uninstall; then
  remove_service "$UNIT" kiln-agent "$ETC" "$DROPIN_DIR"
  if $purge; then remove_path "$STATE" "$CACHE"; else
    for d in "$STATE" "$CACHE"; do [ -d "$d" ] && say "kept $d (--purge removes it)"; done
  fi
  say "uninstalled"
  exit 0
fi

# --- install / update / upgrade -------------------------------------------------------------
require_built
find_node
getent group docker >/dev/null || die "no 'docker' group on this host: install and start Docker Engine first (the agent builds with it)"

install_program "$upgrade"
ensure_user kiln-agent "$STATE"
id -nG kiln-agent | tr ' ' '\n' | grep -qx docker || { usermod -aG docker kiln-agent; say "added kiln-agent to the docker group"; changed=true; }

# agent.env: the settings this script manages, then every other line of the previous file
managed='KILN_COORDINATOR|KILN_AGENT_NAME|KILN_AGENT_LABELS|KILN_AGENT_MAX_JOBS|KILN_AGENT_PLATFORMS|KILN_AGENT_WORK_DIR'
old_value() { [ -f "$ETC/agent.env" ] && sed -n "s/^$1=//p" "$ETC/agent.env" | tail -n1 || true; }
[ -n "$coordinator" ] || coordinator=$(old_value KILN_COORDINATOR)
# a setting not given keeps the installed one (a re-run to add --ca-file must not rename the
# agent: its credential is bound to its name)
[ -n "$name" ] || name=$(old_value KILN_AGENT_NAME)
[ -n "$labels" ] || labels=$(old_value KILN_AGENT_LABELS)
[ -n "$max_jobs" ] || max_jobs=$(old_value KILN_AGENT_MAX_JOBS)
[ -n "$platforms" ] || platforms=$(old_value KILN_AGENT_PLATFORMS)
env_tmp=$(mktemp)
{
  echo "# /etc/kiln-agent/agent.env - read by kiln-agent.service. Written by scripts/install-agent.sh:"
  echo "# it rewrites the settings below; lines it does not manage (e.g. KILN_LOG_FORMAT=json for JSON"
  echo "# logs in the journal) are kept. Settings: kiln agent --help."
  echo "KILN_COORDINATOR=$coordinator"
  echo "KILN_AGENT_NAME=${name:-$(hostname)}"
  [ -z "$labels" ] || echo "KILN_AGENT_LABELS=$labels"
  [ -z "$max_jobs" ] || echo "KILN_AGENT_MAX_JOBS=$max_jobs"
  [ -z "$platforms" ] || echo "KILN_AGENT_PLATFORMS=$platforms"
  echo "KILN_AGENT_WORK_DIR=$CACHE"
  if [ -f "$ETC/agent.env" ]; then grep -vE "^(#|[[:space:]]*$|($managed)=)" "$ETC/agent.env" || true; fi
} >"$env_tmp"
write_file "$ETC/agent.env" 600 "$env_tmp"; rm -f "$env_tmp"
chmod 700 "$ETC"
if [ -n "$token_file" ]; then
  tok_tmp=$(mktemp); printf '%s\n' "$token" >"$tok_tmp"
  write_file "$ETC/token" 600 "$tok_tmp"; rm -f "$tok_tmp"
fi

install_unit "$CHECKOUT/config/kiln-agent.service" "$UNIT"

# GPU: PrivateDevices=yes hides /dev/nvidia*; the drop-in opens exactly those devices
[ "$gpu" = auto ] && command -v nvidia-smi >/dev/null 2>&1 && { gpu=yes; say "nvidia-smi found: GPU host"; }
if [ "$gpu" = yes ]; then
  gpu_tmp=$(mktemp)
  {
    echo "# written by scripts/install-agent.sh on a GPU host (nvidia-smi in PATH, or --gpu): the agent"
    echo "# may open the NVIDIA devices; every other device stays closed (DevicePolicy=closed)."
    echo "[Service]"
    echo "PrivateDevices=no"
    echo "DevicePolicy=closed"
    devs=(/dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools)
    present=0
    for d in /dev/nvidia[0-9]*; do [ -e "$d" ] && { devs+=("$d"); present=1; }; done
    [ $present = 1 ] || devs+=(/dev/nvidia0)
    [ -e /dev/nvidia-modeset ] && devs+=(/dev/nvidia-modeset)
    for d in "${devs[@]}"; do echo "DeviceAllow=$d rw"; done
  } >"$gpu_tmp"
  write_file "$DROPIN_DIR/gpu.conf" 644 "$gpu_tmp"; rm -f "$gpu_tmp"
elif [ "$gpu" = no ] && [ -f "$DROPIN_DIR/gpu.conf" ]; then
  remove_path "$DROPIN_DIR/gpu.conf"; changed=true
fi

# CA: the agent user cannot read /etc/kiln-agent (0700 root); the file reaches it as a credential
if [ -n "$ca_file" ]; then
  write_file "$ETC/ca.pem" 600 "$ca_file"
  ca_tmp=$(mktemp)
  {
    echo "# written by scripts/install-agent.sh --ca-file: the CA that signed the coordinator's certificate"
    echo "# reaches the agent as the credential 'ca' (kiln agent --ca-file, KILN_CA_FILE); --no-ca removes it."
    echo "[Service]"
    echo "LoadCredential=ca:$ETC/ca.pem"
    echo "Environment=KILN_CA_FILE=%d/ca"
  } >"$ca_tmp"
  write_file "$DROPIN_DIR/ca.conf" 644 "$ca_tmp"; rm -f "$ca_tmp"
elif $no_ca && [ -e "$DROPIN_DIR/ca.conf" ]; then
  remove_path "$DROPIN_DIR/ca.conf" "$ETC/ca.pem"; changed=true
fi

$PROGRAM_REPLACED && RESTART_NOTE="program upgraded; running builds finish first (drain)"
$changed && systemctl is-active --quiet "$UNIT" && [ -z "${RESTART_NOTE:-}" ] && RESTART_NOTE="settings changed; running builds finish first (drain)"
activate "$UNIT"
start_others "$UNIT"
say "done: systemctl status kiln-agent; logs: journalctl -u kiln-agent -f"
