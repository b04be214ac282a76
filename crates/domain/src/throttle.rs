//! The per-subscription rate limit's arithmetic: requests to a limited receiver are spaced
//! `1 / rate` apart, and each takes the next free slot of a line shared by every replica.
//!
//! ```text
//! slot       = max(next_slot, now)      when this request may be sent
//! next_slot' = slot + spacing(rate)     the slot of the request after it
//! ```
//!
//! A receiver idle for a while starts again at `now`: unused slots are not saved up into a
//! burst. Time is passed in; the store applies the rule to the shared row.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The gap between two requests at `rate` per second (a rate of 0 is read as 1).
pub fn spacing(rate: u32) -> Duration {
    Duration::from_secs(1) / rate.max(1)
}

/// One slot taken from a receiver's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// When this request may be sent.
    pub slot: DateTime<Utc>,
    /// The first free slot after it, to store for the next request.
    pub next_slot: DateTime<Utc>,
}

/// Takes the slot after `next_slot` (the stored first free slot; `None`: the receiver was never
/// limited) at `now`, for requests `spacing` apart.
pub fn reserve(
    next_slot: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    spacing: Duration,
) -> Reservation {
    let slot = next_slot.map_or(now, |next| next.max(now));
    let next_slot = TimeDelta::from_std(spacing)
        .ok()
        .and_then(|gap| slot.checked_add_signed(gap))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    Reservation { slot, next_slot }
}

/// How long to wait at `now` for `slot`; zero once it has come.
pub fn wait_for(slot: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (slot - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::subscription::MAX_RATE_LIMIT;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    fn at(ms: i64) -> DateTime<Utc> {
        t0() + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn spacing_divides_a_second() {
        assert_eq!(spacing(1), Duration::from_secs(1));
        assert_eq!(spacing(4), Duration::from_millis(250));
        assert_eq!(spacing(MAX_RATE_LIMIT), Duration::from_micros(100));
        assert_eq!(spacing(0), Duration::from_secs(1), "never divides by zero");
    }

    #[test]
    fn a_first_request_goes_now() {
        let r = reserve(None, at(0), spacing(5));
        assert_eq!(r.slot, at(0));
        assert_eq!(r.next_slot, at(200));
    }

    #[test]
    fn requests_in_a_burst_queue_up_one_spacing_apart() {
        let gap = spacing(5);
        let mut next = None;
        let mut slots = Vec::new();
        for _ in 0..4 {
            let r = reserve(next, at(10), gap);
            slots.push(r.slot);
            next = Some(r.next_slot);
        }
        assert_eq!(slots, [at(10), at(210), at(410), at(610)]);
        assert_eq!(next, Some(at(810)));
    }

    #[test]
    fn an_idle_receiver_starts_again_at_now_without_a_saved_up_burst() {
        let r = reserve(Some(at(200)), at(5_000), spacing(5));
        assert_eq!(r.slot, at(5_000));
        assert_eq!(r.next_slot, at(5_200));
    }

    #[test]
    fn a_slot_ahead_is_kept() {
        let r = reserve(Some(at(700)), at(100), spacing(10));
        assert_eq!(r.slot, at(700));
        assert_eq!(r.next_slot, at(800));
    }

    #[test]
    fn the_wait_is_the_time_left_to_the_slot() {
        assert_eq!(wait_for(at(250), at(100)), Duration::from_millis(150));
        assert_eq!(wait_for(at(100), at(100)), Duration::ZERO);
        assert_eq!(
            wait_for(at(100), at(250)),
            Duration::ZERO,
            "a slot passed is now"
        );
    }
}
