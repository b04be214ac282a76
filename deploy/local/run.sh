#!/usr/bin/env bash
# Starts the Waybill services built in target/release in the background, waits until they are
# ready, and prints how to use them. `make stop` stops them.
set -euo pipefail

RUN_DIR=${RUN_DIR:-.run}
API_PORT=${API_PORT:-8080}
INGEST_PORT=${INGEST_PORT:-8081}
DISPATCHER_PORT=${DISPATCHER_PORT:-8082}
mkdir -p "$RUN_DIR"

start() { # name, port
  local name=$1 port=$2
  WAYBILL_HTTP__PORT=$port nohup "target/release/$name" serve >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$(cat "$RUN_DIR/$name.pid")" 2>/dev/null; then
      echo "error: $name exited; its log:" >&2
      tail -n 20 "$RUN_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "error: $name is not ready after 60 s; see $RUN_DIR/$name.log" >&2
  return 1
}

start waybill-api "$API_PORT"
start waybill-ingest "$INGEST_PORT"
start waybill-dispatcher "$DISPATCHER_PORT"

TOKEN=$(target/release/waybill-api token --tenant acme --scopes webhooks:read,webhooks:write,admin,events:publish --ttl 7d)
cat <<MSG

Waybill is running.
  waybill-api      http://127.0.0.1:$API_PORT   (log: $RUN_DIR/waybill-api.log)
  waybill-ingest   http://127.0.0.1:$INGEST_PORT   (log: $RUN_DIR/waybill-ingest.log)
  waybill-dispatcher  http://127.0.0.1:$DISPATCHER_PORT/metrics   (log: $RUN_DIR/waybill-dispatcher.log)
  OpenAPI          http://127.0.0.1:$API_PORT/openapi.json  http://127.0.0.1:$INGEST_PORT/openapi.json

A token for tenant "acme" (every scope, valid 7 days):

  export TOKEN=$TOKEN

Try it:

  curl -s "http://127.0.0.1:$API_PORT/v1/events?group=order" -H "Authorization: Bearer \$TOKEN"

  curl -s http://127.0.0.1:$API_PORT/v1/webhooks -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{"url": "https://example.com/hooks/wms", "events": ["order.shipped", "stock.*"]}'

  curl -s http://127.0.0.1:$API_PORT/v1/webhooks -H "Authorization: Bearer \$TOKEN"

Publish an event (202 once the broker confirmed it):

  curl -s http://127.0.0.1:$INGEST_PORT/v1/events -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{"type": "stock.updated", "data": {"sku": "TSH-BLK-M", "warehouse_id": "wh_rtm_01", "on_hand": 340, "allocated": 52, "available": 288, "updated_at": "2026-01-10T12:00:04Z"}}'

Receive deliveries on this machine (make run allows plain http to 127.0.0.1):

  python3 deploy/local/receiver.py 9000 &
  curl -s http://127.0.0.1:$API_PORT/v1/webhooks -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{"url": "http://127.0.0.1:9000/hooks", "events": ["stock.*"]}'

  then publish the event above again: the receiver prints the signed delivery.
  Delivery log: psql '${WAYBILL_DATABASE__URL}' -c 'SELECT event_id, status, attempts, last_status_code FROM deliveries'

Only the events you want: a payload filter (here, low stock at one warehouse), tried first:

  curl -s http://127.0.0.1:$API_PORT/v1/filters/test -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{"filter": {"data.warehouse_id": "wh_rtm_01", "data.available": {"\$lt": 10}}, "event": {"type": "stock.updated", "data": {"sku": "TSH-BLK-M", "warehouse_id": "wh_rtm_01", "available": 4}}}'
  curl -s http://127.0.0.1:$API_PORT/v1/webhooks -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' \\
       -d '{"url": "http://127.0.0.1:9000/low-stock", "events": ["stock.updated"], "filter": {"data.warehouse_id": "wh_rtm_01", "data.available": {"\$lt": 10}}}'

More tokens: target/release/waybill-api token --tenant <name> --scopes webhooks:read
Stop everything: make stop
MSG
