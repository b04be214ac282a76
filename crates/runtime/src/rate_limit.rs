//! Per-tenant request rate limits (token bucket per tenant, per process).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::config::RateLimitSettings;

/// A token bucket per tenant; `None` inside when limits are off.
#[derive(Clone)]
pub struct TenantLimiter {
    inner: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl TenantLimiter {
    pub fn new(settings: &RateLimitSettings) -> Self {
        let inner = NonZeroU32::new(settings.per_second).map(|rate| {
            let burst = NonZeroU32::new(settings.burst).unwrap_or(rate);
            Arc::new(RateLimiter::keyed(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self { inner }
    }

    /// `Err(wait)` when the tenant is over its limit.
    pub fn check(&self, tenant: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        let key = tenant.to_owned();
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets tenants whose bucket is full again, so memory follows active tenants only.
    pub fn prune(&self) {
        if let Some(l) = &self.inner {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
