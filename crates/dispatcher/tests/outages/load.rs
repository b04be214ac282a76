//! What every outage test does around its fault: the api, a dispatcher and the ingest on the
//! servers the test chose, one subscription to a receiver that always answers 200, events
//! published through the ingest over HTTP without pause, and at the end the check that every
//! event answered 202 reached the receiver, with duplicates only around the fault and no
//! delivery left pending.

use std::{
    collections::HashMap,
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::{QueryableByName, sql_query, sql_types::BigInt};
use serde_json::json;
use tokio::task::JoinHandle;
use waybill_runtime::Settings;
use waybill_testkit::{Receiver, Stack, eventually, example_data};

/// The event type every test publishes.
const KIND: &str = "order.created";

/// The services of one outage test and its receiver.
pub struct Outage {
    pub stack: Stack,
    pub rx: Receiver,
    ingest: String,
}

impl Outage {
    /// Starts the api and one dispatcher with `tweak`ed settings (pointing them at the test's
    /// servers), subscribes the receiver, waits until the dispatcher has indexed it, and starts
    /// the ingest.
    pub async fn start(tweak: impl FnOnce(&mut Settings)) -> Outage {
        let stack = Stack::builder()
            .settings(tweak)
            .with_api(waybill_api::Application::build)
            .with_dispatchers(waybill_dispatcher::Application::build, 1)
            .start()
            .await;
        // The services' own logs, when asked for (`RUST_LOG=warn`, with `--nocapture`).
        if std::env::var_os("RUST_LOG").is_some() {
            waybill_runtime::telemetry::init("outages", &stack.settings.log);
        }
        let rx = Receiver::start().await;
        let body = json!({"url": rx.url("/hook"), "events": ["order.*"]});
        stack
            .post("/v1/webhooks", &stack.acme(), body)
            .await
            .assert(201);
        let dispatcher = stack.dispatchers[0];
        let indexed = eventually(Duration::from_secs(30), || async {
            let n = stack
                .metric(dispatcher, "waybill_dispatcher_index_subscriptions", "")
                .await;
            (n >= 1.0).then_some(())
        })
        .await;
        assert!(
            indexed.is_some(),
            "the dispatcher never indexed the subscription"
        );
        let port = stack
            .run(waybill_ingest::Application::build, stack.settings.clone())
            .await;
        Outage {
            stack,
            rx,
            ingest: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts publishing events through the ingest, one request at a time, until stopped.
    pub fn publish(&self) -> Load {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let url = format!("{}/v1/events", self.ingest);
        let token = self.stack.publisher();
        let last_refusal = Arc::new(Mutex::new(String::new()));
        let task = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            let last_refusal = last_refusal.clone();
            tokio::spawn(async move {
                let mut refused = 0usize;
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("ev-{n}");
                    n += 1;
                    let sent = Instant::now();
                    let body = json!({"type": KIND, "id": id, "data": example_data(KIND)});
                    let res = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 202 => lock(&accepted).push((id, sent)),
                        // Not accepted (503 while a dependency is away, or no answer): the
                        // publisher's to retry; the test counts it as not owed.
                        other => {
                            refused += 1;
                            let why = match other {
                                Ok(r) => format!(
                                    "{}: {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                ),
                                Err(e) => e.to_string(),
                            };
                            *lock(&last_refusal) = why;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
                refused
            })
        };
        Load {
            accepted,
            stop,
            last_refusal,
            task,
        }
    }

    /// Waits until the receiver has every event `load` got a 202 for and no delivery is left
    /// pending; asserts duplicates only for events accepted within `margin` of `fault`; prints
    /// and records the report line under `name`.
    pub async fn verify(
        &self,
        name: &str,
        load: Load,
        fault: (Instant, Instant),
        margin: Duration,
    ) {
        let (accepted, refused) = load.finish().await;
        assert!(!accepted.is_empty(), "{name}: no event was accepted");
        let owed: HashMap<&str, Instant> =
            accepted.iter().map(|(id, t)| (id.as_str(), *t)).collect();
        let all = eventually(Duration::from_secs(120), || async {
            let seen = self.arrivals();
            owed.keys().all(|id| seen.contains_key(*id)).then_some(())
        })
        .await;
        let seen = self.arrivals();
        if all.is_none() {
            let mut missing: Vec<&str> = owed
                .keys()
                .filter(|id| !seen.contains_key(**id))
                .copied()
                .collect();
            missing.sort_by_key(|id| owed[id]);
            panic!(
                "{name}: {} of {} accepted events never reached the receiver: {:?}",
                missing.len(),
                owed.len(),
                &missing[..missing.len().min(20)]
            );
        }
        let pending = eventually(Duration::from_secs(60), || async {
            (self.pending().await == 0).then_some(())
        })
        .await;
        assert!(
            pending.is_some(),
            "{name}: {} deliveries still pending",
            self.pending().await
        );
        let seen = self.arrivals();
        let delivered = owed.keys().filter(|id| seen.contains_key(**id)).count();
        let duplicates: usize = seen.values().map(|c| c.saturating_sub(1)).sum();
        let (from, to) = (fault.0 - margin, fault.1 + margin);
        let outside: Vec<&str> = seen
            .iter()
            .filter(|(_, c)| **c > 1)
            .filter_map(|(id, _)| owed.get_key_value(id.as_str()))
            .filter(|(_, t)| **t < from || **t > to)
            .map(|(id, _)| *id)
            .collect();
        let line = format!(
            "{name}: accepted={} delivered={delivered} duplicates={duplicates} (refused {refused}, fault {:.1} s)",
            owed.len(),
            (fault.1 - fault.0).as_secs_f64()
        );
        report(&line);
        assert!(
            outside.is_empty(),
            "{name}: duplicates of events accepted away from the fault: {outside:?}"
        );
        assert_eq!(delivered, owed.len());
    }

    /// How many requests the receiver got per `webhook-id` (the event id: one subscription).
    fn arrivals(&self) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for r in self.rx.received() {
            if let Some(id) = r.header("webhook-id") {
                *seen.entry(id.to_owned()).or_insert(0) += 1;
            }
        }
        seen
    }

    /// Delivery rows still `pending`.
    async fn pending(&self) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        use diesel_async::RunQueryDsl;
        let mut conn = self.stack.sql().await;
        let rows: Vec<Count> =
            sql_query("SELECT count(*) AS n FROM deliveries WHERE status = 'pending'")
                .load(&mut conn)
                .await
                .unwrap();
        rows.iter().map(|c| c.n).sum()
    }
}

/// Events being published; [`Load::finish`] stops it.
pub struct Load {
    accepted: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Arc<AtomicBool>,
    /// Why the last event not accepted was refused.
    last_refusal: Arc<Mutex<String>>,
    task: JoinHandle<usize>,
}

impl Load {
    /// Waits until at least `n` events were accepted (at most two minutes).
    pub async fn until_accepted(&self, n: usize) {
        if let Err(e) = self.try_until_accepted(n).await {
            panic!("{e}");
        }
    }

    /// [`Load::until_accepted`] that says why it gave up instead of failing the test.
    pub async fn try_until_accepted(&self, n: usize) -> Result<(), String> {
        let got = eventually(Duration::from_secs(120), || async {
            (self.accepted_count() >= n).then_some(())
        })
        .await;
        let why = lock(&self.last_refusal).clone();
        got.ok_or_else(|| {
            format!("fewer than {n} events accepted in two minutes; the last refusal: {why}")
        })
    }

    /// How many events have been accepted so far.
    pub fn accepted_count(&self) -> usize {
        lock(&self.accepted).len()
    }

    /// Stops publishing; returns the accepted events with when each was sent, and how many
    /// were not accepted.
    async fn finish(self) -> (Vec<(String, Instant)>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let refused = self.task.await.unwrap();
        let accepted = std::mem::take(&mut *lock(&self.accepted));
        (accepted, refused)
    }
}

/// The value behind `m`, also after a panic elsewhere held it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prints `line` and appends it to `target/outage-report.txt`, where `make test` shows it.
fn report(line: &str) {
    eprintln!("{line}");
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()));
    if let Some(target) = target
        && let Ok(mut f) = std::fs::File::options()
            .create(true)
            .append(true)
            .open(target.join("outage-report.txt"))
    {
        let _ = writeln!(f, "{line}");
    }
}
