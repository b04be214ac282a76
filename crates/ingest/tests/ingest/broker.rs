//! Without a broker that confirms, ingest answers 503 and accepts nothing; once the broker is
//! back the same process accepts again.

use serde_json::json;
use waybill_testkit::BrokerProxy;

use crate::helpers::{TestIngest, example};

#[tokio::test]
async fn no_202_without_the_broker_and_recovery_by_itself() {
    let proxy = BrokerProxy::start().await;
    let url = proxy.url();
    let app = TestIngest::spawn_with(|s| s.broker.url = url).await;
    let t = app.publisher();
    let body =
        |id: &str| json!({"type": "order.shipped", "data": example("order.shipped"), "id": id});
    app.post("/v1/events", &t, &body("before"))
        .await
        .assert(202);

    proxy.cut();
    for i in 0..3 {
        let r = app
            .post("/v1/events", &t, &body(&format!("during-{i}")))
            .await;
        r.assert(503);
        assert_eq!(r.body["error"]["code"], "unavailable");
        assert!(r.headers.contains_key("retry-after"));
    }
    proxy.restore();
    let back = waybill_testkit::eventually(std::time::Duration::from_secs(10), || async {
        let r = app.post("/v1/events", &t, &body("after")).await;
        (r.status == 202).then_some(())
    })
    .await;
    assert!(back.is_some(), "accepting again once the broker is back");
    // Only the accepted events were queued.
    let ids = app.take_queued_ids().await;
    assert!(
        ids.contains(&"before".to_owned()) && ids.contains(&"after".to_owned()),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|i| i.starts_with("during")), "{ids:?}");
}

#[tokio::test]
async fn every_202_is_queued_while_the_broker_drops_under_continuous_publishing() {
    let proxy = std::sync::Arc::new(BrokerProxy::start().await);
    let url = proxy.url();
    let app = std::sync::Arc::new(TestIngest::spawn_with(|s| s.broker.url = url).await);
    let started = std::time::Instant::now();
    let publishers: Vec<_> = (0..4)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let t = app.publisher();
                let (mut accepted, mut refused, mut n) = (Vec::new(), 0u32, 0u32);
                while started.elapsed() < std::time::Duration::from_secs(3) {
                    let id = format!("w{w}-{n}");
                    n += 1;
                    let r = app.post("/v1/events", &t, &json!({"type": "stock.updated", "data": example("stock.updated"), "id": id})).await;
                    match r.status.as_u16() {
                        202 => accepted.push(id),
                        503 => refused += 1,
                        other => panic!("unexpected {other}: {}", r.body),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    proxy.cut();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    proxy.restore();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for p in publishers {
        let (a, r) = p.await.unwrap();
        accepted.extend(a);
        refused += r;
    }
    let queued: std::collections::HashSet<String> =
        app.take_queued_ids().await.into_iter().collect();
    let lost: Vec<&String> = accepted.iter().filter(|id| !queued.contains(*id)).collect();
    eprintln!(
        "{} accepted, {refused} refused, {} queued",
        accepted.len(),
        queued.len()
    );
    assert!(lost.is_empty(), "answered 202 but not queued: {lost:?}");
    assert!(refused > 0, "the outage was seen as 503s");
    assert!(!accepted.is_empty());
}
