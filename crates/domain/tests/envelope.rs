//! Whatever ingest accepts, the dispatcher accepts unchanged: over generated events (times
//! across everything chrono reads, any offset, leap seconds; ids and client ids of odd
//! characters, NULs and control characters; nested data with NULs, floats and large numbers),
//! every envelope `EventInput::into_envelope` builds passes `EventEnvelope::from_wire` once
//! written to the broker, and comes back equal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};
use waybill_domain::{
    TenantId, ValidationErrors,
    envelope::InvalidEnvelope,
    event::{EventEnvelope, EventInput, MAX_ENVELOPE_BYTES, MAX_EVENT_BYTES},
};

/// An RFC 3339-looking time: any year chrono's reader takes (and the edges of the range),
/// days past a month's end, second 60, 0–12 fraction digits, any separator and offset.
fn rfc3339ish() -> impl Strategy<Value = String> {
    let year = prop_oneof![0..=2i32, 9997..=9999i32, 0..=9999i32];
    let offset = prop_oneof![
        Just("Z".to_owned()),
        Just("z".to_owned()),
        (prop::bool::ANY, 0..=24u32, 0..=60u32)
            .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
    ];
    (
        year,
        1..=12u32,
        1..=31u32,
        (0..=23u32, 0..=59u32, 0..=60u32),
        "[0-9]{0,12}",
        prop::sample::select(vec!['T', 't', ' ']),
        offset,
    )
        .prop_map(|(y, mo, d, (h, mi, s), frac, sep, off)| {
            let frac = if frac.is_empty() {
                String::new()
            } else {
                format!(".{frac}")
            };
            format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

/// Strings of every kind the rules care about: allowed characters, other ASCII, control
/// characters, NULs, wide characters, and lengths around 128.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._:-]{1,130}",
        "[A-Za-z0-9._:-]{126,129}",
        "\\PC{0,8}",
        ".{0,140}",
        "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}a]{1,4}",
        "[é漢😀]{120,130}",
        Just(String::new()),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(odd_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn data() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(odd_string(), json_value(), 0..4)
        .prop_map(|m| m.into_iter().collect())
}

/// When ingest takes the event in: any time, not only now, so the rules are tried on the
/// edges of the range too.
fn received_at() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        Just(Utc::now()),
        (-62_135_596_800i64..=253_402_300_799i64, 0..2_000_000_000u32)
            .prop_filter_map("a time chrono holds", |(s, n)| DateTime::from_timestamp(
                s, n
            )),
    ]
}

fn input() -> impl Strategy<Value = EventInput> {
    // Mostly well-formed fields, so that most cases reach the dispatcher's side.
    let id = prop_oneof![3 => "[A-Za-z0-9._:-]{1,128}", 1 => odd_string()];
    let client_id = prop_oneof![3 => "\\PC{1,40}", 1 => odd_string()];
    let occurred_at = prop_oneof![4 => rfc3339ish(), 1 => odd_string()];
    (
        prop::option::of(id),
        prop::option::of(client_id),
        prop::option::of(occurred_at),
        data(),
    )
        .prop_map(|(id, client_id, occurred_at, data)| EventInput {
            kind: "order.shipped".to_owned(),
            data,
            client_id,
            id,
            occurred_at,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn what_ingest_accepts_the_dispatcher_reads_back_unchanged(
        input in input(),
        received_at in received_at(),
    ) {
        let tenant = TenantId::parse("acme.eu-1").unwrap();
        // The event as ingest measures it: the fields the publisher sent, written compactly.
        let mut sent = Map::new();
        sent.insert("type".into(), Value::from(input.kind.clone()));
        sent.insert("data".into(), Value::Object(input.data.clone()));
        for (k, v) in [("client_id", &input.client_id), ("id", &input.id), ("occurred_at", &input.occurred_at)] {
            if let Some(v) = v {
                sent.insert(k.into(), Value::from(v.clone()));
            }
        }
        let sent_bytes = serde_json::to_vec(&sent).unwrap().len();
        let mut errors = ValidationErrors::new();
        let accepted = input.into_envelope(
            &tenant,
            received_at,
            || "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".to_owned(),
            "",
            &mut errors,
        );
        if let Some(envelope) = accepted {
            prop_assert!(errors.is_empty(), "accepted with errors: {errors}");
            let wire = serde_json::to_vec(&envelope).unwrap();
            match EventEnvelope::from_wire(&wire) {
                Ok(read) => prop_assert_eq!(&read, &envelope),
                Err(e) => prop_assert!(false, "the dispatcher refuses {}: {e}", String::from_utf8_lossy(&wire)),
            }
            prop_assert!(
                wire.len() <= sent_bytes + (MAX_ENVELOPE_BYTES - MAX_EVENT_BYTES),
                "the envelope outgrew the event by more than the margin"
            );
        } else {
            prop_assert!(!errors.is_empty(), "refused without saying why");
        }
    }

    /// The dispatcher's reading is stable: an envelope it accepts, written again, reads back
    /// the same (what a redrive or a second dispatcher sees).
    #[test]
    fn the_dispatchers_reading_is_a_fixed_point(
        id in odd_string(),
        client_id in prop::option::of(odd_string()),
        occurred_at in rfc3339ish(),
        received_at in received_at(),
        data in data(),
    ) {
        let body = serde_json::json!({
            "id": id, "tenant": "acme", "type": "stock.updated", "client_id": client_id,
            "occurred_at": occurred_at, "received_at": received_at, "data": data,
        });
        match EventEnvelope::from_wire(body.to_string().as_bytes()) {
            Ok(read) => {
                let again = EventEnvelope::from_wire(&serde_json::to_vec(&read).unwrap());
                prop_assert_eq!(again.ok(), Some(read));
            }
            Err(InvalidEnvelope::Broken(errors)) => prop_assert!(!errors.is_empty()),
            Err(InvalidEnvelope::Malformed(_)) => {}
        }
    }
}

#[test]
fn times_ingest_once_took_are_refused_on_both_sides() {
    let tenant = TenantId::parse("acme").unwrap();
    for raw in ["9999-12-31T23:30:00-01:00", "0000-06-01T00:00:00Z"] {
        let input = EventInput {
            kind: "order.shipped".into(),
            data: Map::new(),
            client_id: None,
            id: Some("e-1".into()),
            occurred_at: Some(raw.into()),
        };
        let mut errors = ValidationErrors::new();
        assert!(
            input
                .into_envelope(&tenant, Utc::now(), || unreachable!(), "", &mut errors)
                .is_none()
        );
        assert_eq!(
            errors.fields()["occurred_at"],
            ["must be within years 1 to 9999 (in UTC)"]
        );
    }
}
