# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this
# Shared helpers for scripts/up, down, demo and test; sourced, never run.
#
# Environment (all optional):
#   RIDESAGA_RUN_DIR       where a running system keeps pids, logs, data and env (default .run)
#   RIDESAGA_NATS_PORT     client port (default 4222); with up --cluster, node n0's (n1 and n2
#                          take the next two) or three comma-separated ports
#   RIDESAGA_MONITOR_PORT  HTTP monitoring port (default 8222); the same for a cluster
#   RIDESAGA_CLUSTER_PORT  with up --cluster, n0's route port (default 6222; n1, n2 the next
#                          two) or three comma-separated ports
#   RIDESAGA_PROFILE       cargo profile of the binaries to run: debug (default) or release
#   RIDESAGA_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 10)
#   RIDESAGA_DB            the workers' databases: sqlite (default) or postgres
#   RIDESAGA_PG_PORT       port of the local PostgreSQL cluster (default: a free one)
#   RIDESAGA_PG_BIN        PostgreSQL's programs (default: pg_config --bindir, else the newest
#                          /usr/lib/postgresql/*/bin)
#   CARGO_TARGET_DIR       honoured when looking for binaries
#   RIDESAGA_WORKER_BIN_DIR  where the *-worker binaries are taken from (default: the profile's
#                          directory); scripts/upgrade points it at another revision's

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NATS_BIN="${NATS_SERVER_BIN:-$ROOT/.tools/bin/nats-server}"
NATS_PORT="${RIDESAGA_NATS_PORT:-4222}"
MONITOR_PORT="${RIDESAGA_MONITOR_PORT:-8222}"
CLUSTER_PORT="${RIDESAGA_CLUSTER_PORT:-6222}"
PROFILE="${RIDESAGA_PROFILE:-debug}"
STOP_TIMEOUT="${RIDESAGA_STOP_TIMEOUT:-10}"

case "$PROFILE" in
  debug|release) ;;
  *) printf 'RIDESAGA_PROFILE must be debug or release, not %q\n' "$PROFILE" >&2; exit 2 ;;
esac

# The run directory, absolute and normalised: processes are recognised by it.
RUN_DIR="$(realpath -m -- "${RIDESAGA_RUN_DIR:-$ROOT/.run}")"
PID_DIR="$RUN_DIR/pids"
LOG_DIR="$RUN_DIR/logs"
DATA_DIR="$RUN_DIR/data"
STORE_DIR="$RUN_DIR/nats"
NATS_LOG="$RUN_DIR/nats.log"
ENV_FILE="$RUN_DIR/env"
# This installation's NATS identities (`ridectl auth init`): a seed per identity, <name>.nk
# (mode 0600), and auth.conf, the accounts, public keys and permissions the server includes.
AUTH_DIR="$RUN_DIR/auth"
# With up --tls: the local CA's certificate (ca.pem, what clients verify the server with) and
# the server's certificate and key, for 127.0.0.1 and localhost.
TLS_DIR="$RUN_DIR/tls"
# The server's configuration as up writes it: the repository's nats.conf (or
# nats-cluster.conf), the identities and, with --tls, the server's certificate.
NATS_CONF_FILE="$RUN_DIR/nats-server.conf"
# The nodes of `scripts/up --cluster`: n0, n1, n2. Each one's pid file is nats-<node>.pid, its
# store $STORE_DIR/<node>, its log $RUN_DIR/nats-<node>.log; $CLUSTER_PORTS_FILE has their ports,
# a line per node: client, monitoring, route.
CLUSTER_NODES=(n0 n1 n2)
CLUSTER_PORTS_FILE="$RUN_DIR/cluster-ports"
# The local PostgreSQL cluster of `scripts/up --db postgres`: its data directory (owned by the
# postgres system user when run as root), its log, the port it last ran on, and the password
# of its superuser in libpq's password-file format (mode 0600; never printed, never in env).
PG_DIR="$RUN_DIR/postgres"
PG_LOG="$RUN_DIR/postgres.log"
PG_PORT_FILE="$RUN_DIR/postgres.port"
PG_PASSFILE="$RUN_DIR/pgpass"
PG_USER=ridesaga

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$TARGET_DIR" = /* ]] || TARGET_DIR="$ROOT/$TARGET_DIR"
BIN_DIR="$TARGET_DIR/$PROFILE"
RIDECTL="$BIN_DIR/ridectl"
WORKER_BIN_DIR="${RIDESAGA_WORKER_BIN_DIR:-$BIN_DIR}"

SCRIPT_NAME="$(basename "$0")"
log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# Prints the comment block after the shebang (the usage text) and exits.
usage() {
  sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"
  exit "${1:-0}"
}

# is_alive PID: the process exists and is not a zombie.
is_alive() {
  local pid="$1" state
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ "$state" != Z && -n "$state" ]]
  fi
}

# is_zombie PID: the process has exited but has not been reaped yet.
is_zombie() {
  [[ -r "/proc/$1/stat" ]] || return 1
  [[ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" == Z ]]
}

# is_ours PID [EXE_NAME]: alive, started by scripts/up for this run directory (its environment
# holds our RIDESAGA_RUN_DIR) and, when EXE_NAME is given, running a binary of that name. Guards
# against recycled pids and against another run directory's processes (scripts/test runs a
# second system beside the one you may have up).
is_ours() {
  local pid="$1" name="${2:-}" exe
  is_alive "$pid" || return 1
  [[ -d "/proc/$pid" ]] || return 0 # no procfs: trust the pid file
  local environ
  environ="$({ tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null)" || return 1
  grep -qxF "RIDESAGA_RUN_DIR=$RUN_DIR" <<<"$environ" || return 1
  [[ -z "$name" ]] && return 0
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  exe="${exe% (deleted)}" # a rebuilt binary shows up as deleted
  [[ "$(basename "$exe")" == "$name" ]]
}

# pid_from FILE: the pid recorded in FILE, or nothing.
pid_from() {
  [[ -f "$1" ]] && tr -dc '0-9' <"$1"
}

# running NAME [EXE_NAME]: the pid of our process recorded as NAME, if it is running; a stale
# pid file is removed.
running() {
  local file="$PID_DIR/$1.pid" pid
  pid="$(pid_from "$file")" || return 1
  if [[ -n "$pid" ]] && is_ours "$pid" "${2:-}"; then
    printf '%s\n' "$pid"
    return 0
  fi
  rm -f "$file"
  return 1
}

# worker_exe NAME: the binary a worker recorded as NAME runs: NAME without the `-<n>` of a
# replica after the first (payment-worker-2 runs payment-worker).
worker_exe() {
  printf '%s\n' "${1%-[0-9]*}"
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# http_get PORT PATH: the body of an HTTP GET on 127.0.0.1:PORT (curl if present, else bash).
http_get() {
  local port="$1" path="$2"
  if command -v curl >/dev/null; then
    curl -fsS --max-time 5 "http://127.0.0.1:$port$path"
    return
  fi
  local response
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
  response="$(timeout 5 cat <&3)" || { exec 3<&-; return 1; }
  exec 3<&-
  [[ "$response" == "HTTP/1."?" 200"* ]] || return 1
  printf '%s\n' "${response#*$'\r\n\r\n'}"
}

# nats_healthy: the monitoring port reports the server (and JetStream) healthy.
nats_healthy() {
  http_get "$MONITOR_PORT" /healthz >/dev/null 2>&1
}

# is_nats_pid_name NAME: NAME is the pid file name of nats-server or of a cluster's node.
is_nats_pid_name() {
  [[ "$1" == nats-server || "$1" == nats-n[0-9] ]]
}

# node_ports VALUE: the three nodes' ports from VALUE, one a line: VALUE itself and the next two,
# or VALUE's three comma-separated ports. Fails on anything else.
node_ports() {
  if [[ "$1" =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$1" "$(($1 + 1))" "$(($1 + 2))"
  elif [[ "$1" =~ ^[0-9]+,[0-9]+,[0-9]+$ ]]; then
    tr ',' '\n' <<<"$1"
  else
    return 1
  fi
}

# meta_leader PORT: the JetStream meta leader that the node with monitoring port PORT reports
# (its /jsz), or nothing while there is none.
meta_leader() {
  http_get "$1" /jsz 2>/dev/null | python3 -c '
import json, sys
try:
    print(json.load(sys.stdin).get("meta_cluster", {}).get("leader") or "")
except ValueError:
    pass
'
}

# tail_log FILE: the last lines of a log, indented, for error messages.
tail_log() {
  [[ -f "$1" ]] || { printf '    (no log at %s)\n' "$1"; return; }
  tail -n "${2:-20}" "$1" | sed 's/^/    /'
}

# worker_binaries: every built `*-worker` binary of the workers package, one path a line.
# The names come from `cargo metadata` (the package's bin targets), so nothing is hard-coded;
# if cargo metadata cannot answer, every `*-worker` executable in the profile directory is taken.
worker_binaries() {
  local metadata names name path
  if metadata="$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 --offline 2>/dev/null)" &&
    names="$(python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["name"] == "ridesaga-workers":
        for target in package["targets"]:
            if "bin" in target["kind"] and target["name"].endswith("-worker"):
                print(target["name"])
' <<<"$metadata")"; then
    while read -r name; do
      [[ -n "$name" && -x "$WORKER_BIN_DIR/$name" ]] && printf '%s\n' "$WORKER_BIN_DIR/$name"
    done <<<"$names"
  else
    for path in "$WORKER_BIN_DIR"/*-worker; do
      [[ -f "$path" && -x "$path" ]] && printf '%s\n' "$path"
    done
  fi
  return 0
}

# ridectl_has COMMAND: ridectl is built and lists COMMAND in its help.
ridectl_has() {
  [[ -x "$RIDECTL" ]] || return 1
  local help
  help="$("$RIDECTL" --help 2>/dev/null)" || return 1
  grep -qE "^ +$1( |$)" <<<"$help"
}

# free_ports N: N distinct free loopback ports, one a line. They lie below the kernel's
# ephemeral range, where no outgoing connection takes them, so a server stopped on purpose
# (scripts/chaos) finds its port free when it restarts.
free_ports() {
  python3 -c '
import random, socket, sys
n = int(sys.argv[1])
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral = 0
held = []
candidates = list(range(10000, ephemeral))
random.shuffle(candidates)
for port in candidates if len(candidates) >= 1000 else []:
    if len(held) == n:
        break
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        held.append(s)
    except OSError:
        s.close()
while len(held) < n:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
for s in held:
    print(s.getsockname()[1])
' "$1"
}

# --- identities and TLS ----------------------------------------------------------------------

# tls_init: a local CA and a server certificate for 127.0.0.1 and localhost signed by it, in
# $TLS_DIR (kept once made): ca.pem, server.pem and server-key.pem (mode 0600). The CA's key is
# deleted once it has signed, so nothing else can be signed with it.
tls_init() {
  [[ -s "$TLS_DIR/ca.pem" && -s "$TLS_DIR/server.pem" && -s "$TLS_DIR/server-key.pem" ]] &&
    return 0
  command -v openssl >/dev/null || die "--tls needs openssl (apt-get install openssl)"
  log "creating a local CA and the server's certificate in $TLS_DIR"
  rm -rf "$TLS_DIR"
  (umask 077 && mkdir -p "$TLS_DIR") || die "could not create $TLS_DIR"
  (
    umask 077
    cd "$TLS_DIR" &&
      printf '%s\n' 'subjectAltName=IP:127.0.0.1,DNS:localhost' 'extendedKeyUsage=serverAuth' \
        'keyUsage=digitalSignature,keyEncipherment' >server.ext &&
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
        -subj '/CN=Ridesaga local CA' -keyout ca-key.pem -out ca.pem &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj '/CN=127.0.0.1' \
        -keyout server-key.pem -out server.csr &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
        -extfile server.ext -out server.pem &&
      rm -f ca-key.pem ca.srl server.csr server.ext
  ) >"$RUN_DIR/openssl.log" 2>&1 || die "openssl failed; last lines of its output:
$(tail_log "$RUN_DIR/openssl.log")"
  rm -f "$RUN_DIR/openssl.log"
}

# write_nats_conf CONF TLS: writes $NATS_CONF_FILE: the repository's CONF (nats.conf or
# nats-cluster.conf; an include names a path relative to the including file, so it is written
# relative to the run directory), the identities' auth.conf and, when TLS is 1, a tls block:
# every client must speak TLS (routes between nodes stay plain, on loopback).
write_nats_conf() {
  local repo_conf="$1" with_tls="$2" relative
  relative="$(realpath -m --relative-to="$RUN_DIR" "$ROOT/$repo_conf")" ||
    die "could not locate $ROOT/$repo_conf from $RUN_DIR"
  [[ "$RUN_DIR" != *[\"\\]* ]] || die "the run directory's path may not hold quotes or backslashes"
  {
    printf '# Written by scripts/up: %s with this installation'"'"'s identities' "$repo_conf"
    ((with_tls)) && printf ' and TLS'
    printf '.\ninclude "%s"\ninclude "auth/auth.conf"\n' "$relative"
    if ((with_tls)); then
      printf 'tls {\n  cert_file: "%s"\n  key_file: "%s"\n  timeout: 2\n}\n' \
        "$TLS_DIR/server.pem" "$TLS_DIR/server-key.pem"
    fi
  } >"$NATS_CONF_FILE.new" || die "could not write $NATS_CONF_FILE.new"
  mv -f "$NATS_CONF_FILE.new" "$NATS_CONF_FILE" || die "could not write $NATS_CONF_FILE"
}

# conf_has_tls: the server configuration up last wrote requires TLS.
conf_has_tls() {
  [[ -f "$NATS_CONF_FILE" ]] && grep -q '^tls {' "$NATS_CONF_FILE"
}

# --- PostgreSQL ------------------------------------------------------------------------------

# pg_bin_dir: PostgreSQL's program directory, as the test harness finds it: RIDESAGA_PG_BIN,
# else `pg_config --bindir`, else the newest /usr/lib/postgresql/<version>/bin (Debian's layout).
pg_bin_dir() {
  local dir versions candidates=("${RIDESAGA_PG_BIN:-}")
  candidates+=("$(pg_config --bindir 2>/dev/null || true)")
  mapfile -t versions < <(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -name '[0-9]*' \
    -printf '%f\n' 2>/dev/null | sort -rn)
  for dir in "${versions[@]}"; do
    candidates+=("/usr/lib/postgresql/$dir/bin")
  done
  for dir in "${candidates[@]}"; do
    if [[ -n "$dir" && -x "$dir/postgres" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
  return 1
}

# pg_owner_setup: sets PG_BIN (or fails), PG_OWNER and PG_AS, the prefix that runs a server
# program (initdb, pg_ctl) as the cluster's owner. PostgreSQL refuses to run as root, so as root
# the owner is the one of $PG_DIR, or the postgres system user (Debian's package creates it)
# for a cluster not created yet, and PG_AS switches to it with setpriv; for anyone else the
# owner is themselves and PG_AS is empty.
pg_owner_setup() {
  PG_BIN="$(pg_bin_dir)" || return 1
  PG_OWNER="$(id -un)"
  PG_AS=()
  [[ "$(id -u)" == 0 ]] || return 0
  PG_OWNER=postgres
  [[ -d "$PG_DIR" ]] && PG_OWNER="$(stat -c %U "$PG_DIR")"
  [[ "$PG_OWNER" == root ]] && PG_OWNER=postgres
  id -u "$PG_OWNER" >/dev/null 2>&1 ||
    die "no $PG_OWNER system user to run PostgreSQL as (it refuses root); scripts/setup installs Debian's postgresql, which creates it"
  command -v setpriv >/dev/null || die "setpriv (util-linux) is missing: it runs PostgreSQL as $PG_OWNER"
  PG_AS=(setpriv "--reuid=$PG_OWNER" "--regid=$(id -g "$PG_OWNER")" --init-groups)
}

# pg_server PROGRAM ARGS...: runs one of PostgreSQL's server programs as the cluster's owner,
# from / (the owner may not be allowed into the current directory). Needs pg_owner_setup.
pg_server() {
  local program="$1"
  shift
  (cd / && exec "${PG_AS[@]}" "$PG_BIN/$program" "$@")
}

# pg_running: the cluster in $PG_DIR is running (pg_ctl status). Needs pg_owner_setup.
pg_running() {
  [[ -f "$PG_DIR/PG_VERSION" ]] && pg_server pg_ctl status -D "$PG_DIR" >/dev/null 2>&1
}

# pg_pid_field N: line N of the running cluster's postmaster.pid (1 pid, 4 port).
pg_pid_field() {
  [[ -f "$PG_DIR/postmaster.pid" ]] && sed -n "${1}p" "$PG_DIR/postmaster.pid" | tr -dc '0-9'
}

# pg_password: the superuser's password, from $PG_PASSFILE (host:port:database:user:password).
pg_password() {
  [[ -s "$PG_PASSFILE" ]] && cut -d: -f5- "$PG_PASSFILE"
}

# pg_client PROGRAM ARGS...: runs a client program (psql, createdb) against the cluster as
# $PG_USER on 127.0.0.1:$PG_PORT, with the password from $PG_PASSFILE.
pg_client() {
  local program="$1"
  shift
  PGPASSFILE="$PG_PASSFILE" "$PG_BIN/$program" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -w "$@"
}
