//! When a failed delivery is tried again: the configured gaps between attempts, and a
//! receiver's `Retry-After`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The gaps between attempts; one more attempt than gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    gaps: Vec<Duration>,
}

impl RetrySchedule {
    pub fn new(gaps: Vec<Duration>) -> Self {
        Self { gaps }
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.gaps.len()).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    /// How long to wait after attempt `attempt` (1-based) failed, or `None` when it was the
    /// last. A receiver's `Retry-After` can push the wait out, never bring it forward.
    pub fn after(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let index = usize::try_from(attempt.checked_sub(1)?).ok()?;
        let gap = *self.gaps.get(index)?;
        Some(retry_after.map_or(gap, |r| r.max(gap)))
    }
}

/// Longest `Retry-After` taken into account; beyond it the last tier applies anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Reads a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: &[u64]) -> RetrySchedule {
        RetrySchedule::new(secs.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    #[test]
    fn gaps_then_give_up() {
        let sched = s(&[300, 600, 1200]);
        assert_eq!(sched.max_attempts(), 4);
        assert_eq!(sched.after(1, None), Some(Duration::from_secs(300)));
        assert_eq!(sched.after(3, None), Some(Duration::from_secs(1200)));
        assert_eq!(sched.after(4, None), None);
        assert_eq!(sched.after(0, None), None);
        assert_eq!(
            sched.after(1, Some(Duration::from_secs(900))),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            sched.after(2, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(600))
        );
        assert_eq!(s(&[]).max_attempts(), 1);
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("99999999999", now), Some(MAX_RETRY_AFTER));
    }
}
