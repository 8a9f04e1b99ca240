#!/usr/bin/env bash
# Keycloak, a real OpenID Connect provider, from Maven Central (org.keycloak:keycloak-quarkus-dist),
# for tests and local runs of council sign-on (issue 17). Dev mode, in-memory H2, plain HTTP on
# 127.0.0.1: never a production set-up.
#
#   keycloak.sh fetch                         download and unpack the distribution into dist/ (cached)
#   keycloak.sh start [--port P] [--dir DIR] [--realm FILE|none]
#                                             start in the background, wait until ready, import the
#                                             realm (default realm.json beside this script)
#   keycloak.sh stop  [--dir DIR]             SIGTERM, wait, SIGKILL after 30 s
#   keycloak.sh status [--dir DIR]            exit 0 and print the address if running
#
# DIR (pid, port, log) defaults to $PLACEMATCH_TEST_KEYCLOAK_DIR, else <repo>/.cache/keycloak.
# The admin user of the master realm is admin / $KEYCLOAK_ADMIN_PASSWORD (default admin).
# On success `start` prints the base URL (http://127.0.0.1:P) as its last line on stdout; the realm's
# issuer is <base>/realms/placematch.
set -euo pipefail

KC_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KC_HOME/../.." && pwd)"
VERSION="${KEYCLOAK_VERSION:-26.4.7}"
DIST="$KC_HOME/dist"
SERVER="$DIST/keycloak-$VERSION"
START_TIMEOUT="${KEYCLOAK_START_TIMEOUT:-300}"
STOP_TIMEOUT="${KEYCLOAK_STOP_TIMEOUT:-30}"
ADMIN_PASSWORD="${KEYCLOAK_ADMIN_PASSWORD:-admin}"

log() { printf 'keycloak.sh: %s\n' "$*" >&2 || true; }
die() { log "$*"; exit 1; }
usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --- fetch -------------------------------------------------------------------------------------

fetched() { [[ -f "$SERVER/.complete" && -x "$SERVER/bin/kc.sh" ]]; }

cmd_fetch() {
  if fetched; then return 0; fi
  if command -v flock >/dev/null; then  # runs started side by side must not unpack into one dir at once
    local lock
    lock="${TMPDIR:-/tmp}/placematch-keycloak-fetch-$(printf '%s' "$DIST" | sha256sum | cut -c1-12).lock"
    exec 9> "$lock"
    flock 9
    if fetched; then exec 9>&-; return 0; fi
  fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven)"
  log "fetching Keycloak $VERSION from Maven Central into $DIST"
  mkdir -p "$DIST"
  local tmp; tmp="$(mktemp -d "$DIST/.fetch.XXXXXX")"
  if ! mvn -B -q -Dstyle.color=never dependency:copy \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:$VERSION:tar.gz" -DoutputDirectory="$tmp" > "$tmp/mvn.log" 2>&1; then
    tail -n 40 "$tmp/mvn.log" >&2
    rm -rf "$tmp"
    die "mvn dependency:copy failed"
  fi
  rm -rf "$SERVER"
  tar -xzf "$tmp/keycloak-quarkus-dist-$VERSION.tar.gz" -C "$DIST"
  rm -rf "$tmp"
  [[ -x "$SERVER/bin/kc.sh" ]] || die "no bin/kc.sh in $SERVER after unpacking"
  date -u +%FT%TZ > "$SERVER/.complete"
  exec 9>&- 2>/dev/null || true
}

# --- helpers -----------------------------------------------------------------------------------

free_port() {
  "$REPO_ROOT/deploy/kafka/kafka.sh" free-ports 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
read_pid() { [[ -f "$DIR/keycloak.pid" ]] && cat "$DIR/keycloak.pid" || true; }
alive() {
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}
is_running() { local pid; pid="$(read_pid)"; [[ -n "$pid" ]] && alive "$pid"; }
log_tail() { [[ -f "$DIR/keycloak.log" ]] && { log "last ${1:-60} lines of $DIR/keycloak.log:"; tail -n "${1:-60}" "$DIR/keycloak.log" >&2; }; }

ready() {
  curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$1/realms/master/.well-known/openid-configuration"
}

import_realm() {
  local base="$1" file="$2" token
  token="$(curl -sf --max-time 30 -d grant_type=password -d client_id=admin-cli -d username=admin \
      --data-urlencode "password=$ADMIN_PASSWORD" "$base/realms/master/protocol/openid-connect/token" \
      | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')" || die "no admin token from $base"
  [[ -n "$token" ]] || die "no admin token from $base"
  local name; name="$(sed -n 's/^  "realm": "\([^"]*\)".*/\1/p' "$file" | head -n1)"
  local code
  code="$(curl -s -o "$DIR/import.out" -w '%{http_code}' --max-time 120 -H "Authorization: Bearer $token" \
      -H 'Content-Type: application/json' --data-binary "@$file" "$base/admin/realms")"
  case "$code" in
    201) log "imported realm ${name:-?} from $file" ;;
    409) log "realm ${name:-?} already there" ;;
    *) cat "$DIR/import.out" >&2; die "importing $file answered HTTP $code" ;;
  esac
}

# --- start / stop ------------------------------------------------------------------------------

cmd_start() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  command -v curl >/dev/null || die "curl not found (apt-get install -y curl)"
  if is_running; then
    local running; running="$(cat "$DIR/port")"
    log "already running (pid $(read_pid)) on 127.0.0.1:$running"
    echo "http://127.0.0.1:$running"
    return 0
  fi
  cmd_fetch
  PORT="${PORT:-$(free_port)}"
  if port_open "$PORT"; then die "port $PORT is already in use"; fi
  echo "$PORT" > "$DIR/port"
  if [[ -f "$DIR/keycloak.log" ]]; then mv -f "$DIR/keycloak.log" "$DIR/keycloak.log.1"; fi
  local started=$SECONDS
  # setsid: outlives a Ctrl-C aimed at the test run, so cleanup can stop it properly.
  KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  JAVA_OPTS_KC_HEAP="${KEYCLOAK_HEAP_OPTS:--Xms128m -Xmx768m}" \
  JAVA_OPTS_APPEND="${KEYCLOAK_JAVA_OPTS:--XX:TieredStopAtLevel=1}" \
    setsid "$SERVER/bin/kc.sh" start-dev --http-host=127.0.0.1 --http-port="$PORT" --db=dev-mem \
      --health-enabled=false --metrics-enabled=false \
      > "$DIR/keycloak.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$DIR/keycloak.pid"
  local deadline=$((SECONDS + START_TIMEOUT))
  until ready "$PORT"; do
    if ! alive "$pid"; then log_tail 80; rm -f "$DIR/keycloak.pid"; die "Keycloak exited during startup"; fi
    if (( SECONDS >= deadline )); then
      log_tail 80
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      rm -f "$DIR/keycloak.pid"
      die "Keycloak did not start within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  log "started (pid $pid) on 127.0.0.1:$PORT in $((SECONDS - started))s"
  if [[ "$REALM" != none ]]; then import_realm "http://127.0.0.1:$PORT" "$REALM"; fi
  echo "http://127.0.0.1:$PORT"
}

cmd_stop() {
  local pid; pid="$(read_pid)"
  if [[ -z "$pid" ]] || ! alive "$pid"; then rm -f "$DIR/keycloak.pid"; log "not running"; return 0; fi
  # kc.sh execs java in the process group that setsid made: signal the group
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid"; do
    if (( SECONDS >= deadline )); then
      log "still running after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$DIR/keycloak.pid"
  log "stopped (pid $pid)"
}

cmd_status() {
  if is_running; then echo "running pid=$(read_pid) url=http://127.0.0.1:$(cat "$DIR/port") dir=$DIR"
  else echo "stopped dir=$DIR"; return 3; fi
}

# --- main --------------------------------------------------------------------------------------

[[ $# -ge 1 ]] || usage
COMMAND="$1"; shift
PORT=""
REALM="$KC_HOME/realm.json"
DIR="${PLACEMATCH_TEST_KEYCLOAK_DIR:-$REPO_ROOT/.cache/keycloak}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#*=}"; shift ;;
    --dir) DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#*=}"; shift ;;
    --realm) REALM="$2"; shift 2 ;;
    --realm=*) REALM="${1#*=}"; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1" ;;
  esac
done

case "$COMMAND" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
