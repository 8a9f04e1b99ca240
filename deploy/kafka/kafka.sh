#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft) assembled from Maven Central, for tests and local runs
# where no Docker engine is available.
#
#   kafka.sh fetch                                 download the broker jars into libs/ (cached)
#   kafka.sh start  [--port P] [--controller-port C] [--dir DIR]
#                                                  start in the background, wait until ready
#   kafka.sh stop   [--dir DIR]                    SIGTERM, wait, SIGKILL after 30 s
#   kafka.sh kill   [--dir DIR]                    SIGKILL now (simulates a crash)
#   kafka.sh restart [--dir DIR]                   stop, then start on the same ports and data
#   kafka.sh status [--dir DIR]                    exit 0 and print the address if running
#   kafka.sh free-ports N                          N distinct free local ports, on one line
#
# DIR defaults to $PLACEMATCH_TEST_KAFKA_DIR, else <repo>/.cache/kafka. Starting on a DIR that
# already holds a broker's data reuses the data, the cluster id and (unless --port is given) the
# ports, so a test can kill or stop the broker and bring the same one back.
# On success `start` prints the bootstrap address (127.0.0.1:P) as its last line on stdout.
set -euo pipefail

KAFKA_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$KAFKA_HOME/../.." && pwd)"
LIBS="$KAFKA_HOME/libs"
FETCH_STAMP="$LIBS/.complete"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA:-java}"
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; fi

log() { printf 'kafka.sh: %s\n' "$*" >&2 || true; }
die() { log "$*"; exit 1; }

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# --- fetch -------------------------------------------------------------------------------------

pom_digest() { sha256sum "$KAFKA_HOME/pom.xml" | cut -d' ' -f1; }

libs_complete() {
  [[ -f "$FETCH_STAMP" ]] || return 1
  [[ "$(head -n1 "$FETCH_STAMP")" == "$(pom_digest)" ]] || return 1
  local jar
  while IFS= read -r jar; do
    [[ -s "$LIBS/$jar" ]] || return 1
  done < <(tail -n +2 "$FETCH_STAMP")
}

cmd_fetch() {
  if libs_complete; then return 0; fi
  # Test runs started side by side must not download into (or delete) the same libs/ at once.
  if command -v flock >/dev/null; then
    local lock
    lock="${TMPDIR:-/tmp}/placematch-kafka-fetch-$(printf '%s' "$KAFKA_HOME" | sha256sum | cut -c1-12).lock"
    exec 9> "$lock"
    flock 9
    if libs_complete; then exec 9>&-; return 0; fi
  fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install -y maven)"
  log "fetching the Kafka broker from Maven Central into $LIBS"
  rm -rf "$LIBS"
  mkdir -p "$LIBS"
  local mvn_log; mvn_log="$(mktemp)"
  if ! (cd "$KAFKA_HOME" && mvn -B -q -Dstyle.color=never package) > "$mvn_log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" | tail -n 40 >&2
    rm -f "$mvn_log"
    die "mvn package failed"
  fi
  rm -f "$mvn_log"
  # Globs, not `ls | grep -q`: under pipefail grep's early exit can fail the pipeline by SIGPIPE.
  compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null || die "mvn ran but no kafka_2.13 jar is in $LIBS"
  compgen -G "$LIBS/slf4j-reload4j-*.jar" >/dev/null || die "no slf4j binding in $LIBS (broker logs would be silent)"
  { pom_digest; (cd "$LIBS" && ls -1 -- *.jar); } > "$FETCH_STAMP.tmp"
  mv "$FETCH_STAMP.tmp" "$FETCH_STAMP"
  rm -rf "$KAFKA_HOME/target"
  exec 9>&- 2>/dev/null || true
}

# --- helpers -----------------------------------------------------------------------------------

# A port below the kernel's ephemeral range that no socket (listening or connected) uses.
# Pure bash on purpose: a python3 found through pyenv shims costs a second on a busy machine.
free_port() {
  local low=20000 high=32767 eph p hex _
  if read -r eph _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && (( eph - 1 > low + 1000 )); then
    high=$((eph - 1))
  fi
  for _ in $(seq 1 200); do
    p=$((low + (RANDOM * 32768 + RANDOM) % (high - low + 1)))
    hex="$(printf ':%04X ' "$p")"
    if grep -qsi -- "$hex" /proc/net/tcp /proc/net/tcp6; then continue; fi
    if port_open "$p"; then continue; fi
    echo "$p"
    return 0
  done
  die "no free port found"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

read_pid() { [[ -f "$DIR/kafka.pid" ]] && cat "$DIR/kafka.pid" || true; }

# True while the process exists and is not a zombie (an orphaned broker in a container without an
# init process may linger as one after exiting).
alive() {
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

is_running() {
  local pid; pid="$(read_pid)"
  [[ -n "$pid" ]] && alive "$pid"
}

prop() { [[ -f "$DIR/ports" ]] && sed -n "s/^$1=//p" "$DIR/ports" | tail -n1 || true; }

log_tail() {
  local n="${1:-60}"
  if [[ -f "$DIR/logs/server.log" ]]; then
    log "last $n lines of $DIR/logs/server.log:"
    tail -n "$n" "$DIR/logs/server.log" >&2
  fi
}

new_cluster_id() {
  # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding (22 characters).
  head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

# --- start / stop ------------------------------------------------------------------------------

cmd_start() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  if is_running; then
    local running_port; running_port="$(prop broker)"
    if [[ -z "$PORT" || "$PORT" == "$running_port" ]]; then
      log "already running (pid $(read_pid)) on 127.0.0.1:$running_port"
      echo "127.0.0.1:$running_port"
      return 0
    fi
    die "a broker is already running in $DIR on port $running_port (asked for $PORT): stop it first"
  fi
  cmd_fetch

  PORT="${PORT:-$(prop broker)}"
  PORT="${PORT:-$(free_port)}"
  CONTROLLER_PORT="${CONTROLLER_PORT:-$(prop controller)}"
  if [[ -z "$CONTROLLER_PORT" || "$CONTROLLER_PORT" == "$PORT" ]] || port_open "$CONTROLLER_PORT"; then
    CONTROLLER_PORT="$(free_port)"
    while [[ "$CONTROLLER_PORT" == "$PORT" ]]; do CONTROLLER_PORT="$(free_port)"; done
  fi
  if port_open "$PORT"; then die "port $PORT is already in use"; fi
  printf 'broker=%s\ncontroller=%s\n' "$PORT" "$CONTROLLER_PORT" > "$DIR/ports"

  mkdir -p "$DIR/data" "$DIR/logs"
  sed -e "s|@BROKER_PORT@|$PORT|g" \
      -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
      -e "s|@DATA_DIR@|$DIR/data|g" \
      "$KAFKA_HOME/server.properties.template" > "$DIR/server.properties"
  [[ -f "$DIR/log4j.properties" ]] || cp "$KAFKA_HOME/log4j.properties" "$DIR/log4j.properties"

  local -a jvm=(
    -Xms256m -Xmx512m
    -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto -XX:-UsePerfData
    -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dkafka.logs.dir="$DIR/logs"
    -Dlog4j.configuration="file:$DIR/log4j.properties"
    -cp "$LIBS/*"
  )
  if [[ -n "${KAFKA_JVM_OPTS:-}" ]]; then read -r -a extra <<< "$KAFKA_JVM_OPTS"; jvm+=("${extra[@]}"); fi

  if [[ ! -f "$DIR/data/meta.properties" ]]; then
    [[ -f "$DIR/cluster.id" ]] || new_cluster_id > "$DIR/cluster.id"
    "$JAVA" "${jvm[@]}" kafka.tools.StorageTool format -g \
        -t "$(cat "$DIR/cluster.id")" -c "$DIR/server.properties" > "$DIR/logs/format.log" 2>&1 \
      || { cat "$DIR/logs/format.log" >&2; die "formatting $DIR/data failed"; }
  fi

  if [[ -f "$DIR/logs/server.log" ]]; then mv -f "$DIR/logs/server.log" "$DIR/logs/server.log.1"; fi
  # setsid: the broker must outlive a Ctrl-C aimed at the test run, so cleanup can stop it properly.
  setsid "$JAVA" "${jvm[@]}" kafka.Kafka "$DIR/server.properties" \
      > "$DIR/logs/server.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$DIR/kafka.pid"

  local deadline=$((SECONDS + START_TIMEOUT))
  until port_open "$PORT" && grep -q 'Kafka Server started' "$DIR/logs/server.log"; do
    if ! alive "$pid"; then
      log_tail 80
      rm -f "$DIR/kafka.pid"
      die "the broker exited during startup"
    fi
    if (( SECONDS >= deadline )); then
      log_tail 80
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$DIR/kafka.pid"
      die "the broker did not start within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  log "started (pid $pid) on 127.0.0.1:$PORT, data in $DIR/data"
  echo "127.0.0.1:$PORT"
}

cmd_stop() {
  local signal="${1:-TERM}"
  local pid; pid="$(read_pid)"
  if [[ -z "$pid" ]] || ! alive "$pid"; then
    rm -f "$DIR/kafka.pid"
    log "not running"
    return 0
  fi
  kill "-$signal" "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid"; do
    if (( SECONDS >= deadline )); then
      log "still running after ${STOP_TIMEOUT}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
  done
  rm -f "$DIR/kafka.pid"
  log "stopped (pid $pid, SIG$signal)"
}

cmd_status() {
  if is_running; then
    echo "running pid=$(read_pid) bootstrap=127.0.0.1:$(prop broker) dir=$DIR"
  else
    echo "stopped dir=$DIR"
    return 3
  fi
}

# --- main --------------------------------------------------------------------------------------

[[ $# -ge 1 ]] || usage
COMMAND="$1"; shift
if [[ "$COMMAND" == free-ports ]]; then N_PORTS="${1:-1}"; set --; fi
PORT=""
CONTROLLER_PORT=""
DIR="${PLACEMATCH_TEST_KAFKA_DIR:-$REPO_ROOT/.cache/kafka}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --port=*) PORT="${1#*=}"; shift ;;
    --controller-port) CONTROLLER_PORT="$2"; shift 2 ;;
    --controller-port=*) CONTROLLER_PORT="${1#*=}"; shift ;;
    --dir) DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#*=}"; shift ;;
    -h|--help) usage ;;
    *) die "unknown argument: $1" ;;
  esac
done

case "$COMMAND" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop TERM ;;
  kill) cmd_stop KILL ;;
  restart) cmd_stop TERM; cmd_start ;;
  status) cmd_status ;;
  free-ports)  # free-ports N: N distinct free ports on one line (used by deploy/test-env.sh)
    declare -A seen=()
    ports=()
    while (( ${#ports[@]} < ${N_PORTS:-1} )); do
      p="$(free_port)"
      [[ -n "${seen[$p]:-}" ]] && continue
      seen[$p]=1
      ports+=("$p")
    done
    echo "${ports[*]}" ;;
  *) usage ;;
esac
