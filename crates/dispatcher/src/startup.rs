//! Builds `waybill-dispatcher`: database and catalog, the subscription index and its sync, the
//! two consumers (fan-out and delivery), the record writer, and the operations endpoints.

use std::sync::Arc;

use actix_web::web;
use anyhow::Context;
use tokio::sync::{Semaphore, watch};
use waybill_bus::{Broker, Consumer, ConsumerSpec, Returner, Topology};
use waybill_catalog::Catalog;
use waybill_domain::retry::RetrySchedule;
use waybill_outbound::Outbound;
use waybill_publisher::EventPublisher;
use waybill_runtime::{
    AuthState, JwtKeys, Settings,
    config::parse_duration,
    http::{self, Metrics, postgres_and_broker, probe},
    rate_limit::TenantLimiter,
    service::{RunningService, Shared},
};
use waybill_store::{Cipher, deliveries::Claim};

use crate::{
    budget::Budgeted,
    deliver::Deliver,
    fairness::TenantSlots,
    fanout::{self, FanOut},
    health::{Breaker, BreakerSetup, Throttle},
    index::Index,
    metrics::{DispatchMetrics, QueueWatch},
    openapi,
    recorder::Recorder,
    sync::IndexSync,
};

/// The dispatcher service.
pub struct Application;

/// Messages a replica moves from a return queue to its work queue at once.
const RETURN_PREFETCH: u16 = 16;

/// Bytes of delivery messages a replica works on at once (their copies take several times
/// that): small messages are never held back by it, big ones are taken a few at a time.
const DELIVERY_BUDGET_BYTES: usize = 2 << 20;

/// Bytes of event messages a replica fans out at once beyond the small ones: a fan-out holds its
/// event three times over (parsed, encoded for delivery messages, the receivers' body) for as
/// long as its first attempts take, so big events are fanned out a few at a time.
const FANOUT_BUDGET_BYTES: usize = 4 << 20;

/// How often a replica reads every failing receiver's circuit from Postgres.
const BREAKER_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

fn routes(cfg: &mut web::ServiceConfig) {
    for (path, route) in http::standard_routes(openapi::document) {
        cfg.route(path, route);
    }
    cfg.default_service(web::to(http::not_found));
}

impl Application {
    /// Prepares the database and catalog, binds the port (0 picks a free one), and starts the
    /// index sync; the consumers start once the index is loaded.
    pub async fn build(settings: Settings) -> anyhow::Result<RunningService> {
        let pool = waybill_store::bootstrap(&settings.database.url, settings.database.pool_size)
            .await
            .context("preparing the database")?;
        let cipher = Arc::new(Cipher::new(&settings.encryption_key()?)?);
        let catalog = Catalog::default();
        catalog
            .refresh(&pool)
            .await
            .context("loading the event catalog")?;
        let topology = settings.topology()?;
        let broker = Broker::new(settings.broker.url.clone(), topology.clone());
        let metrics = Metrics::new("dispatcher");
        let dispatch_metrics =
            DispatchMetrics::register(&metrics.registry, settings.metrics.tenant_label_limit)?;
        let index = Index::default();
        let (loaded, loaded_rx) = watch::channel(false);

        let mut readiness = postgres_and_broker(pool.clone(), broker.clone());
        let index_loaded = loaded_rx.clone();
        readiness.0.push((
            "subscription_index",
            probe(move || {
                let ready = *index_loaded.borrow();
                async move {
                    if ready {
                        Ok(())
                    } else {
                        Err("not loaded yet".to_owned())
                    }
                }
            }),
        ));
        let shared = Shared {
            auth: AuthState {
                keys: JwtKeys::from_settings(&settings)?,
                limiter: TenantLimiter::new(&settings.rate_limit),
            },
            metrics,
            readiness,
        };
        let mut service = RunningService::start(&settings, shared, routes)?;
        // A request in flight at SIGTERM may take the whole delivery timeout, then its record.
        let timeout = parse_duration(&settings.delivery.timeout)?;
        service.set_task_grace(timeout + std::time::Duration::from_secs(5));

        let refresh = (catalog.clone(), pool.clone());
        service.spawn(move |stop| {
            refresh
                .0
                .keep_fresh(refresh.1, waybill_catalog::REFRESH_EVERY, stop)
        });

        let sync = IndexSync {
            index: index.clone(),
            pool: pool.clone(),
            cipher: cipher.clone(),
            broker_url: settings.broker.url.clone(),
            topology: topology.clone(),
            resync_every: parse_duration(&settings.delivery.resync_interval)?,
            metrics: dispatch_metrics.clone(),
            loaded,
        };
        service.spawn(move |stop| sync.run(stop));

        let replica = uuid::Uuid::new_v4().simple().to_string();
        let claim = Claim {
            owner: replica.clone(),
            lease: parse_duration(&settings.delivery.fanout_lease)?,
        };
        let breaker = Arc::new(Breaker::new(BreakerSetup {
            pool: pool.clone(),
            policy: settings.breaker_policy()?,
            probe_lease: timeout + std::time::Duration::from_secs(1),
            disable_after: settings.disable_after()?,
            publisher: EventPublisher::new(broker.clone()),
            index: index.clone(),
            cipher: cipher.clone(),
            metrics: dispatch_metrics.clone(),
        }));
        // A replica that starts (or restarts) while circuits are open knows them before its
        // first delivery; if Postgres cannot tell yet, it learns at the first refresh.
        if let Err(e) = breaker.refresh().await {
            tracing::warn!(error = %e, "could not read the failing receivers at start");
        }
        let refresh = breaker.clone();
        service.spawn(move |stop| refresh.keep_fresh(BREAKER_REFRESH, stop));
        let deliver = Arc::new(Deliver {
            index: index.clone(),
            catalog: catalog.clone(),
            pool: pool.clone(),
            cipher,
            broker: broker.clone(),
            breaker,
            throttle: Throttle::new(pool.clone()),
            outbound: Outbound::new(settings.url_policy(), timeout)?,
            schedule: RetrySchedule::new(settings.retry_schedule()?),
            recorder: Recorder::start(pool.clone()),
            metrics: dispatch_metrics.clone(),
            slots: TenantSlots::new(
                usize::from(settings.delivery.concurrency),
                settings.delivery.tenant_reserve_percent,
            ),
            fair_hold: (
                parse_duration(&settings.delivery.fairness_hold)?,
                parse_duration(&settings.delivery.fairness_max_hold)?,
            ),
        });
        let (take, finish) = FanOut::writers(&pool, &claim);
        let fanout = Arc::new(FanOut {
            index: index.clone(),
            catalog: catalog.clone(),
            pool: pool.clone(),
            broker: broker.clone(),
            metrics: dispatch_metrics.clone(),
            take,
            finish,
            in_flight: Default::default(),
            claim,
            budget: Arc::new(Semaphore::new(fanout::BUDGET_BYTES / 1024)),
            deliver: deliver.clone(),
        });
        let fanout_consumer = Consumer::new(
            settings.broker.url.clone(),
            topology.clone(),
            ConsumerSpec {
                queue: topology.dispatch_queue(),
                prefetch: settings.delivery.fanout_concurrency,
                concurrency: usize::from(settings.delivery.fanout_concurrency),
                tag: format!("waybill-dispatcher-{replica}-fanout"),
            },
        );
        let watch_metrics = dispatch_metrics;
        let deliver_consumer = Consumer::new(
            settings.broker.url.clone(),
            topology.clone(),
            ConsumerSpec {
                queue: topology.deliveries_queue(),
                prefetch: settings.delivery.concurrency,
                concurrency: usize::from(settings.delivery.concurrency),
                tag: format!("waybill-dispatcher-{replica}-deliver"),
            },
        );
        // Messages back from limbo go to their work queue again, index loaded or not.
        for work in topology.work_queues() {
            let back = Consumer::new(
                settings.broker.url.clone(),
                topology.clone(),
                ConsumerSpec {
                    queue: Topology::return_queue(&work),
                    prefetch: RETURN_PREFETCH,
                    concurrency: usize::from(RETURN_PREFETCH),
                    tag: format!("waybill-dispatcher-{replica}-return-{work}"),
                },
            )
            // A return queue has nowhere to dead-letter to: its messages wait for the broker.
            .retrying_without_limit();
            let returner = Arc::new(Returner {
                broker: broker.clone(),
                work_queue: work,
            });
            service.spawn(move |stop| async move { back.run(returner, stop).await });
        }
        let watch = QueueWatch {
            url: settings.broker.url.clone(),
            topology: topology.clone(),
            heads: vec![
                (topology.dispatch_queue(), fanout_consumer.head()),
                (topology.deliveries_queue(), deliver_consumer.head()),
            ],
            metrics: watch_metrics,
        };
        service.spawn(move |stop| watch.run(stop));
        let fanout_loaded = loaded_rx.clone();
        service.spawn(move |stop| async move {
            if wait_loaded(fanout_loaded, stop.clone()).await {
                fanout_consumer
                    .run(
                        Arc::new(Budgeted::new(fanout, FANOUT_BUDGET_BYTES / 1024)),
                        stop,
                    )
                    .await;
            }
        });
        service.spawn(move |stop| async move {
            if wait_loaded(loaded_rx, stop.clone()).await {
                deliver_consumer
                    .run(
                        Arc::new(Budgeted::new(deliver, DELIVERY_BUDGET_BYTES / 1024)),
                        stop,
                    )
                    .await;
            }
        });
        Ok(service)
    }
}

/// Waits until the index is loaded (true) or the service stops (false).
async fn wait_loaded(mut loaded: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) -> bool {
    tokio::select! {
        r = loaded.wait_for(|l| *l) => r.is_ok(),
        _ = stop.changed() => false,
    }
}
