#!/usr/bin/env bash
# Run a command with a real Kafka broker and a real PostgreSQL available, e.g.
#   deploy/test-env.sh .venv/bin/pytest -q tests/
#
# Unless PLACEMATCH_TEST_KAFKA is already set, starts a Kafka broker (deploy/kafka/kafka.sh) on a
# free port; unless PLACEMATCH_TEST_DATABASE_URL is already set, starts PostgreSQL
# (deploy/postgres.sh) on a free port. Both start in parallel, in a temporary directory that is
# removed afterwards along with whatever this script started. The command's exit code is returned.
#
# Exported for the command:
#   PLACEMATCH_TEST_KAFKA          bootstrap address, 127.0.0.1:PORT
#   PLACEMATCH_TEST_KAFKA_PORT     its port
#   PLACEMATCH_TEST_KAFKA_CTL      absolute path of deploy/kafka/kafka.sh   } only when this script
#   PLACEMATCH_TEST_KAFKA_DIR      the broker's run directory               } started the broker:
#   PLACEMATCH_KAFKA_HOME          absolute path of deploy/kafka            } "$CTL" kill|stop|start
#                                                                             --dir "$DIR" restarts it
#   PLACEMATCH_TEST_DATABASE_URL   postgresql+asyncpg://placematch:placematch@127.0.0.1:PORT/placematch
#   PLACEMATCH_TEST_POSTGRES_DIR   the cluster's directory (only when this script started it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_CTL="$ROOT/deploy/kafka/kafka.sh"
POSTGRES_CTL="$ROOT/deploy/postgres.sh"

[[ $# -ge 1 ]] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

log() { printf 'test-env: %s\n' "$*" >&2 || true; }

# /tmp rather than $TMPDIR: when we are root, PostgreSQL runs as `postgres` and must reach the dir.
WORK="$(mktemp -d "${PLACEMATCH_TEST_ENV_TMP:-/tmp}/placematch-test-env.XXXXXX")"
chmod 755 "$WORK"
KAFKA_DIR=""
POSTGRES_DIR=""
kafka_job=""
postgres_job=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Stop what we started even if whoever read our output is gone (no death by SIGPIPE).
  trap '' PIPE
  # A start still running (interrupted during startup) finishes first, so that stop finds it.
  for job in $kafka_job $postgres_job; do wait "$job" 2>/dev/null || true; done
  if [[ -n "$KAFKA_DIR" ]]; then "$KAFKA_CTL" stop --dir "$KAFKA_DIR" || true; fi
  if [[ -n "$POSTGRES_DIR" ]]; then "$POSTGRES_CTL" stop --dir "$POSTGRES_DIR" || true; fi
  if [[ -z "${PLACEMATCH_TEST_ENV_KEEP:-}" ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started="${EPOCHREALTIME:-$SECONDS}"
# The starts run in their own sessions: a Ctrl-C or SIGTERM during startup must not kill them
# half-way (leaving a broker or postmaster nobody knows about); cleanup waits for them, then stops.
# Three distinct ports, chosen together so that Kafka's two and PostgreSQL's cannot coincide.
read -r kafka_port controller_port postgres_port < <("$KAFKA_CTL" free-ports 3)
start_kafka() {  # DIR-SUFFIX BROKER-PORT CONTROLLER-PORT
  KAFKA_DIR="$WORK/kafka$1"
  setsid -w "$KAFKA_CTL" start --port "$2" --controller-port "$3" --dir "$KAFKA_DIR" > "$WORK/kafka.out" &
  kafka_job=$!
}
if [[ -z "${PLACEMATCH_TEST_KAFKA:-}" ]]; then
  start_kafka "" "$kafka_port" "$controller_port"
fi
if [[ -z "${PLACEMATCH_TEST_DATABASE_URL:-}" ]]; then
  POSTGRES_DIR="$WORK/postgres"
  "$POSTGRES_CTL" ensure
  setsid -w "$POSTGRES_CTL" start --port "$postgres_port" --dir "$POSTGRES_DIR" > "$WORK/postgres.out" &
  postgres_job=$!
fi

failed=""
if [[ -n "$kafka_job" ]]; then
  kafka_ok=1
  wait "$kafka_job" || kafka_ok=""
  if [[ -z "$kafka_ok" ]]; then
    # Once more on other ports: a port taken between choosing and binding it, or a start slowed past
    # its timeout by a busy machine, must not fail a whole test run. The reason was printed above.
    log "kafka did not start; trying once more on other ports"
    "$KAFKA_CTL" stop --dir "$KAFKA_DIR" >/dev/null 2>&1 || true
    while :; do  # other ports, none of them PostgreSQL's (which may not be bound yet)
      read -r kafka_port controller_port < <("$KAFKA_CTL" free-ports 2)
      [[ "$kafka_port" != "$postgres_port" && "$controller_port" != "$postgres_port" ]] && break
    done
    start_kafka "-2" "$kafka_port" "$controller_port"
    kafka_ok=1
    wait "$kafka_job" || kafka_ok=""
  fi
  if [[ -n "$kafka_ok" ]]; then
    export PLACEMATCH_TEST_KAFKA="$(tail -n1 "$WORK/kafka.out")"
    export PLACEMATCH_TEST_KAFKA_PORT="${PLACEMATCH_TEST_KAFKA##*:}"
    export PLACEMATCH_TEST_KAFKA_CTL="$KAFKA_CTL"
    export PLACEMATCH_TEST_KAFKA_DIR="$KAFKA_DIR"
    export PLACEMATCH_KAFKA_HOME="$ROOT/deploy/kafka"
  else
    failed+=" kafka"
  fi
fi
if [[ -n "$postgres_job" ]]; then
  if wait "$postgres_job"; then
    export PLACEMATCH_TEST_DATABASE_URL="$(tail -n1 "$WORK/postgres.out")"
    export PLACEMATCH_TEST_POSTGRES_DIR="$POSTGRES_DIR"
  else
    failed+=" postgres"
  fi
fi
if [[ -n "$failed" ]]; then
  log "could not start:$failed"
  exit 1
fi
log "ready in $(awk -v a="$started" -v b="${EPOCHREALTIME:-$SECONDS}" 'BEGIN{printf "%.1f", b-a}')s: kafka ${PLACEMATCH_TEST_KAFKA} postgres ${PLACEMATCH_TEST_DATABASE_URL}"

set +e
"$@"
rc=$?
set -e
exit "$rc"
