//! A RabbitMQ node stopped and started again while events keep coming.

use std::time::{Duration, Instant};

use waybill_testkit::PrivateRabbit;

use crate::load::Outage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_load_loses_no_accepted_event() {
    let mut rabbit = PrivateRabbit::start().await;
    let url = rabbit.url();
    let outage = Outage::start(|s| s.broker.url = url).await;
    let load = outage.publish();
    load.until_accepted(100).await;
    let down = Instant::now();
    rabbit.stop().await;
    rabbit.restart().await;
    let up = Instant::now();
    let after = load.accepted_count() + 100;
    load.until_accepted(after).await;
    outage
        .verify(
            "rabbitmq restarted",
            load,
            (down, up),
            Duration::from_secs(15),
        )
        .await;
}
