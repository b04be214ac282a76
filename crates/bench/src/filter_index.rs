//! `waybill-bench filter-index`: the dispatcher's matching with payload filters, in process (no
//! service, database or broker): the index's `matching_event` as the fan-out calls it, body view
//! and all.
//!
//! - **typical**: 100,000 subscriptions, 10,000 of them in the event's tenant and type, each
//!   with a filter of 5 conditions drawn from what a WMS customer writes (warehouses, owner,
//!   status, priority, destination country, SKU prefix, quantities, order number, dates); a
//!   share of them match each event. Many different events are timed.
//! - **worst**: the same 10,000, each filter built from the timed event's own values so every
//!   condition holds: no condition can be skipped, and all 10,000 match.
//! - **hostile**: filters at the limits (nesting depth, conditions, `$in` values, regexes of
//!   256 characters built to backtrack) against events of 1 KiB to 256 KiB with nested arrays,
//!   where only the last element of each array can satisfy a condition, so every element is
//!   looked at. The figure to read is the time per KiB: flat means linear in the event's size.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Map, Value, json};
use waybill_dispatcher::index::{Index, Target};
use waybill_domain::{
    EventTypeName, TenantId, WebhookId,
    change::{AuthSnapshot, SubscriptionSnapshot},
    event::EventEnvelope,
    filter::{Body, Filter},
};
use waybill_store::Cipher;

use crate::stats::Summary;

pub struct Params {
    /// Subscriptions with filters in the event's tenant and type.
    pub filtered: u32,
    /// Different events timed in the typical case.
    pub events: u32,
    /// Timed rounds over them.
    pub rounds: u32,
    pub json: Option<PathBuf>,
}

/// Subscriptions in the index.
const SUBSCRIPTIONS: u32 = 100_000;
/// Conditions per filter.
const CONDITIONS: usize = 5;
const TENANT: &str = "acme";
const TYPE: &str = "order.created";
/// Sizes of the hostile events, in KiB.
const HOSTILE_KIB: [usize; 5] = [1, 4, 16, 64, 256];

/// A small deterministic generator (SplitMix64), so every run builds the same index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }

    /// `k` distinct items of `from`.
    fn some<T: Clone>(&mut self, from: &[T], k: usize) -> Vec<T> {
        let mut idx: Vec<usize> = (0..from.len()).collect();
        for i in 0..k.min(idx.len()) {
            let j = i + self.below(idx.len() - i);
            idx.swap(i, j);
        }
        idx[..k.min(from.len())]
            .iter()
            .map(|&i| from[i].clone())
            .collect()
    }

    /// `min` to `min + spread - 1` distinct items of `from`.
    fn some_of<T: Clone>(&mut self, from: &[T], min: usize, spread: usize) -> Vec<T> {
        let k = min + self.below(spread);
        self.some(from, k)
    }
}

const WAREHOUSES: [&str; 12] = [
    "wh_rtm_01",
    "wh_rtm_02",
    "wh_ams_01",
    "wh_ber_01",
    "wh_ham_01",
    "wh_par_01",
    "wh_lyo_01",
    "wh_mil_01",
    "wh_mad_01",
    "wh_waw_01",
    "wh_prg_01",
    "wh_vie_01",
];
const STATUSES: [&str; 5] = [
    "created",
    "on_hold",
    "allocated",
    "partially_allocated",
    "picking",
];
const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
const COUNTRIES: [&str; 15] = [
    "NL", "DE", "FR", "BE", "DK", "SE", "PL", "CZ", "AT", "IT", "ES", "PT", "IE", "GB", "US",
];
const SKU_PREFIXES: [&str; 6] = ["TSH-", "MUG-", "BAG-", "SHO-", "CAP-", "SOC-"];
const METHODS: [&str; 4] = ["standard_parcel", "express_parcel", "pallet", "pickup"];

fn owner(i: usize) -> String {
    format!("OWN-{}", 1000 + i)
}

/// An `order.created` as a WMS sends it, about 1 KiB.
fn order_data(rng: &mut Rng, n: usize) -> Map<String, Value> {
    let lines: Vec<Value> = (0..1 + rng.below(8))
        .map(|i| {
            json!({
                "line_number": i + 1,
                "sku": format!("{}{:03}", rng.pick(&SKU_PREFIXES), rng.below(50)),
                "product_name": "Product name of some length",
                "quantity": 1 + rng.below(20),
            })
        })
        .collect();
    let data = json!({
        "order_id": format!("ord_{n:08x}"),
        "order_number": format!("SO-2026-{:06}", rng.below(1_000_000)),
        "warehouse_id": rng.pick(&WAREHOUSES),
        "owner_code": owner(rng.below(20)),
        "status": rng.pick(&STATUSES),
        "priority": rng.pick(&PRIORITIES),
        "lines": lines,
        "created_at": format!("2026-{:02}-{:02}T10:30:00Z", 1 + rng.below(12), 1 + rng.below(28)),
        "shipping_method": rng.pick(&METHODS),
        "ship_to": {
            "name": "Maria Jensen",
            "line1": "Kanalvej 14",
            "city": "Aarhus",
            "postal_code": "8000",
            "country_code": rng.pick(&COUNTRIES),
        },
    });
    match data {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn envelope(id: String, data: Map<String, Value>) -> anyhow::Result<EventEnvelope> {
    let now = chrono::Utc::now();
    Ok(EventEnvelope {
        id,
        tenant: TenantId::parse(TENANT).map_err(anyhow::Error::msg)?,
        kind: EventTypeName::parse(TYPE).map_err(anyhow::Error::msg)?,
        client_id: None,
        occurred_at: now,
        received_at: now,
        data,
    })
}

/// One condition a customer might write, as (path, value). Several of the same path cannot
/// share an object, so the generator never draws a kind twice for one filter.
fn typical_condition(rng: &mut Rng, kind: usize) -> (String, Value) {
    match kind {
        0 => (
            "data.warehouse_id".into(),
            json!({"$in": rng.some_of(&WAREHOUSES, 4, 5)}),
        ),
        1 => (
            "data.owner_code".into(),
            json!({"$neq": owner(rng.below(20))}),
        ),
        2 => (
            "data.status".into(),
            json!({"$in": rng.some_of(&STATUSES, 2, 3)}),
        ),
        3 => (
            "data.priority".into(),
            json!({"$nin": rng.some(&PRIORITIES, 1)}),
        ),
        4 => (
            "data.ship_to.country_code".into(),
            json!({"$in": rng.some_of(&COUNTRIES, 6, 8)}),
        ),
        5 => (
            "data.lines.sku".into(),
            json!({"$startsWith": rng.pick(&SKU_PREFIXES)}),
        ),
        6 => (
            "data.lines.quantity".into(),
            json!({"$gte": 1 + rng.below(10)}),
        ),
        7 => (
            "data.order_number".into(),
            json!({"$regex": format!("^SO-2026-[0-{}]", 4 + rng.below(6))}),
        ),
        8 => (
            "data.created_at".into(),
            json!({"$gte": format!("2026-{:02}-01T00:00:00Z", 1 + rng.below(6))}),
        ),
        _ => (
            "data.shipping_method".into(),
            json!({"$in": rng.some_of(&METHODS, 2, 2)}),
        ),
    }
}

fn typical_filter(rng: &mut Rng) -> Value {
    let kinds = rng.some(&(0..10).collect::<Vec<usize>>(), CONDITIONS);
    let mut m = Map::new();
    for k in kinds {
        let (path, value) = typical_condition(rng, k);
        m.insert(path, value);
    }
    Value::Object(m)
}

/// Five conditions that all hold for `data`, with the operators the typical ones use.
fn matching_filter(rng: &mut Rng, data: &Map<String, Value>) -> Value {
    let s = |k: &str| data.get(k).cloned().unwrap_or(Value::Null);
    let country = data
        .get("ship_to")
        .and_then(|t| t.get("country_code"))
        .cloned()
        .unwrap_or(Value::Null);
    let last_sku = data
        .get("lines")
        .and_then(Value::as_array)
        .and_then(|l| l.last())
        .and_then(|l| l.get("sku"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut warehouses = rng.some(&WAREHOUSES, 5);
    warehouses.retain(|w| *w != s("warehouse_id"));
    let mut wh: Vec<Value> = warehouses.into_iter().map(Value::from).collect();
    wh.push(s("warehouse_id"));
    let mut countries: Vec<Value> = rng
        .some(&COUNTRIES, 8)
        .into_iter()
        .map(Value::from)
        .collect();
    countries.push(country);
    json!({
        "data.warehouse_id": {"$in": wh},
        "data.owner_code": s("owner_code"),
        "data.ship_to.country_code": {"$in": countries},
        // The last line's: every line is looked at before it holds.
        "data.lines.sku": {"$endsWith": last_sku[last_sku.len().saturating_sub(3)..].to_owned()},
        "data.created_at": {"$lte": s("created_at")},
    })
}

/// A subscription as the index holds it: no credentials, so nothing to decrypt.
fn target(
    cipher: &Cipher,
    n: u32,
    tenant: &str,
    events: &[&str],
    filter: Option<Value>,
) -> anyhow::Result<Target> {
    let id = WebhookId::from_uuid(uuid::Uuid::from_u128(u128::from(n) + 1));
    let s = SubscriptionSnapshot {
        id,
        tenant: tenant.into(),
        url: format!("https://hooks.example.com/{n}"),
        method: "POST".into(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
        client_ids: vec![],
        headers: Default::default(),
        auth: AuthSnapshot {
            kind: "none".into(),
            username: None,
            header: None,
            credential_encrypted: None,
        },
        secrets: vec![],
        active: true,
        disabled_reason: None,
        rate_limit: None,
        filter,
        revision: 1,
    };
    Target::from_snapshot(&s, cipher).with_context(|| format!("subscription {n}"))
}

/// 100,000 subscriptions: `filters.len()` in (acme, order.created) with these filters, the rest
/// over 999 other tenants and, in acme, other types.
fn build_index(cipher: &Cipher, filters: Vec<Value>) -> anyhow::Result<Index> {
    let index = Index::default();
    let patterns = [TYPE, TYPE, TYPE, "order.*", "*"];
    let mut n = 0;
    for (i, f) in filters.into_iter().enumerate() {
        index.upsert(target(
            cipher,
            n,
            TENANT,
            &[patterns[i % patterns.len()]],
            Some(f),
        )?);
        n += 1;
    }
    let others = [
        "order.created",
        "order.*",
        "stock.updated",
        "shipment.*",
        "*",
    ];
    let acme_other = ["stock.updated", "shipment.*", "inbound.created", "return.*"];
    while n < SUBSCRIPTIONS {
        let i = n as usize;
        let t = if n % 10 == 0 {
            target(cipher, n, TENANT, &[acme_other[i % acme_other.len()]], None)?
        } else {
            let tenant = format!("t{:04}", 1 + n % 999);
            target(cipher, n, &tenant, &[others[i % others.len()]], None)?
        };
        index.upsert(t);
        n += 1;
    }
    Ok(index)
}

#[derive(Serialize)]
struct Case {
    /// Subscriptions whose tenant and type matched, each with a filter.
    candidates: usize,
    /// Conditions per filter, as the filter counts them.
    conditions_per_filter: f64,
    /// Share of the candidates each event went to.
    matched_share: f64,
    /// Per event: the whole `matching_event`.
    per_event: Summary,
    /// Its mean, in microseconds.
    mean_us: f64,
    /// Mean time per condition, as if each were evaluated.
    ns_per_condition: f64,
}

fn time_events(index: &Index, events: &[EventEnvelope], rounds: u32) -> (Summary, f64, f64) {
    let mut samples = Vec::with_capacity(events.len() * rounds as usize);
    let mut matched = 0usize;
    // Warm-up: caches, and the allocator's free lists.
    for e in events.iter().take(100) {
        std::hint::black_box(index.matching_event(e));
    }
    for _ in 0..rounds {
        for e in events {
            let started = Instant::now();
            let m = index.matching_event(e);
            samples.push(started.elapsed());
            matched += m.targets.len();
            std::hint::black_box(m);
        }
    }
    let n = samples.len().max(1);
    let mean_us = mean_us(&samples);
    (
        Summary::of(&mut samples),
        matched as f64 / n as f64,
        mean_us,
    )
}

/// The mean of `samples` in microseconds, unrounded.
fn mean_us(samples: &[Duration]) -> f64 {
    let total: Duration = samples.iter().sum();
    total.as_secs_f64() * 1e6 / samples.len().max(1) as f64
}

fn case(
    index: &Index,
    events: &[EventEnvelope],
    rounds: u32,
    conditions: f64,
) -> anyhow::Result<Case> {
    let first = events.first().context("no event")?;
    let m = index.matching_event(first);
    let candidates = m.targets.len() + m.filtered_out;
    let (per_event, matched, mean_us) = time_events(index, events, rounds);
    let ns_per_condition = mean_us * 1e3 / (candidates as f64 * conditions).max(1.0);
    Ok(Case {
        candidates,
        conditions_per_filter: conditions,
        matched_share: round2(matched / candidates.max(1) as f64),
        per_event,
        mean_us: round2(mean_us),
        ns_per_condition: (ns_per_condition * 10.0).round() / 10.0,
    })
}

/// Parses what `build(n)` gives for `n` from `start` down, the first one the parser accepts;
/// returns it, the `n` used and, when `start` was refused, why.
fn at_limit(
    start: usize,
    build: impl Fn(usize) -> Value,
) -> anyhow::Result<(Filter, usize, Option<String>)> {
    let mut refused = None;
    for n in (1..=start).rev() {
        match Filter::parse(&build(n)) {
            Ok(f) => return Ok((f, n, refused)),
            Err(e) => {
                if refused.is_none() {
                    refused = Some(e.to_string());
                }
            }
        }
    }
    anyhow::bail!(
        "no size of this filter parses: {}",
        refused.unwrap_or_default()
    )
}

/// A regex of `chars` characters: `unit` repeated, then `tail`.
fn regex_of(unit: &str, tail: &str, chars: usize) -> String {
    let mut r = String::new();
    while r.len() + unit.len() + tail.len() <= chars {
        r.push_str(unit);
    }
    while r.len() + tail.len() < chars {
        r.push('.');
    }
    r.push_str(tail);
    r
}

/// The marker only the last element of each array carries.
const LAST: &str = "ZZ-LAST";

/// A hostile event of about `kib` KiB: order lines, each with nested arrays of parcels and
/// serials and long runs of the characters the regexes backtrack on; only the last line holds
/// the values the hostile filters look for.
fn hostile_data(kib: usize) -> Map<String, Value> {
    let line = |i: usize, last: bool| {
        json!({
            "line_number": i + 1,
            "sku": if last { format!("SKU-{LAST}") } else { format!("SKU-{i:05}") },
            "quantity": if last { 1000 } else { 1 + i % 20 },
            "note": format!("{}{}", "a".repeat(60), if last { LAST } else { "b" }),
            "parcels": [
                {"label": "x".repeat(40), "serials": [["=".repeat(30), "y".repeat(10)], []]},
                {"label": if last { LAST.to_owned() } else { "x".repeat(39) + "z" }, "serials": [[1, 2, 3]]},
            ],
        })
    };
    let one = serde_json::to_vec(&line(0, false)).map_or(400, |v| v.len());
    let n = (kib * 1024 / one).max(1);
    let mut lines: Vec<Value> = (0..n.saturating_sub(1)).map(|i| line(i, false)).collect();
    lines.push(line(n.saturating_sub(1), true));
    let mut data = Map::new();
    data.insert("order_id".into(), json!("ord_hostile"));
    data.insert("order_number".into(), json!("SO-2026-000001"));
    data.insert("warehouse_id".into(), json!("wh_rtm_01"));
    data.insert("owner_code".into(), json!("OWN-1042"));
    data.insert("status".into(), json!("created"));
    data.insert("created_at".into(), json!("2026-01-10T10:30:00Z"));
    data.insert("lines".into(), Value::Array(lines));
    data
}

#[derive(Serialize)]
struct HostileFilter {
    name: String,
    /// The limit reached (depth, conditions, values or regex characters).
    size: usize,
    conditions: usize,
    /// Why the parser refused the next size up, when the limit itself was refused.
    refused: Option<String>,
}

#[derive(Serialize)]
struct HostileSize {
    kib: usize,
    bytes: usize,
    /// Every hostile filter on one event, through the index.
    per_event: Summary,
    us_per_kib: f64,
    /// Each filter alone: mean microseconds per KiB.
    per_filter_us_per_kib: Vec<(String, f64)>,
}

#[derive(Serialize)]
struct Hostile {
    filters: Vec<HostileFilter>,
    sizes: Vec<HostileSize>,
    /// Time per KiB at the largest size over time per KiB at 16 KiB (1.0: linear).
    growth_256_over_16: f64,
}

fn hostile_filters() -> anyhow::Result<Vec<(String, Filter, HostileFilter)>> {
    let mut out = Vec::new();
    let mut add = |name: &str, (f, size, refused): (Filter, usize, Option<String>)| {
        let conditions = f.conditions();
        out.push((
            name.to_owned(),
            f,
            HostileFilter {
                name: name.to_owned(),
                size,
                conditions,
                refused,
            },
        ));
    };
    // Nesting: $and / $not alternating down to one condition on the last line's note.
    add(
        "depth",
        at_limit(waybill_domain::filter::MAX_DEPTH, |depth| {
            // Each level one combinator, its other branch on another path of every line.
            let mut f = json!({"data.lines.note": {"$endsWith": LAST}});
            for level in 1..depth {
                f = if level % 2 == 1 {
                    json!({"$and": [{"data.lines.sku": {"$startsWith": "SKU-"}}, f]})
                } else {
                    json!({"$or": [{"data.lines.quantity": {"$gt": 100_000}}, f]})
                };
            }
            f
        })?,
    );
    // Conditions: branches of four any-element conditions only the last line satisfies.
    add(
        "conditions",
        at_limit(waybill_domain::filter::MAX_CONDITIONS / 4, |branches| {
            let branch = json!({
                "data.lines.sku": {"$endsWith": LAST},
                "data.lines.quantity": {"$gte": 1000},
                "data.lines.parcels.label": {"$contains": LAST},
                "data.lines.note": {"$endsWith": LAST},
            });
            json!({"$and": vec![branch; branches]})
        })?,
    );
    // A set of the most values, none but the last line's SKU among them.
    add(
        "in-set",
        at_limit(waybill_domain::filter::MAX_SET_VALUES, |n| {
            let mut values: Vec<Value> = (0..n.saturating_sub(1))
                .map(|i| json!(format!("SKU-X{i:05}")))
                .collect();
            values.push(json!(format!("SKU-{LAST}")));
            json!({"data.lines.sku": {"$in": values}})
        })?,
    );
    let max = waybill_domain::filter::MAX_REGEX_CHARS;
    for (name, path, unit, tail) in [
        ("regex (a|aa)*$", "data.lines.note", "(a|aa)*", "$"),
        ("regex (x+x+)+y", "data.lines.parcels.label", "(x+x+)+", "y"),
        (
            "regex .*.*.*=.*",
            "data.lines.parcels.serials",
            ".*.*.*=",
            ".*",
        ),
    ] {
        add(
            name,
            at_limit(
                max,
                |chars| json!({path: {"$regex": regex_of(unit, tail, chars)}}),
            )?,
        );
    }
    Ok(out)
}

fn hostile(cipher: &Cipher) -> anyhow::Result<Hostile> {
    let filters = hostile_filters()?;
    let index = Index::default();
    for (i, (_, f, _)) in filters.iter().enumerate() {
        index.upsert(target(
            cipher,
            i as u32,
            TENANT,
            &[TYPE],
            Some(f.as_json().clone()),
        )?);
    }
    let mut sizes = Vec::new();
    for kib in HOSTILE_KIB {
        let event = envelope(format!("hostile-{kib}"), hostile_data(kib))?;
        let bytes = serde_json::to_vec(&event.data)?.len();
        // About a second per size, at least 20 samples.
        let budget = Duration::from_millis(800);
        let mut samples = Vec::new();
        let started = Instant::now();
        while samples.len() < 20 || started.elapsed() < budget {
            let t = Instant::now();
            std::hint::black_box(index.matching_event(&event));
            samples.push(t.elapsed());
            if samples.len() >= 100_000 {
                break;
            }
        }
        let body = Body::of(&event);
        let mut per_filter = Vec::new();
        for (name, f, _) in &filters {
            let runs = samples.len().clamp(20, 10_000);
            let t = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(f.matches(&body));
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / runs as f64;
            per_filter.push((name.clone(), round2(us / (bytes as f64 / 1024.0))));
        }
        let us_per_kib = round2(mean_us(&samples) / (bytes as f64 / 1024.0));
        let per_event = Summary::of(&mut samples);
        sizes.push(HostileSize {
            kib,
            bytes,
            us_per_kib,
            per_event,
            per_filter_us_per_kib: per_filter,
        });
    }
    let at = |kib: usize| {
        sizes
            .iter()
            .find(|s| s.kib == kib)
            .map_or(0.0, |s| s.us_per_kib)
    };
    let growth = at(256) / at(16).max(f64::MIN_POSITIVE);
    Ok(Hostile {
        filters: filters.into_iter().map(|(_, _, h)| h).collect(),
        sizes,
        growth_256_over_16: round2(growth),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn run(p: Params) -> anyhow::Result<()> {
    let cipher = Cipher::new(&[7; 32])?;
    let mut rng = Rng(0x5EED);
    let events: Vec<EventEnvelope> = (0..p.events.max(1) as usize)
        .map(|i| {
            let data = order_data(&mut rng, i);
            envelope(format!("ev-{i}"), data)
        })
        .collect::<anyhow::Result<_>>()?;

    let built = Instant::now();
    let filters: Vec<Value> = (0..p.filtered).map(|_| typical_filter(&mut rng)).collect();
    let conditions = mean_conditions(&filters)?;
    let index = build_index(&cipher, filters)?;
    println!(
        "filter-index: {} subscriptions indexed in {:.1} s",
        index.len(),
        built.elapsed().as_secs_f64()
    );
    let typical = case(&index, &events, p.rounds, conditions)?;
    print_case("typical", &typical);
    drop(index);

    // Every filter made for one event: each of its conditions must be evaluated.
    let worst_events: Vec<EventEnvelope> = events.iter().take(1).cloned().collect();
    let data = worst_events
        .first()
        .map(|e| e.data.clone())
        .context("no event")?;
    let filters: Vec<Value> = (0..p.filtered)
        .map(|_| matching_filter(&mut rng, &data))
        .collect();
    let conditions = mean_conditions(&filters)?;
    let index = build_index(&cipher, filters)?;
    let worst = case(
        &index,
        &worst_events,
        (p.rounds * p.events / 10).max(50),
        conditions,
    )?;
    print_case("worst", &worst);
    drop(index);

    let hostile = hostile(&cipher)?;
    for f in &hostile.filters {
        println!(
            "hostile filter {:<18} size={:<4} conditions={:<3} {}",
            f.name,
            f.size,
            f.conditions,
            f.refused
                .as_deref()
                .map(|r| format!("(the next size up refused: {r})"))
                .unwrap_or_default()
        );
    }
    for s in &hostile.sizes {
        println!(
            "{}  {:>8.2} us/KiB  per filter: {}",
            s.per_event.line(&format!("hostile {} KiB", s.kib)),
            s.us_per_kib,
            s.per_filter_us_per_kib
                .iter()
                .map(|(n, us)| format!("{n} {us}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "hostile: time per KiB at 256 KiB / at 16 KiB = {}",
        hostile.growth_256_over_16
    );

    let doc = json!({
        "subscriptions": SUBSCRIPTIONS,
        "filtered": p.filtered,
        "typical": typical,
        "worst": worst,
        "hostile": hostile,
    });
    if let Some(path) = p.json {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
        println!("results written to {}", path.display());
    }
    Ok(())
}

fn mean_conditions(filters: &[Value]) -> anyhow::Result<f64> {
    let mut total = 0;
    for f in filters {
        total += Filter::parse(f)
            .map_err(|e| anyhow::anyhow!("a generated filter does not parse: {e}: {f}"))?
            .conditions();
    }
    Ok(total as f64 / filters.len().max(1) as f64)
}

fn print_case(name: &str, c: &Case) {
    println!(
        "{}  mean={:.3} ms  candidates={} matched={:.1}%  {:.1} ns/condition",
        c.per_event.line(name),
        c.mean_us / 1000.0,
        c.candidates,
        c.matched_share * 100.0,
        c.ns_per_condition
    );
}
