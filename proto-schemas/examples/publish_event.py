"""Publishes one event straight to Waybill's events exchange over AMQP, with publisher confirms.

    AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f WAYBILL_TENANT=acme python3 publish_event.py

Prints the event id once the broker confirmed the event; exits non-zero when it did not.
"""

import datetime
import json
import os
import sys
import uuid

import pika

url = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
prefix = os.environ.get("WAYBILL_PREFIX", "waybill")
tenant = os.environ.get("WAYBILL_TENANT", "acme")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

envelope = {
    "id": f"stk-{uuid.uuid4()}",  # the idempotency id: reuse it when publishing again
    "tenant": tenant,
    "type": "stock.updated",
    "client_id": None,
    "occurred_at": now,
    "received_at": now,
    "data": {
        "sku": "TSH-BLK-M",
        "warehouse_id": "wh_rtm_01",
        "on_hand": 340,
        "allocated": 52,
        "available": 288,
        "updated_at": now,
    },
}

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.confirm_delivery()  # basic_publish now waits for the broker's ack
try:
    channel.basic_publish(
        exchange=f"{prefix}.events",
        routing_key=envelope["type"],
        body=json.dumps(envelope),
        properties=pika.BasicProperties(
            delivery_mode=2,  # persistent
            content_type="application/json",
            message_id=envelope["id"],
            headers={"waybill-tenant": tenant},
        ),
        mandatory=True,  # a message no queue takes comes back as an error
    )
except pika.exceptions.UnroutableError:
    sys.exit("not queued: no queue is bound (has a Waybill service declared its topology?)")
except pika.exceptions.NackError:
    sys.exit("the broker refused the event; publish it again with the same id")
finally:
    connection.close()
print(envelope["id"])
