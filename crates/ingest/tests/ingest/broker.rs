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
    let mut ids = Vec::new();
    for _ in 0..app.queued().await {
        ids.push(
            app.next_message()
                .await
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
        );
    }
    assert!(
        ids.contains(&"before".to_owned()) && ids.contains(&"after".to_owned()),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|i| i.starts_with("during")), "{ids:?}");
}
