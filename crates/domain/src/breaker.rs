//! The circuit breaker of one receiver, as a pure state machine: what its stored [`Health`]
//! becomes after a request succeeded or failed or after a replica claimed the half-open probe,
//! and how long a delivery held back by the open circuit waits. Time is passed in (for
//! transitions the dispatcher passes Postgres's clock, so every replica reads the same circuit
//! the same way); storing and claiming the state is the store's job.
//!
//! No stored state means a healthy receiver. The circuit a state describes at `now`
//! ([`Circuit::of`]):
//!
//! ```text
//! stored state                          circuit
//! none                                  Closed { failing: false }
//! open_until = None                     Closed { failing: true }    (a streak below the threshold)
//! open_until > now                      Open { until: open_until }
//! open_until <= now                     HalfOpen                    (the cooldown elapsed)
//! ```
//!
//! Transitions ([`BreakerPolicy::next`]); `cooldown` is the state's current cooldown, `base` and
//! `max` the policy's first and longest, `n` the failures in the streak:
//!
//! | state                            | event                                              | next state              | side effect (what is stored)                                  |
//! |----------------------------------|----------------------------------------------------|-------------------------|---------------------------------------------------------------|
//! | any                              | success                                            | Closed, healthy         | the state is dropped: the streak is over                      |
//! | Closed, healthy                  | failure (a probe's too), threshold > 1             | Closed, failing         | n = 1, failing since the send time, cooldown = base           |
//! | Closed, healthy                  | failure (a probe's too), threshold = 1             | Open                    | as above, open until now + base                               |
//! | Closed, failing                  | failure, not a probe, n + 1 < threshold            | Closed, failing         | n + 1, cooldown = base                                        |
//! | Closed, failing                  | failure, not a probe, n + 1 >= threshold           | Open                    | n + 1, cooldown = base, open until now + base                 |
//! | Open                             | failure, not a probe (in flight, a tenant's retry) | Open                    | n + 1; the circuit's end and cooldown unchanged               |
//! | Open                             | cooldown elapsed (now >= until)                    | HalfOpen                | nothing: the clock alone moves it                             |
//! | HalfOpen                         | probe claimed                                      | Open (to the others)    | open until now + max(cooldown, lease); one replica probes     |
//! | Open or Closed                   | probe claimed                                      | unchanged               | nothing: there is no probe to claim                           |
//! | HalfOpen                         | failure                                            | Open                    | n + 1, cooldown = min(2 × cooldown, max), open until now + it |
//! | Closed failing, Open             | failure of the probe                               | Open                    | n + 1, cooldown = min(2 × cooldown, max), open until now + it |
//! | any, last write > streak gap ago | failure                                            | as from Closed, healthy | the old streak is forgotten first: the receiver was idle      |
//!
//! Every failure keeps the earliest send time as the start of the streak, which is what
//! auto-disable measures ([`Health::due_for_disable`]).
//!
//! Deliveries held back by an open circuit wait on a hold queue for [`BreakerPolicy::deferral`]:
//! until the circuit's end at least, and `base × 2^deferrals` (up to [`DEFERRAL_CAP`] times
//! the longest cooldown), so that a long outage's backlog waits in the broker instead of coming
//! back every cooldown.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// The longest a held-back delivery waits, in multiples of the longest cooldown.
pub const DEFERRAL_CAP: u32 = 6;

/// Deferrals past this many stop doubling the wait (it is capped long before).
const MAX_DOUBLINGS: u32 = 20;

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures in a row that open the circuit.
    pub threshold: u32,
    /// How long it first stays open.
    pub cooldown: Duration,
    /// The longest it stays open; each failed probe doubles the time up to this.
    pub max_cooldown: Duration,
    /// A failure this long after the previous write starts a new streak: the receiver was not
    /// failing continuously, it had nothing to receive.
    pub streak_gap: Duration,
}

/// A failing receiver's stored state: its streak and its circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Failed requests since the last success.
    pub failures: u32,
    /// When the first of them was sent.
    pub failing_since: DateTime<Utc>,
    /// The circuit is open until then; `None`: closed.
    pub open_until: Option<DateTime<Utc>>,
    /// How long the circuit stays open the next time a probe is claimed; doubled by each
    /// failed probe.
    pub cooldown: Duration,
    /// The last failure or probe claim; the streak gap is measured from it.
    pub updated_at: DateTime<Utc>,
}

/// The circuit a state describes at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Requests go through; `failing` when a streak below the threshold is running.
    Closed { failing: bool },
    /// No request until then.
    Open { until: DateTime<Utc> },
    /// The cooldown elapsed: the next request is the probe, once someone claims it.
    HalfOpen,
}

/// What happens to a receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A request succeeded.
    Succeeded,
    /// A request sent at `sent_at` failed; `probe` when it was the half-open probe.
    Failed { sent_at: DateTime<Utc>, probe: bool },
    /// A replica takes the half-open probe, keeping the circuit open to the others for at
    /// least `lease` (long enough for the probe to be answered).
    ProbeClaimed { lease: Duration },
}

/// What a replica may do with a receiver whose circuit it saw open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeClaim {
    /// This replica sends the probe once the state becomes this one.
    Claimed(Health),
    /// The circuit is still open until then (another replica is probing, or the cooldown runs).
    Open(DateTime<Utc>),
    /// The circuit is closed; `failing` when the receiver's last request failed all the same.
    Closed { failing: bool },
}

/// `at + d`, saturating at the end of representable time.
fn later(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Circuit {
    /// The circuit `state` describes at `now`; `None` is a healthy receiver.
    pub fn of(state: Option<&Health>, now: DateTime<Utc>) -> Self {
        match state {
            None => Circuit::Closed { failing: false },
            Some(h) => match h.open_until {
                None => Circuit::Closed { failing: true },
                Some(until) if until > now => Circuit::Open { until },
                Some(_) => Circuit::HalfOpen,
            },
        }
    }
}

impl BreakerPolicy {
    /// The state after `event` happened at `now`; `None`: healthy, nothing to store.
    pub fn next(&self, state: Option<&Health>, event: Event, now: DateTime<Utc>) -> Option<Health> {
        match event {
            Event::Succeeded => None,
            Event::Failed { sent_at, probe } => {
                Some(self.after_failure(state, sent_at, probe, now))
            }
            Event::ProbeClaimed { lease } => state.map(|h| match Circuit::of(Some(h), now) {
                Circuit::HalfOpen => Health {
                    open_until: Some(later(now, h.cooldown.max(lease))),
                    updated_at: now,
                    ..h.clone()
                },
                Circuit::Closed { .. } | Circuit::Open { .. } => h.clone(),
            }),
        }
    }

    /// The state after a request sent at `sent_at` failed, seen at `now`: [`Event::Failed`],
    /// which always leaves a state to store.
    pub fn after_failure(
        &self,
        state: Option<&Health>,
        sent_at: DateTime<Utc>,
        probe: bool,
        now: DateTime<Utc>,
    ) -> Health {
        let current = state.filter(|h| !self.stale(h, now));
        let Some(h) = current else {
            return Health {
                failures: 1,
                failing_since: sent_at,
                open_until: (self.threshold <= 1).then(|| later(now, self.cooldown)),
                cooldown: self.cooldown,
                updated_at: now,
            };
        };
        let failures = h.failures.saturating_add(1);
        let failing_since = h.failing_since.min(sent_at);
        let (open_until, cooldown) = match Circuit::of(Some(h), now) {
            _ if probe => self.reopen(h, now),
            Circuit::HalfOpen => self.reopen(h, now),
            Circuit::Open { until } => (Some(until), h.cooldown),
            Circuit::Closed { .. } if failures >= self.threshold => {
                (Some(later(now, self.cooldown)), self.cooldown)
            }
            Circuit::Closed { .. } => (None, self.cooldown),
        };
        Health {
            failures,
            failing_since,
            open_until,
            cooldown,
            updated_at: now,
        }
    }

    /// A failed probe (or a failure after the cooldown) opens the circuit again for twice as
    /// long as the last time, up to the longest cooldown.
    fn reopen(&self, h: &Health, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, Duration) {
        let cooldown = h.cooldown.saturating_mul(2).min(self.max_cooldown);
        (Some(later(now, cooldown)), cooldown)
    }

    /// Whether a stored streak was last written longer than the streak gap ago.
    fn stale(&self, h: &Health, now: DateTime<Utc>) -> bool {
        (now - h.updated_at)
            .to_std()
            .is_ok_and(|idle| idle > self.streak_gap)
    }

    /// Tries to take the half-open probe of a receiver in `state` at `now`.
    pub fn claim_probe(
        &self,
        state: Option<&Health>,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> ProbeClaim {
        match Circuit::of(state, now) {
            Circuit::HalfOpen => match self.next(state, Event::ProbeClaimed { lease }, now) {
                Some(claimed) => ProbeClaim::Claimed(claimed),
                None => ProbeClaim::Closed { failing: false },
            },
            Circuit::Open { until } => ProbeClaim::Open(until),
            Circuit::Closed { failing } => ProbeClaim::Closed { failing },
        }
    }

    /// How long a delivery held back for the `deferrals`-th time (0 for the first) by a circuit
    /// open until `until` waits before it comes back.
    pub fn deferral(&self, until: DateTime<Utc>, deferrals: u32, now: DateTime<Utc>) -> Duration {
        let to_end = (until - now).to_std().unwrap_or_default();
        let escalated = self
            .cooldown
            .saturating_mul(1u32 << deferrals.min(MAX_DOUBLINGS))
            .min(self.max_cooldown.saturating_mul(DEFERRAL_CAP));
        to_end.max(escalated)
    }
}

impl Health {
    /// Whether this receiver has been failing for `window` or longer at `now`, which disables
    /// its subscription.
    pub fn due_for_disable(&self, now: DateTime<Utc>, window: Duration) -> bool {
        TimeDelta::from_std(window).is_ok_and(|window| now - self.failing_since >= window)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    /// A hand-driven clock: every test starts at the same instant and moves it explicitly.
    struct Clock(DateTime<Utc>);

    impl Clock {
        fn new() -> Self {
            Clock(Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap())
        }
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
        fn advance(&mut self, d: Duration) -> DateTime<Utc> {
            self.0 = later(self.0, d);
            self.0
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            threshold: 3,
            cooldown: secs(30),
            max_cooldown: secs(100),
            streak_gap: secs(3600),
        }
    }

    fn fail(at: DateTime<Utc>) -> Event {
        Event::Failed {
            sent_at: at,
            probe: false,
        }
    }

    fn fail_probe(at: DateTime<Utc>) -> Event {
        Event::Failed {
            sent_at: at,
            probe: true,
        }
    }

    /// A state with `failures` failures in a row, opened at `now` when past the threshold.
    fn failing(p: &BreakerPolicy, clock: &mut Clock, failures: u32) -> Health {
        let mut state = None;
        for _ in 0..failures {
            let now = clock.advance(ms(10));
            state = p.next(state.as_ref(), fail(now), now);
        }
        state.unwrap()
    }

    #[test]
    fn the_circuit_read_from_a_state() {
        let clock = Clock::new();
        let now = clock.now();
        let h = |open_until| Health {
            failures: 1,
            failing_since: now,
            open_until,
            cooldown: secs(30),
            updated_at: now,
        };
        assert_eq!(Circuit::of(None, now), Circuit::Closed { failing: false });
        assert_eq!(
            Circuit::of(Some(&h(None)), now),
            Circuit::Closed { failing: true }
        );
        let until = later(now, ms(1));
        assert_eq!(
            Circuit::of(Some(&h(Some(until))), now),
            Circuit::Open { until }
        );
        assert_eq!(Circuit::of(Some(&h(Some(now))), now), Circuit::HalfOpen);
    }

    #[test]
    fn a_first_failure_starts_a_streak_at_its_send_time() {
        let p = policy();
        let clock = Clock::new();
        let sent = later(clock.now(), ms(0));
        let now = later(sent, ms(400));
        let h = p.next(None, fail(sent), now).unwrap();
        assert_eq!(h.failures, 1);
        assert_eq!(
            h.failing_since, sent,
            "the streak starts when the request went out"
        );
        assert_eq!(
            h.open_until, None,
            "below the threshold the circuit stays closed"
        );
        assert_eq!(h.cooldown, p.cooldown);
        assert_eq!(h.updated_at, now);
    }

    #[test]
    fn a_threshold_of_one_opens_at_the_first_failure() {
        let p = BreakerPolicy {
            threshold: 1,
            ..policy()
        };
        let now = Clock::new().now();
        let h = p.next(None, fail(now), now).unwrap();
        assert_eq!(h.open_until, Some(later(now, p.cooldown)));
    }

    #[test]
    fn failures_below_the_threshold_keep_it_closed() {
        let p = policy();
        let mut clock = Clock::new();
        let h = failing(&p, &mut clock, 2);
        assert_eq!(h.failures, 2);
        assert_eq!(
            Circuit::of(Some(&h), clock.now()),
            Circuit::Closed { failing: true }
        );
    }

    #[test]
    fn the_threshold_failure_opens_it_for_the_first_cooldown() {
        let p = policy();
        let mut clock = Clock::new();
        let first = clock.now();
        let h = failing(&p, &mut clock, 3);
        assert_eq!(h.failures, 3);
        assert_eq!(h.open_until, Some(later(clock.now(), p.cooldown)));
        assert_eq!(h.cooldown, p.cooldown);
        assert_eq!(
            h.failing_since,
            later(first, ms(10)),
            "the first failure's send time"
        );
    }

    #[test]
    fn the_streak_keeps_its_earliest_send_time() {
        let p = policy();
        let mut clock = Clock::new();
        let h = failing(&p, &mut clock, 1);
        // A request sent before the first recorded failure but answered after it.
        let earlier = later(clock.now(), ms(0)) - TimeDelta::seconds(5);
        let now = clock.advance(ms(10));
        let h = p.next(Some(&h), fail(earlier), now).unwrap();
        assert_eq!(h.failing_since, earlier);
    }

    #[test]
    fn a_failure_while_open_counts_but_moves_nothing() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.advance(secs(5));
        let h = p.next(Some(&open), fail(now), now).unwrap();
        assert_eq!(h.failures, 4);
        assert_eq!(h.open_until, open.open_until);
        assert_eq!(h.cooldown, open.cooldown);
    }

    #[test]
    fn the_cooldown_elapsing_makes_it_half_open() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let until = open.open_until.unwrap();
        clock.advance(p.cooldown - ms(1));
        assert_eq!(
            Circuit::of(Some(&open), clock.now()),
            Circuit::Open { until }
        );
        clock.advance(ms(1));
        assert_eq!(Circuit::of(Some(&open), clock.now()), Circuit::HalfOpen);
    }

    #[test]
    fn claiming_the_probe_holds_the_circuit_open_for_the_cooldown_or_the_lease() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.advance(p.cooldown);
        let ProbeClaim::Claimed(short) = p.claim_probe(Some(&open), secs(5), now) else {
            panic!("the half-open probe is free");
        };
        assert_eq!(short.open_until, Some(later(now, p.cooldown)));
        assert_eq!(short.updated_at, now);
        assert_eq!(short.failures, open.failures, "a claim is not a failure");
        let ProbeClaim::Claimed(long) = p.claim_probe(Some(&open), secs(90), now) else {
            panic!("the half-open probe is free");
        };
        assert_eq!(long.open_until, Some(later(now, secs(90))));
    }

    #[test]
    fn a_claimed_probe_is_not_claimed_twice() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.advance(p.cooldown);
        let ProbeClaim::Claimed(claimed) = p.claim_probe(Some(&open), secs(5), now) else {
            panic!("the half-open probe is free");
        };
        let now = clock.advance(ms(1));
        assert_eq!(
            p.claim_probe(Some(&claimed), secs(5), now),
            ProbeClaim::Open(claimed.open_until.unwrap())
        );
    }

    #[test]
    fn there_is_no_probe_to_claim_while_open_or_closed() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.now();
        assert_eq!(
            p.claim_probe(Some(&open), secs(5), now),
            ProbeClaim::Open(open.open_until.unwrap())
        );
        assert_eq!(
            p.next(Some(&open), Event::ProbeClaimed { lease: secs(5) }, now),
            Some(open)
        );
        let closed = failing(&p, &mut Clock::new(), 1);
        assert_eq!(
            p.claim_probe(Some(&closed), secs(5), now),
            ProbeClaim::Closed { failing: true }
        );
        assert_eq!(
            p.claim_probe(None, secs(5), now),
            ProbeClaim::Closed { failing: false }
        );
        assert_eq!(
            p.next(None, Event::ProbeClaimed { lease: secs(5) }, now),
            None
        );
    }

    #[test]
    fn a_failed_probe_doubles_the_cooldown_up_to_the_longest() {
        let p = policy();
        let mut clock = Clock::new();
        let mut h = failing(&p, &mut clock, 3);
        for expected in [60, 100, 100] {
            let now = clock.advance(h.cooldown);
            let ProbeClaim::Claimed(claimed) = p.claim_probe(Some(&h), secs(5), now) else {
                panic!("the cooldown elapsed");
            };
            let now = clock.advance(ms(200));
            h = p.next(Some(&claimed), fail_probe(now), now).unwrap();
            assert_eq!(h.cooldown, secs(expected));
            assert_eq!(h.open_until, Some(later(now, secs(expected))));
        }
    }

    #[test]
    fn a_failure_after_the_cooldown_reopens_it_like_a_failed_probe() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.advance(p.cooldown + secs(1));
        let h = p.next(Some(&open), fail(now), now).unwrap();
        assert_eq!(h.cooldown, secs(60));
        assert_eq!(h.open_until, Some(later(now, secs(60))));
    }

    #[test]
    fn a_failed_probe_reopens_even_a_circuit_closed_meanwhile() {
        // Another replica's success closed it and a new streak began before the probe failed.
        let p = policy();
        let mut clock = Clock::new();
        let closed = failing(&p, &mut clock, 1);
        let now = clock.advance(ms(10));
        let h = p.next(Some(&closed), fail_probe(now), now).unwrap();
        assert_eq!(h.failures, 2);
        assert_eq!(h.cooldown, secs(60));
        assert_eq!(h.open_until, Some(later(now, secs(60))));
    }

    #[test]
    fn success_closes_the_circuit_from_any_state() {
        let p = policy();
        let mut clock = Clock::new();
        let now = clock.now();
        assert_eq!(p.next(None, Event::Succeeded, now), None);
        let closed = failing(&p, &mut clock, 1);
        assert_eq!(p.next(Some(&closed), Event::Succeeded, now), None);
        let open = failing(&p, &mut clock, 3);
        assert_eq!(p.next(Some(&open), Event::Succeeded, now), None);
        let now = clock.advance(p.cooldown);
        assert_eq!(Circuit::of(Some(&open), now), Circuit::HalfOpen);
        assert_eq!(p.next(Some(&open), Event::Succeeded, now), None);
    }

    #[test]
    fn a_streak_idle_past_the_gap_is_forgotten() {
        let p = policy();
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.advance(p.streak_gap + ms(1));
        let h = p.next(Some(&open), fail(now), now).unwrap();
        assert_eq!(h.failures, 1, "a new streak");
        assert_eq!(h.failing_since, now);
        assert_eq!(h.open_until, None);
        assert_eq!(h.cooldown, p.cooldown);
    }

    #[test]
    fn a_streak_idle_exactly_the_gap_goes_on() {
        let p = policy();
        let mut clock = Clock::new();
        let closed = failing(&p, &mut clock, 1);
        let now = clock.advance(p.streak_gap);
        let h = p.next(Some(&closed), fail(now), now).unwrap();
        assert_eq!(h.failures, 2);
        assert_eq!(h.failing_since, closed.failing_since);
    }

    #[test]
    fn a_probe_claim_keeps_the_streak_alive() {
        let p = BreakerPolicy {
            streak_gap: secs(40),
            ..policy()
        };
        let mut clock = Clock::new();
        let open = failing(&p, &mut clock, 3);
        let now = clock.advance(secs(35));
        let ProbeClaim::Claimed(claimed) = p.claim_probe(Some(&open), secs(5), now) else {
            panic!("the cooldown elapsed");
        };
        // 50 s since the last failure, but 15 s since the claim.
        let now = clock.advance(secs(15));
        let h = p.next(Some(&claimed), fail_probe(now), now).unwrap();
        assert_eq!(h.failures, 4);
    }

    #[test]
    fn deferrals_wait_at_least_until_the_circuit_ends() {
        let p = policy();
        let now = Clock::new().now();
        let until = later(now, secs(45));
        assert_eq!(p.deferral(until, 0, now), secs(45));
        assert_eq!(
            p.deferral(now, 0, now),
            secs(30),
            "never less than the cooldown"
        );
        let past = now - TimeDelta::seconds(1);
        assert_eq!(p.deferral(past, 0, now), secs(30));
    }

    #[test]
    fn deferrals_double_up_to_six_times_the_longest_cooldown() {
        let p = policy();
        let now = Clock::new().now();
        let waits: Vec<u64> = (0..6).map(|n| p.deferral(now, n, now).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 600]);
        assert_eq!(p.deferral(now, u32::MAX, now), secs(600), "no overflow");
    }

    #[test]
    fn disable_after_the_window_measured_from_the_first_failure() {
        let p = policy();
        let mut clock = Clock::new();
        let h = failing(&p, &mut clock, 1);
        let window = secs(5 * 86_400);
        let since = h.failing_since;
        assert!(!h.due_for_disable(later(since, window - ms(1)), window));
        assert!(h.due_for_disable(later(since, window), window));
        assert!(
            !h.due_for_disable(since, Duration::MAX),
            "a window too long never ends"
        );
    }
}
