//! What the dispatcher refuses becomes a record an operator lists, re-drives or deletes through
//! the api (`/v1/admin/invalid-events`); nothing piles up on a queue.

use reqwest::Method;
use serde_json::{Value, json};
use waybill_testkit::eventually;

use crate::helpers::{Stack, WAIT, example};

impl Stack {
    /// The operator's list of refused events, as `query` asks for it.
    async fn invalid_events(&self, query: &str) -> Value {
        let path = format!("/v1/admin/invalid-events{query}");
        self.expect(Method::GET, &path, &self.admin(), None, 200)
            .await
    }

    /// Waits until the list holds `n` records; returns them.
    async fn wait_invalid(&self, n: usize) -> Vec<Value> {
        let got = eventually(WAIT, || async {
            let list = self.invalid_events("").await;
            let data = list["data"].as_array().cloned().unwrap_or_default();
            (data.len() == n).then_some(data)
        })
        .await;
        match got {
            Some(data) => data,
            None => panic!(
                "never {n} invalid events: {}",
                self.invalid_events("").await
            ),
        }
    }

    async fn redrive(&self, id: &str) -> (u16, Value) {
        let path = format!("/v1/admin/invalid-events/{id}/redrive");
        self.call(Method::POST, &path, &self.admin(), None).await
    }
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// An envelope of `acme` as an upstream service publishes it, of type `kind`.
fn envelope(id: &str, kind: &str, data: Value) -> Value {
    json!({"id": id, "tenant": "acme", "type": kind, "client_id": null,
        "occurred_at": "2026-01-10T10:30:00Z", "received_at": "2026-01-10T10:30:00Z", "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_events_are_recorded_with_their_reason_and_do_not_block_the_queue() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["*"])).await;
    stack.publish_raw("order.shipped", "x1", b"{not json").await;
    let refused = [
        (
            "x2",
            "order.teleported",
            envelope("x2", "order.teleported", json!({})),
        ),
        (
            "x3",
            "stock.updated",
            envelope("x3", "stock.updated", json!({"sku": 42})),
        ),
        ("x4", "stock.updated", {
            let mut e = envelope("x4", "stock.updated", json!({}));
            e["tenant"] = json!("no spaces");
            e
        }),
        // Times ingest refuses too: outside years 1 to 9999 once in UTC.
        ("x5", "stock.updated", {
            let mut e = envelope(
                "x5",
                "stock.updated",
                Value::Object(example("stock.updated")),
            );
            e["occurred_at"] = json!("-5000-01-01T00:00:00Z");
            e
        }),
        ("x6", "stock.updated", {
            let mut e = envelope(
                "x6",
                "stock.updated",
                Value::Object(example("stock.updated")),
            );
            e["occurred_at"] = json!("9999-12-31T23:30:00-01:00");
            e
        }),
    ];
    for (message_id, key, body) in &refused {
        stack
            .publish_raw(key, message_id, body.to_string().as_bytes())
            .await;
    }
    stack.deliver(&id, "stock.updated", "good").await;
    let records = stack.wait_invalid(6).await;
    // Refused concurrently, so not in publishing order.
    let by_id = |m: &str| {
        records
            .iter()
            .find(|r| r["message_id"] == m)
            .unwrap_or_else(|| panic!("no record of {m}: {records:?}"))
    };
    let x1 = by_id("x1");
    assert_eq!(x1["body"], "{not json");
    assert_eq!(x1["routing_key"], "order.shipped");
    assert!(x1["tenant"].is_null());
    assert!(
        x1["reason"]
            .as_str()
            .unwrap()
            .starts_with("not an event envelope")
    );
    assert_eq!(
        (&x1["body_truncated"], &x1["redrivable"], &x1["body_bytes"]),
        (&json!(false), &json!(true), &json!(9))
    );
    let x2 = by_id("x2");
    assert_eq!(x2["reason"], "there is no event type `order.teleported`");
    assert_eq!(x2["tenant"], "acme");
    assert_eq!(x2["routing_key"], "order.teleported");
    let body: Value = serde_json::from_str(x2["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, refused[0].2);
    assert!(
        by_id("x3")["reason"]
            .as_str()
            .unwrap()
            .starts_with("data: ")
    );
    assert!(by_id("x4")["reason"].as_str().unwrap().contains("tenant"));
    assert!(by_id("x4")["tenant"].is_null());
    for m in ["x5", "x6"] {
        assert_eq!(
            by_id(m)["reason"],
            "occurred_at must be within years 1 to 9999 (in UTC)"
        );
    }
    // Acked once recorded: nothing waits on the dispatch queue, nothing on the old invalid one.
    let topology = stack.settings.topology().unwrap();
    let drained = eventually(WAIT, || async {
        (stack.queue_len(&topology.dispatch_queue()).await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the dispatch queue never emptied");
    assert_eq!(stack.queue_len(&topology.invalid_queue()).await, 0);
    assert_eq!(stack.events_counted("invalid").await, 6.0);
    assert_eq!(rx.count(), 1);

    // The reason filter is a substring, ignoring case.
    let only = stack.invalid_events("?reason=NO%20EVENT%20TYPE").await;
    assert_eq!(only["count"], 1);
    assert_eq!(only["data"][0]["message_id"], "x2");
    let page = stack.invalid_events("?reason=occurred_at&limit=1").await;
    assert_eq!(page["count"], 2);
    assert_eq!(
        page["next"],
        "/v1/admin/invalid-events?reason=occurred_at&limit=1&page=2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_event_is_refused_again_until_its_type_exists_then_delivered() {
    let stack = Stack::start().await;
    let (rx, id) = stack.receiver_for(json!(["order.*"])).await;
    let body = envelope("tp-1", "order.teleported", json!({"order_id": "o-1"}));
    stack
        .publish_raw("order.teleported", "tp-1", body.to_string().as_bytes())
        .await;
    let first = stack.wait_invalid(1).await.remove(0);
    let record = first["id"].as_str().unwrap().to_owned();

    // Unchanged and still of an unknown type: refused again, and recorded again under the same
    // id (it is the same message), later.
    let (status, reply) = stack.redrive(&record).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["data"]["id"], record.as_str());
    let again = eventually(WAIT, || async {
        let list = stack.invalid_events("").await;
        let r = list["data"].get(0)?.clone();
        (time(&r["received_at"]) > time(&first["received_at"])).then_some(r)
    })
    .await
    .expect("refused and recorded again");
    assert_eq!(again["id"], record.as_str());
    assert_eq!(again["reason"], first["reason"]);

    // The operator adds the type; re-driven again, the event is delivered as published. The
    // dispatcher may still decide on the catalog it had a moment ago, so re-drive until then.
    let mut conn = stack.sql().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "INSERT INTO event_types (name, group_name, action, description, schema, active, \
             created_at, updated_at) VALUES ('order.teleported', 'order', 'teleported', \
             'Beamed to the customer.', '{\"type\": \"object\"}', true, now(), now())",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    let delivered = eventually(WAIT, || async {
        stack.redrive(&record).await;
        stack
            .deliveries(&id)
            .await
            .into_iter()
            .find(|d| d.event_id == "tp-1" && d.status == "succeeded")
    })
    .await;
    assert!(
        delivered.is_some(),
        "never delivered: {}",
        stack.invalid_events("").await
    );
    let got = rx.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "order.teleported");
    assert_eq!(got[0].json()["data"], json!({"order_id": "o-1"}));
    assert_eq!(stack.invalid_events("").await["count"], 0);
    // Gone: a re-drive or delete of it is a 404.
    assert_eq!(stack.redrive(&record).await.0, 404);
}
