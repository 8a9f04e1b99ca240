#!/usr/bin/env bash
# A throwaway PostgreSQL cluster from Debian's packages, for tests and local runs without Docker.
#
#   postgres.sh ensure                       install PostgreSQL with apt-get if no initdb is found
#   postgres.sh start --port P --dir DIR     create (first time) and start a cluster in DIR
#   postgres.sh stop  --dir DIR              fast shutdown
#   postgres.sh status --dir DIR             exit 0 and print the URL if running
#
# The cluster is tuned for speed, not durability (fsync, synchronous_commit and full_page_writes
# off) and trusts every local connection. `start` creates the role and database `placematch`
# (password `placematch`) and prints, as its last line on stdout:
#   postgresql+asyncpg://placematch:placematch@127.0.0.1:P/placematch
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` system user.
set -euo pipefail

START_TIMEOUT="${POSTGRES_START_TIMEOUT:-60}"

log() { printf 'postgres.sh: %s\n' "$*" >&2 || true; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

find_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; return 0; fi
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

cmd_ensure() {
  if find_bindir >/dev/null; then return 0; fi
  [[ "$(id -u)" == 0 ]] || die "PostgreSQL is not installed and we are not root: run 'apt-get install -y postgresql' as root"
  command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
  log "installing PostgreSQL with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  find_bindir >/dev/null || die "apt-get install postgresql did not provide initdb"
}

# Run a command as the cluster's owner: ourselves, or `postgres` when we are root.
as_owner() {
  if [[ "$(id -u)" == 0 ]]; then
    if command -v runuser >/dev/null; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

ensure_postgres_user() {
  [[ "$(id -u)" == 0 ]] || return 0
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres \
      || die "could not create the postgres system user"
  fi
}

url() { echo "postgresql+asyncpg://placematch:placematch@127.0.0.1:$1/placematch"; }

is_running() {
  [[ -f "$DIR/data/postmaster.pid" ]] || return 1
  as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1
}

cmd_start() {
  BIN="$(find_bindir)" || die "PostgreSQL is not installed: run '$0 ensure' (as root) first"
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  ensure_postgres_user
  if [[ -z "$PORT" && -f "$DIR/port" ]]; then PORT="$(cat "$DIR/port")"; fi
  [[ -n "$PORT" ]] || die "--port is required"

  if is_running; then
    local running; running="$(cat "$DIR/port" 2>/dev/null || true)"
    [[ "$running" == "$PORT" ]] || die "a cluster is already running in $DIR on port $running (asked for $PORT)"
    log "already running on 127.0.0.1:$PORT"
    url "$PORT"
    return 0
  fi

  mkdir -p "$DIR/socket"
  if [[ "$(id -u)" == 0 ]]; then
    chown -R postgres: "$DIR"
    as_owner test -w "$DIR" \
      || die "user postgres cannot write $DIR (a parent directory is not traversable?): use a directory under /tmp"
  fi

  if [[ ! -f "$DIR/data/PG_VERSION" ]]; then
    as_owner "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
      > "$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    as_owner tee -a "$DIR/data/postgresql.conf" >/dev/null <<EOF

# --- placematch test cluster: speed over durability ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR/socket'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
shared_buffers = 64MB
log_min_messages = warning
log_statement = 'none'
EOF
  fi
  echo "$PORT" > "$DIR/port"
  if [[ "$(id -u)" == 0 ]]; then chown postgres: "$DIR/port"; fi

  as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -o "-p $PORT" -w -t "$START_TIMEOUT" start >/dev/null \
    || { tail -n 40 "$DIR/postgres.log" >&2 || true; die "PostgreSQL did not start"; }
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; do
    (( SECONDS < deadline )) || { tail -n 40 "$DIR/postgres.log" >&2; die "PostgreSQL is not accepting connections"; }
    sleep 0.1
  done

  "$BIN/psql" -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres >/dev/null <<'SQL'
SELECT 'CREATE ROLE placematch LOGIN SUPERUSER PASSWORD ''placematch'''
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'placematch')\gexec
SELECT 'CREATE DATABASE placematch OWNER placematch'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'placematch')\gexec
SQL
  log "started on 127.0.0.1:$PORT, data in $DIR/data"
  url "$PORT"
}

cmd_stop() {
  BIN="$(find_bindir)" || die "PostgreSQL is not installed"
  if ! is_running; then log "not running"; return 0; fi
  as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w -t 30 stop >/dev/null \
    || as_owner "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null
  log "stopped"
}

cmd_status() {
  BIN="$(find_bindir)" || die "PostgreSQL is not installed"
  if is_running; then
    echo "running $(url "$(cat "$DIR/port")") dir=$DIR"
  else
    echo "stopped dir=$DIR"
    return 3
  fi
}

[[ $# -ge 1 ]] || usage
COMMAND="$1"; shift
PORT=""
DIR=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#*=}"; shift ;;
    --dir) DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#*=}"; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1" ;;
  esac
done
case "$COMMAND" in
  ensure) cmd_ensure ;;
  start|stop|status) [[ -n "$DIR" ]] || die "--dir is required"; "cmd_$COMMAND" ;;
  *) usage ;;
esac
