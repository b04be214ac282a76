//! PostgreSQL stopped for a minute while events keep coming.

use std::time::{Duration, Instant};

use waybill_testkit::PrivatePostgres;

use crate::load::Outage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_a_minute_loses_no_accepted_event() {
    let pg = PrivatePostgres::start().await;
    let url = pg.create_database("waybill").await;
    let outage = Outage::start(|s| s.database.url = url).await;
    let load = outage.publish();
    load.until_accepted(50).await;
    let down = Instant::now();
    pg.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    pg.resume().await;
    let up = Instant::now();
    let after = load.accepted_count() + 50;
    load.until_accepted(after).await;
    outage
        .verify(
            "postgres stopped 60 s",
            load,
            (down, up),
            Duration::from_secs(15),
        )
        .await;
}
