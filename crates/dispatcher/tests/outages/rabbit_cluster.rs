//! A three-node RabbitMQ cluster with quorum work queues (and a low delivery limit set by
//! policy) losing the node every service is connected to, killed mid-load.

use std::time::{Duration, Instant};

use waybill_testkit::RabbitCluster;

use crate::load::Outage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_killed_mid_load_loses_no_accepted_event() {
    let mut cluster = RabbitCluster::start().await;
    // The work queues only, as the README asks of a production policy. RabbitMQ 3.10 knows no
    // `--apply-to quorum_queues`; only quorum queues read the key.
    cluster.nodes[0]
        .ctl(&[
            "set_policy",
            "delivery-limit",
            r"\.(dispatch|deliveries)$",
            r#"{"delivery-limit": 5}"#,
            "--apply-to",
            "queues",
        ])
        .await;
    // Every node, the first first: the services connect to it, and move on once it is gone.
    let urls = cluster.urls();
    let outage = Outage::start(|s| {
        s.broker.url = urls;
        s.broker.queue_type = "quorum".into();
    })
    .await;
    let load = outage.publish();
    load.until_accepted(100).await;
    let down = Instant::now();
    cluster.nodes[0].kill();
    let after = load.accepted_count() + 150;
    if let Err(e) = load.try_until_accepted(after).await {
        let survivor = &cluster.nodes[1];
        let queues = survivor
            .ctl_output(&[
                "list_queues",
                "name",
                "type",
                "leader",
                "members",
                "online",
                "messages",
            ])
            .await;
        let bindings = survivor
            .ctl_output(&[
                "list_bindings",
                "source_name",
                "destination_name",
                "routing_key",
            ])
            .await;
        let status = survivor.ctl_output(&["cluster_status"]).await;
        panic!("{e}\nqueues:\n{queues}\nbindings:\n{bindings}\ncluster:\n{status}");
    }
    let up = Instant::now();
    outage
        .verify(
            "rabbitmq cluster node killed",
            load,
            (down, up),
            Duration::from_secs(15),
        )
        .await;
}
