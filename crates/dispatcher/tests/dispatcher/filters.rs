//! Payload filters end to end: events published through ingest reach exactly the subscriptions
//! whose filter they match, filtered-out pairs leave no delivery behind, and a changed or
//! removed filter takes effect in the running dispatcher.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
use waybill_testkit::eventually;

use crate::helpers::{Receiver, Stack, WAIT};

/// The subscriptions of the test, by name, with their filters (`Value::Null`: none).
fn filters() -> Vec<(&'static str, Value)> {
    vec![
        (
            "eu",
            json!({"data.warehouse.country": {"$in": ["DE", "FR", "NL"]}}),
        ),
        ("low", json!({"data.available": {"$lt": 10}})),
        (
            "held",
            json!({"data.status": {"$in": ["on_hold", "partially_allocated"]}}),
        ),
        ("mug", json!({"data.lines.sku": "MUG-WHT-350"})),
        (
            "rush",
            json!({"data.order_number": {"$regex": "^SO-2026-9[0-9]+$"}}),
        ),
        (
            "other",
            json!({"$or": [
                {"data.priority": "urgent"},
                {"$not": {"data.owner_code": {"$startsWith": "OWN-1"}}}
            ]}),
        ),
        ("all", Value::Null),
    ]
}

fn warehouse(country: &str) -> Value {
    json!({"id": format!("wh_{}_01", country.to_lowercase()), "country": country})
}

/// An `order.created` as a WMS sends it; `warehouse` is one of the extra properties the
/// schema allows.
fn order(
    number: &str,
    country: &str,
    status: &str,
    skus: &[&str],
    priority: &str,
    owner: &str,
) -> (&'static str, Value) {
    let lines: Vec<Value> = skus
        .iter()
        .enumerate()
        .map(|(i, sku)| json!({"line_number": i + 1, "sku": sku, "quantity": 2}))
        .collect();
    (
        "order.created",
        json!({
            "order_id": format!("ord_{number}"),
            "order_number": number,
            "warehouse_id": format!("wh_{}_01", country.to_lowercase()),
            "warehouse": warehouse(country),
            "owner_code": owner,
            "status": status,
            "lines": lines,
            "priority": priority,
            "created_at": "2026-01-10T10:30:00Z",
        }),
    )
}

/// A `stock.updated` of one SKU.
fn stock(country: &str, available: u32, owner: &str) -> (&'static str, Value) {
    (
        "stock.updated",
        json!({
            "sku": "TSH-BLK-M",
            "warehouse_id": format!("wh_{}_01", country.to_lowercase()),
            "warehouse": warehouse(country),
            "on_hand": available + 20,
            "allocated": 20,
            "available": available,
            "updated_at": "2026-01-10T12:00:04Z",
            "owner_code": owner,
        }),
    )
}

/// The last event of a round: an order carrying every field the filters read (`available`
/// being an extra property of it), so that every subscription wants it.
fn marker(country: &str) -> (&'static str, Value) {
    let (kind, mut data) = order(
        "SO-2026-9999",
        country,
        "on_hold",
        &["MUG-WHT-350"],
        "urgent",
        "OWN-1042",
    );
    data["available"] = json!(0);
    (kind, data)
}

/// One round of events: (event id, type, data, names of the subscriptions it must reach).
type Round = Vec<(String, &'static str, Value, Vec<&'static str>)>;

fn event(id: &str, (kind, data): (&'static str, Value), to: &[&'static str]) -> Round {
    vec![(id.to_owned(), kind, data, to.to_vec())]
}

struct Subscriptions {
    /// Name → (subscription id, its receiver).
    by_name: BTreeMap<&'static str, (String, Receiver)>,
}

impl Subscriptions {
    fn id(&self, name: &str) -> &str {
        &self.by_name[name].0
    }
}

/// Posts an event to ingest as a publisher does.
async fn publish(ingest: &str, token: &str, id: &str, kind: &str, data: &Value) {
    let r = reqwest::Client::new()
        .post(format!("{ingest}/v1/events"))
        .bearer_auth(token)
        .json(&json!({"type": kind, "id": id, "data": data}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 202, "{id}: {}", r.text().await.unwrap());
}

/// Event ids the api's delivery log lists for a subscription.
async fn logged(stack: &Stack, webhook_id: &str) -> BTreeSet<String> {
    let path = format!("/v1/webhooks/{webhook_id}/deliveries?limit=100");
    let body = stack
        .expect(Method::GET, &path, &stack.token("acme"), None, 200)
        .await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Event ids a receiver got requests for.
fn received(rx: &Receiver) -> Vec<String> {
    rx.received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect()
}

/// Publishes a round and waits until it is settled: every event fanned out (so every delivery
/// it makes exists), every delivery succeeded (so every request was made), the marker at every
/// receiver. Then each receiver and each delivery log holds exactly the round's events meant
/// for it. Returns the subscriptions the round's filters kept out.
async fn run_round(
    stack: &Stack,
    subs: &Subscriptions,
    ingest: &str,
    prefix: &str,
    round: Round,
) -> usize {
    let token = stack.publisher();
    let fanned_before = stack.events_counted("fanned_out").await;
    for (id, kind, data, _) in &round {
        publish(ingest, &token, id, kind, data).await;
    }
    let n = round.len() as f64;
    let fanned = eventually(WAIT, || async {
        (stack.events_counted("fanned_out").await >= fanned_before + n).then_some(())
    })
    .await;
    assert!(fanned.is_some(), "the round {prefix} was not fanned out");
    let (marker_id, ..) = round.last().unwrap();
    for (name, (id, _)) in &subs.by_name {
        let settled = eventually(WAIT, || async {
            let rows = stack.deliveries(id).await;
            (rows.iter().any(|d| &d.event_id == marker_id)
                && rows.iter().all(|d| d.status == "succeeded"))
            .then_some(())
        })
        .await;
        assert!(
            settled.is_some(),
            "{name}: the round {prefix} did not settle"
        );
    }

    let mut filtered_out = 0;
    for (name, (id, rx)) in &subs.by_name {
        let want: BTreeSet<String> = round
            .iter()
            .filter(|(_, _, _, to)| to.contains(name))
            .map(|(event_id, ..)| event_id.clone())
            .collect();
        filtered_out += round.len() - want.len();
        let mut got = received(rx);
        got.retain(|e| e.starts_with(prefix));
        got.sort();
        assert_eq!(
            got,
            want.iter().cloned().collect::<Vec<_>>(),
            "{name} received exactly its events of round {prefix}, once each"
        );
        let mut log = logged(stack, id).await;
        log.retain(|e| e.starts_with(prefix));
        assert_eq!(
            log, want,
            "{name}: the delivery log has no delivery for an event its filter kept out"
        );
    }
    filtered_out
}

/// Waits until the filter counter reaches `n`.
async fn wait_filtered(stack: &Stack, n: usize) {
    let port = stack.dispatchers[0];
    let reached = eventually(WAIT, || async {
        let got = stack
            .metric(port, "waybill_dispatcher_filtered_out_total", "")
            .await;
        (got == n as f64).then_some(())
    })
    .await;
    let got = stack
        .metric(port, "waybill_dispatcher_filtered_out_total", "")
        .await;
    assert!(reached.is_some(), "filtered-out count {got}, expected {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscription_receives_exactly_the_events_its_filter_matches() {
    let stack = Stack::start().await;
    let mut by_name = BTreeMap::new();
    for (name, filter) in filters() {
        let rx = Receiver::start().await;
        let mut body =
            json!({"url": rx.url("/hook"), "events": ["order.created", "stock.updated"]});
        if !filter.is_null() {
            body["filter"] = filter.clone();
        }
        let id = stack.subscribe("acme", body).await;
        let shown = stack
            .expect(
                Method::GET,
                &format!("/v1/webhooks/{id}"),
                &stack.token("acme"),
                None,
                200,
            )
            .await;
        assert_eq!(shown["data"]["filter"], filter, "{name}");
        by_name.insert(name, (id, rx));
    }
    let subs = Subscriptions { by_name };
    stack.wait_indexed(subs.by_name.len()).await;
    let port = stack
        .run(waybill_ingest::Application::build, stack.settings.clone())
        .await;
    stack.wait_ready(port).await;
    let ingest = format!("http://127.0.0.1:{port}");

    let first: Round = [
        event(
            "r1-order-de",
            order(
                "SO-2026-004512",
                "DE",
                "created",
                &["TSH-BLK-M"],
                "normal",
                "OWN-1042",
            ),
            &["eu", "all"],
        ),
        event(
            "r1-order-us-held",
            order(
                "SO-2026-9001",
                "US",
                "on_hold",
                &["TSH-BLK-M", "MUG-WHT-350"],
                "urgent",
                "OWN-1042",
            ),
            &["held", "mug", "rush", "other", "all"],
        ),
        event(
            "r1-order-fr-partial",
            order(
                "SO-2026-004513",
                "FR",
                "partially_allocated",
                &["BAG-RED-L"],
                "normal",
                "OWN-2001",
            ),
            &["eu", "held", "other", "all"],
        ),
        event(
            "r1-order-gb-mug",
            order(
                "SO-2026-9A",
                "GB",
                "created",
                &["MUG-WHT-350"],
                "normal",
                "OWN-1042",
            ),
            &["mug", "all"],
        ),
        event(
            "r1-stock-nl-low",
            stock("NL", 4, "OWN-1042"),
            &["eu", "low", "all"],
        ),
        event("r1-stock-us-plenty", stock("US", 288, "OWN-1042"), &["all"]),
        event(
            "r1-stock-us-out",
            stock("US", 0, "OWN-7"),
            &["low", "other", "all"],
        ),
        event(
            "r1-marker",
            marker("DE"),
            &["eu", "low", "held", "mug", "rush", "other", "all"],
        ),
    ]
    .concat();
    let kept_out = run_round(&stack, &subs, &ingest, "r1-", first).await;
    assert_eq!(kept_out, 29);
    wait_filtered(&stack, kept_out).await;

    // One filter replaced, one removed; applied once a probe shows both. The probe is an event
    // only the new state lets through to either subscription.
    stack
        .patch_webhook(
            subs.id("eu"),
            json!({"filter": {"data.warehouse.country": "GB"}}),
        )
        .await;
    let patched = stack
        .patch_webhook(subs.id("rush"), json!({"filter": null}))
        .await;
    assert_eq!(patched["data"]["filter"], Value::Null);
    let token = stack.publisher();
    let mut probes = 0;
    let applied = eventually(WAIT, || {
        probes += 1;
        let probe = format!("probe-{probes}");
        let (stack, subs, ingest, token) = (&stack, &subs, &ingest, &token);
        async move {
            let (kind, data) = stock("GB", 500, "OWN-1042");
            publish(ingest, token, &probe, kind, &data).await;
            stack
                .wait_delivery(subs.id("all"), &probe, "succeeded")
                .await;
            let eu = stack.deliveries(subs.id("eu")).await;
            let rush = stack.deliveries(subs.id("rush")).await;
            (eu.iter().any(|d| d.event_id == probe) && rush.iter().any(|d| d.event_id == probe))
                .then_some(())
        }
    })
    .await;
    assert!(
        applied.is_some(),
        "the dispatcher never applied the changed filters"
    );
    // The two changes may apply at different probes: what each probe reached is in the rows.
    let mut probe_kept_out = 0;
    for (id, _) in subs.by_name.values() {
        let reached = stack
            .deliveries(id)
            .await
            .iter()
            .filter(|d| d.event_id.starts_with("probe-"))
            .count();
        probe_kept_out += probes - reached;
    }

    let second: Round = [
        event(
            "r2-stock-de-low",
            stock("DE", 3, "OWN-1042"),
            &["low", "rush", "all"],
        ),
        event(
            "r2-order-gb",
            order(
                "SO-2026-004600",
                "GB",
                "created",
                &["TSH-BLK-M"],
                "normal",
                "OWN-1042",
            ),
            &["eu", "rush", "all"],
        ),
        event(
            "r2-order-fr-held",
            order(
                "SO-2026-9100",
                "FR",
                "on_hold",
                &["MUG-WHT-350"],
                "urgent",
                "OWN-1042",
            ),
            &["held", "mug", "rush", "other", "all"],
        ),
        event(
            "r2-marker",
            marker("GB"),
            &["eu", "low", "held", "mug", "rush", "other", "all"],
        ),
    ]
    .concat();
    let kept_out_after = run_round(&stack, &subs, &ingest, "r2-", second).await;
    assert_eq!(kept_out_after, 10);
    wait_filtered(&stack, kept_out + probe_kept_out + kept_out_after).await;
}

/// A dispatcher that starts after the filters were stored reads them from Postgres, not from the
/// change feed (a restart, a new replica): its index holds and applies them the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_started_later_applies_the_stored_filters() {
    let mut stack = Stack::start_with(|_| {}, 0).await;
    let rx = Receiver::start().await;
    let id = stack
        .subscribe(
            "acme",
            json!({"url": rx.url("/low"), "events": ["stock.updated"],
                   "filter": {"data.available": {"$lt": 10}}}),
        )
        .await;
    stack.spawn_dispatcher(stack.settings.clone()).await;
    stack.wait_indexed(1).await;

    let mut data = waybill_testkit::examples::example_data("stock.updated");
    for (event_id, available) in [("plenty-1", 288), ("short-1", 3)] {
        data.insert("available".into(), json!(available));
        let now = chrono::Utc::now();
        let event = waybill_domain::event::EventEnvelope {
            id: event_id.into(),
            tenant: waybill_domain::TenantId::parse("acme").unwrap(),
            kind: waybill_domain::EventTypeName::parse("stock.updated").unwrap(),
            client_id: None,
            occurred_at: now,
            received_at: now,
            data: data.clone(),
        };
        stack
            .publish_raw(
                "stock.updated",
                event_id,
                &serde_json::to_vec(&event).unwrap(),
            )
            .await;
    }
    let both = eventually(WAIT, || async {
        (stack.events_counted("fanned_out").await == 2.0).then_some(())
    })
    .await;
    assert!(both.is_some(), "both events were fanned out");
    stack.wait_delivery(&id, "short-1", "succeeded").await;
    let delivered: Vec<String> = stack
        .deliveries(&id)
        .await
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(
        delivered,
        ["short-1"],
        "only the event the stored filter matches"
    );
}
