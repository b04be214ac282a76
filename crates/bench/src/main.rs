//! `waybill-bench`: measures Waybill against the real Postgres and RabbitMQ of this machine.
//! Every scenario works in a database of its own, dropped at the end.

mod api_roundtrip;
mod cluster;
mod common;
mod delivery_latency;
mod delivery_log;
mod down_receiver;
mod exporter;
mod fanout_memory;
mod filter_index;
mod ingest_throughput;
mod pipeline;
mod scratch;
mod stats;
mod suite;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "waybill-bench", about = "Waybill benchmarks")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Create-then-read round trips of the control plane with many subscriptions in the table.
    ApiRoundtrip {
        /// Subscriptions stored before measuring.
        #[arg(long, default_value_t = 100_000)]
        seed: u32,
        /// Tenants the seeded subscriptions are spread over.
        #[arg(long, default_value_t = 1_000)]
        tenants: u32,
        /// Measured round trips (after 200 unmeasured warm-up ones).
        #[arg(long, default_value_t = 2_000)]
        requests: u32,
        /// Also write the result as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Delivery log reads with millions of attempt rows in the table.
    DeliveryLog {
        /// Attempt rows seeded (two per delivery).
        #[arg(long, default_value_t = 10_000_000)]
        attempts: i64,
        /// Subscriptions the deliveries are spread over (one of them is measured).
        #[arg(long, default_value_t = 1_000)]
        subscriptions: i64,
        /// Measured requests of each kind (after 50 unmeasured ones).
        #[arg(long, default_value_t = 1_000)]
        requests: u32,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// From ingest's 202 to the receiver's request, at a fixed rate, one subscription per event.
    DeliveryLatency {
        /// Events published per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// How long to publish.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The pipeline scenarios against the real service binaries: steady 200/s, maximum
    /// throughput over HTTP and over AMQP, fan-out to 100 subscriptions, a receiver failing 10%,
    /// and 100,000 subscriptions in the index. Writes JSON and a short report.
    Suite {
        /// Seconds of publishing per scenario.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Only these scenarios (comma-separated names).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Run each scenario once per tracing mode, back to back (comma-separated: off, on,
        /// down, hung; default off). `on` exports every span to a local OTLP/HTTP endpoint,
        /// `down` to a closed port, `hung` to one that never answers.
        #[arg(long, value_delimiter = ',', value_enum)]
        tracing: Vec<exporter::Tracing>,
        /// Where the JSON results go.
        #[arg(long, default_value = "target/bench/results.json")]
        json: PathBuf,
    },
    /// Requests a receiver that is down for the whole run still gets, with the circuit breaker.
    DownReceiver {
        /// Events published per second.
        #[arg(long, default_value_t = 20)]
        rate: u32,
        /// How long to publish.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// Failures in a row that open the circuit (a huge value switches the breaker off).
        #[arg(long, default_value_t = 5)]
        threshold: u32,
        /// How long the circuit first stays open.
        #[arg(long, default_value = "30s")]
        cooldown: String,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The dispatcher's peak memory fanning one big event out to many subscriptions and
    /// delivering every copy.
    FanoutMemory {
        /// Subscriptions (all `*`) the event goes to.
        #[arg(long, default_value_t = 2_000)]
        subscriptions: u32,
        /// Size of the event, in KiB.
        #[arg(long, default_value_t = 256)]
        event_kib: u32,
        /// The dispatcher's `delivery.concurrency` (its default when not given).
        #[arg(long)]
        delivery_concurrency: Option<u16>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Matching with payload filters, in process: 100,000 subscriptions of which 10,000 match
    /// the event's type with filters of 5 conditions (typical and worst case), and filters at
    /// the limits against events of 1 KiB to 256 KiB.
    FilterIndex {
        /// Subscriptions in the event's tenant and type, each with a filter (of 100,000).
        #[arg(long, default_value_t = 10_000)]
        filtered: u32,
        /// Different events timed.
        #[arg(long, default_value_t = 1_000)]
        events: u32,
        /// Timed rounds over them.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Events accepted per second by ingest over HTTP, each persistent and broker-confirmed.
    IngestThroughput {
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 64)]
        clients: u32,
        /// How long to publish.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match Cli::parse().scenario {
        Scenario::ApiRoundtrip {
            seed,
            tenants,
            requests,
            json,
        } => {
            api_roundtrip::run(api_roundtrip::Params {
                seed,
                tenants,
                requests,
                json,
            })
            .await
        }
        Scenario::DeliveryLog {
            attempts,
            subscriptions,
            requests,
            json,
        } => {
            delivery_log::run(delivery_log::Params {
                attempts,
                subscriptions,
                requests,
                json,
            })
            .await
        }
        Scenario::DeliveryLatency {
            rate,
            seconds,
            json,
        } => {
            delivery_latency::run(delivery_latency::Params {
                rate,
                seconds,
                json,
            })
            .await
        }
        Scenario::Suite {
            seconds,
            only,
            tracing,
            json,
        } => suite::run(seconds, &only, &tracing, &json).await,
        Scenario::DownReceiver {
            rate,
            seconds,
            threshold,
            cooldown,
            json,
        } => {
            down_receiver::run(down_receiver::Params {
                rate,
                seconds,
                threshold,
                cooldown,
                json,
            })
            .await
        }
        Scenario::FanoutMemory {
            subscriptions,
            event_kib,
            delivery_concurrency,
            json,
        } => {
            fanout_memory::run(fanout_memory::Params {
                subscriptions,
                event_kib,
                delivery_concurrency,
                json,
            })
            .await
        }
        Scenario::FilterIndex {
            filtered,
            events,
            rounds,
            json,
        } => filter_index::run(filter_index::Params {
            filtered,
            events,
            rounds,
            json,
        }),
        Scenario::IngestThroughput {
            clients,
            seconds,
            json,
        } => {
            ingest_throughput::run(ingest_throughput::Params {
                clients,
                seconds,
                json,
            })
            .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waybill-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
