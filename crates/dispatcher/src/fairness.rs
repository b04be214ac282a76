//! Fairness between tenants in the delivery stage: a per-replica count of each tenant's
//! attempts in progress decides whether a delivery may take one of the replica's slots now or
//! waits on a hold queue without an attempt.
//!
//! A tenant may start an attempt while, after it, either
//! - a reserve of the slots (`delivery.tenant_reserve_percent` of `delivery.concurrency`) stays
//!   free, or
//! - it holds no more than its fair share: the slots divided among the tenants holding any,
//!   when there are at least two.
//!
//! So a lone tenant uses all but the reserve (the replica stays busy), and the reserve keeps
//! handler slots free to reach other tenants' deliveries queued behind its backlog; once another
//! tenant is in, each gets its share whatever the first one's backlog or receivers' speed.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

/// The per-tenant count of one replica's attempts in progress.
pub struct TenantSlots {
    capacity: usize,
    reserve: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One attempt's slot; given back when dropped.
pub struct Slot<'a> {
    slots: &'a TenantSlots,
    tenant: String,
}

impl TenantSlots {
    /// `capacity` slots (the delivery concurrency), `reserve_percent` of them kept free by a
    /// tenant over its share; 0 lets every delivery through.
    pub fn new(capacity: usize, reserve_percent: u8) -> Self {
        let capacity = capacity.max(1);
        // Rounded up, so a small replica still keeps one slot back, but never all of them: a
        // lone tenant must always be able to start something.
        let reserve = (capacity * usize::from(reserve_percent))
            .div_ceil(100)
            .min(capacity - 1);
        Self {
            capacity,
            reserve: if reserve_percent == 0 { 0 } else { reserve },
            held: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // The counts stay consistent across a panic elsewhere: every change is one statement.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for an attempt of `tenant`, or `None` when it is to wait for others. The
    /// delivery stage's consumer bounds how many it asks for; see [`TenantSlots::try_take_free`].
    pub fn try_take(&self, tenant: &str) -> Option<Slot<'_>> {
        self.take(tenant, false)
    }

    /// [`TenantSlots::try_take`], and `None` too while every slot is taken, whatever the
    /// reserve: the fan-out stage asks for one per delivery it would attempt itself, which
    /// nothing else bounds.
    pub fn try_take_free(&self, tenant: &str) -> Option<Slot<'_>> {
        self.take(tenant, true)
    }

    fn take(&self, tenant: &str, bounded: bool) -> Option<Slot<'_>> {
        let mut held = self.counts();
        let mine = held.get(tenant).copied().unwrap_or(0);
        let total: usize = held.values().sum();
        if bounded && total >= self.capacity {
            return None;
        }
        let tenants = held.len() + usize::from(mine == 0);
        // Nothing in progress: nobody to be fair to, whatever the settings.
        let reserve_stays_free = total == 0 || total < self.capacity.saturating_sub(self.reserve);
        let within_share = tenants >= 2 && mine < self.capacity.div_ceil(tenants);
        if self.reserve > 0 && !reserve_stays_free && !within_share {
            return None;
        }
        *held.entry(tenant.to_owned()).or_insert(0) += 1;
        Some(Slot {
            slots: self,
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut held = self.slots.counts();
        if let Some(n) = held.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_too_small_for_its_reserve_still_delivers() {
        for (capacity, percent) in [(1, 25), (1, 90), (3, 75), (9, 90)] {
            let slots = TenantSlots::new(capacity, percent);
            let taken = take_all(&slots, "acme");
            assert!(
                !taken.is_empty(),
                "{capacity} slots, {percent}% reserve: a lone tenant gets one"
            );
        }
    }

    fn take_all<'a>(slots: &'a TenantSlots, tenant: &str) -> Vec<Slot<'a>> {
        std::iter::from_fn(|| slots.try_take(tenant))
            .take(1_000)
            .collect()
    }

    #[test]
    fn a_lone_tenant_uses_all_but_the_reserve() {
        let slots = TenantSlots::new(8, 25);
        assert_eq!(take_all(&slots, "a").len(), 6);
    }

    #[test]
    fn another_tenant_gets_in_beside_a_busy_one_up_to_its_share() {
        let slots = TenantSlots::new(8, 25);
        let a = take_all(&slots, "a");
        assert_eq!(a.len(), 6);
        // Two tenants: a share of 4 each; the one over it waits while the other catches up.
        let b = take_all(&slots, "b");
        assert_eq!(b.len(), 4);
        assert!(slots.try_take("a").is_none());
        drop(b);
        assert!(slots.try_take("a").is_none(), "a is still over the reserve");
    }

    #[test]
    fn a_tenant_over_its_share_comes_down_to_it_as_its_attempts_end() {
        let slots = TenantSlots::new(8, 25);
        let mut a = take_all(&slots, "a");
        let _b = take_all(&slots, "b");
        while a.len() > 4 {
            a.pop();
            assert!(slots.try_take("a").is_none());
        }
        a.pop();
        assert!(slots.try_take("a").is_some(), "below its share again");
    }

    #[test]
    fn slots_come_back_when_dropped_and_zero_reserve_lets_everything_through() {
        let slots = TenantSlots::new(4, 25);
        drop(take_all(&slots, "a"));
        assert_eq!(take_all(&slots, "a").len(), 3);
        let open = TenantSlots::new(4, 0);
        assert_eq!(take_all(&open, "a").len(), 1_000);
    }

    #[test]
    fn the_fan_out_never_takes_more_than_every_slot() {
        let open = TenantSlots::new(4, 0);
        let taken: Vec<Slot<'_>> = std::iter::from_fn(|| open.try_take_free("a"))
            .take(1_000)
            .collect();
        assert_eq!(taken.len(), 4);
        let fair = TenantSlots::new(8, 25);
        let _a: Vec<Slot<'_>> = std::iter::from_fn(|| fair.try_take_free("a")).collect();
        let b: Vec<Slot<'_>> = std::iter::from_fn(|| fair.try_take_free("b")).collect();
        assert_eq!(b.len(), 2, "6 + 2: all 8 taken, though b's share is 4");
        assert!(
            fair.try_take("b").is_some(),
            "the delivery stage's own bound is its consumer's"
        );
    }
}
