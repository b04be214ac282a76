#!/usr/bin/env bash
# Property-based test of the OpenAPI documents against the real services: schemathesis reads the
# document each service serves, generates requests from it (valid and invalid ones) and checks
# every answer against it. It runs the api and ingest binaries `cargo test` built, on a scratch
# database and broker prefix of their own, and fails (non-zero exit) when any check fails. Which
# checks run and why: schemathesis-api.toml next to this script.
#
# Bounded in time: schemathesis repeats fuzzing and stateful testing until its time budget is
# spent, ST_MAX_TIME seconds for the api and for ingest, a third of it for the admin-only run;
# about 2.5 x ST_MAX_TIME in all, plus the start of the services.
set -euo pipefail

cd "$(dirname "$0")/../.."

PG_URL=${PG_URL:-postgres://postgres:postgres@127.0.0.1:5432}
BROKER_URL=${BROKER_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
BIN_DIR=${BIN_DIR:-target/debug}
ST_MAX_EXAMPLES=${ST_MAX_EXAMPLES:-25}
ST_MAX_TIME=${ST_MAX_TIME:-60}
REPORT_DIR=${REPORT_DIR:-target/schemathesis}
# The name matches what `make clean-test-dbs` drops, should a run be killed before its cleanup.
DB=waybill_test_schemathesis_$$
# One prefix for every run, so that broker objects are reused rather than piling up; the queues
# holding what a run published are deleted when it ends (nothing consumes them).
PREFIX=waybill_schemathesis

say() { printf '==> %s\n' "$*"; }

# Installed (pinned) by ensure-test-tools.sh, which `make test` runs first.
SCHEMATHESIS=target/tools/schemathesis/bin/schemathesis
[ -x "$SCHEMATHESIS" ] || deploy/local/ensure-test-tools.sh

for b in waybill-api waybill-ingest; do
  [ -x "$BIN_DIR/$b" ] || { echo "error: $BIN_DIR/$b is missing; run cargo test (or cargo build) first" >&2; exit 1; }
done

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  BROKER_URL=$BROKER_URL PREFIX=$PREFIX python3 - <<'PY' >/dev/null 2>&1 || true
import os, pika
connection = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
channel = connection.channel()
for queue in ("dispatch", "events.invalid", "deliveries", "deliveries.dead"):
    channel.queue_delete(f"{os.environ['PREFIX']}.{queue}")
connection.close()
PY
}
trap cleanup EXIT

psql "$PG_URL/postgres" -qc "CREATE DATABASE $DB"
mkdir -p "$REPORT_DIR"

export WAYBILL_CONFIG=$PWD/deploy/local/waybill.toml
export WAYBILL_DATABASE__URL=$PG_URL/$DB
export WAYBILL_BROKER__URL=$BROKER_URL
export WAYBILL_BROKER__PREFIX=$PREFIX
# Schemathesis sends far more than a tenant's default share; 429s would hide what it tests.
export WAYBILL_RATE_LIMIT__PER_SECOND=100000
export WAYBILL_RATE_LIMIT__BURST=100000

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() { # name, port
  local name=$1 port=$2 log=$REPORT_DIR/$1.log
  WAYBILL_HTTP__PORT=$port "$BIN_DIR/$name" serve >"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "${pids[-1]}" 2>/dev/null; then
      echo "error: $name exited; its log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "error: $name is not ready after 60 s; see $log" >&2
  return 1
}

API_PORT=$(free_port)
start waybill-api "$API_PORT"
INGEST_PORT=$(free_port)
start waybill-ingest "$INGEST_PORT"
mint() { "$BIN_DIR/waybill-api" token --tenant schemathesis --scopes "$1" --ttl 1h; }
# Deactivating an event type (PATCH /v1/events/{name}, scope admin) makes valid requests to
# other operations invalid, so that operation is tested on its own, after everything else.
TOKEN=$(mint webhooks:read,webhooks:write,events:publish)
ADMIN_TOKEN=$(mint admin)

API_CONFIG=deploy/local/schemathesis-api.toml
# Ingest has no operation-specific settings, only the api's cache setting (see its file).
INGEST_CONFIG=$REPORT_DIR/schemathesis-ingest.toml
printf '[cache]\nenabled = false\n' >"$INGEST_CONFIG"
status=0
summary=()
run() { # name, configuration file, base URL, token, extra arguments
  local name=$1 config=$2 url=$3 token=$4 out=$REPORT_DIR/$1.txt rc=0
  shift 4
  say "schemathesis against $name ($url/openapi.json)"
  "$SCHEMATHESIS" --config-file "$config" run "$url/openapi.json" \
    "$@" \
    --url "$url" \
    --checks all \
    --generation-allow-x00 false \
    --max-examples "$ST_MAX_EXAMPLES" \
    --max-time "${MAX_TIME:-$ST_MAX_TIME}" \
    --seed 1 \
    --workers 1 \
    --header "Authorization: Bearer $token" \
    --report junit --report-junit-path "$REPORT_DIR/$name.junit.xml" \
    2>&1 | tee "$out" || rc=$?
  # Schemathesis' own closing line ("=== 6 failures, 1 warning in 60.02s ===") and its count
  # of generated cases.
  summary+=("$name: $(grep -E ' in [0-9.]+s =+$' "$out" | tail -n 1 | tr -d '=' | xargs || true);\
 $(grep -E '^ *[0-9]+ generated' "$out" | tail -n 1 | xargs || true) (exit $rc)")
  [ "$rc" -eq 0 ] || status=1
}

run waybill-api "$API_CONFIG" "http://127.0.0.1:$API_PORT" "$TOKEN" \
  --exclude-name "PATCH /v1/events/{name}"
run waybill-ingest "$INGEST_CONFIG" "http://127.0.0.1:$INGEST_PORT" "$TOKEN"
MAX_TIME=$(((ST_MAX_TIME + 2) / 3)) run waybill-api-admin "$API_CONFIG" "http://127.0.0.1:$API_PORT" "$ADMIN_TOKEN" \
  --include-name "PATCH /v1/events/{name}"

for line in "${summary[@]}"; do echo "schemathesis $line"; done
if [ "$status" -eq 0 ]; then echo "schemathesis: passed"; else echo "schemathesis: FAILED (reports in $REPORT_DIR)"; fi
exit "$status"
