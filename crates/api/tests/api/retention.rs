//! The retention job deletes what is past `retention.period`, in batches, and keeps what is
//! still owed.

use std::time::Duration;

use diesel::{QueryableByName, sql_query, sql_types::BigInt};
use diesel_async::RunQueryDsl;

use crate::helpers::{TestApp, eventually};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn old_events_deliveries_attempts_and_refused_events_are_deleted_and_pending_ones_kept() {
    let app = TestApp::spawn_with(|s| {
        s.retention.period = "1d".into();
        s.retention.interval = "200ms".into();
        // Several batches per pass.
        s.retention.batch_size = 2;
    })
    .await;
    let mut conn = app.sql().await;
    let setup = [
        // Past retention and done with: deleted.
        "INSERT INTO events (tenant, id, event_type, occurred_at, received_at, data, created_at, fanned_out_at) \
         SELECT 'acme', 'old-' || g, 'stock.updated', now() - interval '2 days', now() - interval '2 days', '{}', now() - interval '2 days', now() - interval '2 days' FROM generate_series(1, 5) g",
        // Past retention but never fanned out: kept until its fan-out finishes.
        "INSERT INTO events (tenant, id, event_type, occurred_at, received_at, data, created_at) \
         VALUES ('acme', 'old-unfinished', 'stock.updated', now(), now(), '{}', now() - interval '2 days')",
        "INSERT INTO events (tenant, id, event_type, occurred_at, received_at, data, created_at, fanned_out_at) \
         VALUES ('acme', 'new', 'stock.updated', now(), now(), '{}', now(), now())",
        "INSERT INTO deliveries (id, tenant, webhook_id, event_id, event_type, status, attempts, created_at, updated_at) \
         SELECT gen_random_uuid(), 'acme', gen_random_uuid(), 'old-' || g, 'stock.updated', \
                CASE WHEN g % 2 = 0 THEN 'failed' ELSE 'succeeded' END, 1, now() - interval '2 days', now() - interval '2 days' \
         FROM generate_series(1, 5) g",
        // Still owed: kept whatever its age.
        "INSERT INTO deliveries (id, tenant, webhook_id, event_id, event_type, status, attempts, created_at, updated_at) \
         VALUES (gen_random_uuid(), 'acme', gen_random_uuid(), 'old-1', 'stock.updated', 'pending', 3, now() - interval '2 days', now())",
        "INSERT INTO deliveries (id, tenant, webhook_id, event_id, event_type, status, attempts, created_at, updated_at) \
         VALUES (gen_random_uuid(), 'acme', gen_random_uuid(), 'new', 'stock.updated', 'succeeded', 1, now(), now())",
        "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms) \
         SELECT gen_random_uuid(), 1, now() - interval '2 days', 5 FROM generate_series(1, 7)",
        "INSERT INTO delivery_attempts (delivery_id, number, started_at, duration_ms) \
         VALUES (gen_random_uuid(), 1, now(), 5)",
        // Refused events: by when the dispatcher refused them.
        "INSERT INTO invalid_events (id, routing_key, reason, received_at, body, body_truncated, body_bytes) \
         SELECT gen_random_uuid(), 'order.teleported', 'no type', now() - interval '2 days', '\\x7b7d', false, 2 \
         FROM generate_series(1, 3)",
        "INSERT INTO invalid_events (id, routing_key, reason, received_at, body, body_truncated, body_bytes) \
         VALUES (gen_random_uuid(), 'order.teleported', 'no type', now(), '\\x7b7d', false, 2)",
    ];
    for q in setup {
        sql_query(q).execute(&mut conn).await.unwrap();
    }
    let counts = || async {
        let mut conn = app.sql().await;
        let mut out = Vec::new();
        for t in [
            "events",
            "deliveries",
            "delivery_attempts",
            "invalid_events",
        ] {
            let c: Count = sql_query(format!("SELECT count(*) AS n FROM {t}"))
                .get_result(&mut conn)
                .await
                .unwrap();
            out.push(c.n);
        }
        out
    };
    let done = eventually(Duration::from_secs(15), || async {
        let c = counts().await;
        (c == [2, 2, 1, 1]).then_some(c)
    })
    .await;
    assert!(done.is_some(), "left: {:?}", counts().await);
    // The counter moves after each delete commits, so the last one may trail the rows a little.
    let lines: Vec<String> = [
        ("delivery_attempts", 7),
        ("deliveries", 5),
        ("events", 5),
        ("invalid_events", 3),
    ]
    .iter()
    .map(|(table, n)| {
        format!("waybill_retention_deleted_rows_total{{table=\"{table}\",service=\"api\"}} {n}")
    })
    .collect();
    let counted = eventually(Duration::from_secs(15), || async {
        let metrics = app.metrics().await?;
        lines.iter().all(|l| metrics.contains(l)).then_some(())
    })
    .await;
    let metrics = app.metrics().await.unwrap();
    assert!(counted.is_some(), "not all of {lines:?} in:\n{metrics}");
}
