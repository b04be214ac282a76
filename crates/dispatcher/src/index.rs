//! The in-memory subscription index: every subscription with its credentials decrypted, and a
//! lookup by (tenant, event type) that covers exact names, `<group>.*` and `*`. Changes are
//! applied by revision, so an older state never overwrites a newer one whatever order they
//! arrive in.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use waybill_domain::{EventPattern, WebhookId, change::SubscriptionSnapshot};
use waybill_outbound::{Endpoint, EndpointError};
use waybill_store::Cipher;

/// A subscription as the dispatcher matches and delivers to it.
#[derive(Clone)]
pub struct Target {
    pub id: WebhookId,
    pub tenant: String,
    /// Where and how requests go, with credentials and keys decrypted.
    pub endpoint: Endpoint,
    pub events: Vec<EventPattern>,
    /// Sorted; empty means every client.
    pub client_ids: Vec<String>,
    pub active: bool,
    /// Most requests per second, over every replica; `None`: no limit.
    pub rate_limit: Option<u32>,
    pub revision: i64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.endpoint.url)
            .field("active", &self.active)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// Why a stored subscription cannot be indexed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("bad event pattern `{0}`")]
    Pattern(String),
}

impl Target {
    /// Decrypts a snapshot's credentials and keys and parses its patterns.
    pub fn from_snapshot(s: &SubscriptionSnapshot, cipher: &Cipher) -> Result<Target, TargetError> {
        let events = s
            .events
            .iter()
            .map(|e| EventPattern::parse(e).ok_or_else(|| TargetError::Pattern(e.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client_ids = s.client_ids.clone();
        client_ids.sort();
        Ok(Target {
            id: s.id,
            tenant: s.tenant.clone(),
            endpoint: Endpoint::from_snapshot(s, cipher)?,
            events,
            client_ids,
            active: s.active,
            rate_limit: s.rate_limit,
            revision: s.revision,
        })
    }

    /// Whether an event of `client_id` passes the `client_ids` filter.
    pub fn wants_client(&self, client_id: Option<&str>) -> bool {
        self.client_ids.is_empty()
            || client_id.is_some_and(|c| {
                self.client_ids
                    .binary_search_by(|x| x.as_str().cmp(c))
                    .is_ok()
            })
    }
}

/// How long a deleted subscription's revision is remembered, so a late older change cannot
/// bring it back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Inner {
    targets: HashMap<WebhookId, Arc<Target>>,
    /// (tenant, pattern) → subscriptions listing that pattern.
    by_pattern: HashMap<(String, String), Vec<WebhookId>>,
    tombstones: HashMap<WebhookId, (i64, Instant)>,
}

impl Inner {
    fn unlink(&mut self, t: &Target) {
        for p in &t.events {
            let key = (t.tenant.clone(), p.to_string());
            if let Some(ids) = self.by_pattern.get_mut(&key) {
                ids.retain(|id| *id != t.id);
                if ids.is_empty() {
                    self.by_pattern.remove(&key);
                }
            }
        }
    }

    fn put(&mut self, t: Target) {
        if let Some(old) = self.targets.remove(&t.id) {
            self.unlink(&old);
        }
        self.tombstones.remove(&t.id);
        for p in &t.events {
            self.by_pattern
                .entry((t.tenant.clone(), p.to_string()))
                .or_default()
                .push(t.id);
        }
        self.targets.insert(t.id, Arc::new(t));
    }

    fn known_revision(&self, id: WebhookId) -> Option<i64> {
        self.targets
            .get(&id)
            .map(|t| t.revision)
            .or_else(|| self.tombstones.get(&id).map(|(r, _)| *r))
    }
}

/// The index every fan-out and delivery reads.
#[derive(Default, Clone)]
pub struct Index {
    inner: Arc<RwLock<Inner>>,
}

impl Index {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `target` in unless the index already holds a newer revision of it.
    pub fn upsert(&self, target: Target) -> bool {
        let mut inner = self.write();
        if inner
            .known_revision(target.id)
            .is_some_and(|r| r > target.revision)
        {
            return false;
        }
        inner.put(target);
        true
    }

    /// Removes a subscription deleted at `revision`, unless a newer state is known.
    pub fn remove(&self, id: WebhookId, revision: i64) -> bool {
        let mut inner = self.write();
        if inner.known_revision(id).is_some_and(|r| r > revision) {
            return false;
        }
        if let Some(old) = inner.targets.remove(&id) {
            inner.unlink(&old);
        }
        inner.tombstones.insert(id, (revision, Instant::now()));
        true
    }

    /// Replaces the index with what Postgres holds: `fresh` is every subscription, read after
    /// `before` (the ids the index held when the read began) was taken. Subscriptions absent
    /// from `fresh` that were known before the read are gone; ones that arrived since stay.
    pub fn resync(&self, fresh: Vec<Target>, before: &HashSet<WebhookId>) {
        let seen: HashSet<WebhookId> = fresh.iter().map(|t| t.id).collect();
        let mut inner = self.write();
        for t in fresh {
            if inner.known_revision(t.id).is_none_or(|r| r <= t.revision) {
                inner.put(t);
            }
        }
        let gone: Vec<WebhookId> = before.difference(&seen).copied().collect();
        for id in gone {
            if let Some(old) = inner.targets.remove(&id) {
                inner.unlink(&old);
                inner.tombstones.insert(id, (old.revision, Instant::now()));
            }
        }
        inner
            .tombstones
            .retain(|_, (_, at)| at.elapsed() < TOMBSTONE_TTL);
    }

    /// Ids currently indexed.
    pub fn ids(&self) -> HashSet<WebhookId> {
        self.read().targets.keys().copied().collect()
    }

    pub fn get(&self, id: WebhookId) -> Option<Arc<Target>> {
        self.read().targets.get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Active subscriptions of `tenant` that want an event of `event_type` from `client_id`,
    /// each once even when several of its patterns match.
    pub fn matching(
        &self,
        tenant: &str,
        event_type: &str,
        client_id: Option<&str>,
    ) -> Vec<Arc<Target>> {
        let inner = self.read();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for pattern in EventPattern::covering(event_type) {
            let Some(ids) = inner.by_pattern.get(&(tenant.to_owned(), pattern)) else {
                continue;
            };
            for id in ids {
                if !seen.insert(*id) {
                    continue;
                }
                if let Some(t) = inner.targets.get(id)
                    && t.active
                    && t.wants_client(client_id)
                {
                    out.push(t.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: u128, tenant: &str, events: &[&str], clients: &[&str], revision: i64) -> Target {
        Target {
            id: WebhookId::from_uuid(uuid::Uuid::from_u128(id)),
            tenant: tenant.into(),
            endpoint: Endpoint {
                id: WebhookId::from_uuid(uuid::Uuid::from_u128(id)),
                url: "https://example.com/".into(),
                method: waybill_domain::HttpMethod::Post,
                headers: vec![],
                auth: None,
                keys: vec![],
            },
            events: events
                .iter()
                .map(|e| EventPattern::parse(e).unwrap())
                .collect(),
            client_ids: clients.iter().map(|c| c.to_string()).collect(),
            active: true,
            rate_limit: None,
            revision,
        }
    }

    fn ids(v: Vec<Arc<Target>>) -> Vec<u128> {
        let mut out: Vec<u128> = v.iter().map(|t| t.id.as_uuid().as_u128()).collect();
        out.sort();
        out
    }

    #[test]
    fn lookup_covers_wildcards_tenants_and_clients() {
        let index = Index::default();
        index.upsert(target(1, "acme", &["order.shipped"], &[], 1));
        index.upsert(target(2, "acme", &["order.*", "order.shipped"], &[], 1));
        index.upsert(target(3, "acme", &["*"], &["c1"], 1));
        index.upsert(target(4, "globex", &["*"], &[], 1));
        let mut off = target(5, "acme", &["*"], &[], 1);
        off.active = false;
        index.upsert(off);
        assert_eq!(ids(index.matching("acme", "order.shipped", None)), [1, 2]);
        assert_eq!(
            ids(index.matching("acme", "order.shipped", Some("c1"))),
            [1, 2, 3]
        );
        assert_eq!(
            ids(index.matching("acme", "order.cancelled", Some("c2"))),
            [2]
        );
        assert_eq!(
            ids(index.matching("acme", "stock.updated", Some("c1"))),
            [3]
        );
        assert_eq!(ids(index.matching("globex", "stock.updated", None)), [4]);
        assert!(index.matching("initech", "stock.updated", None).is_empty());
    }

    #[test]
    fn revisions_decide() {
        let index = Index::default();
        assert!(index.upsert(target(1, "acme", &["order.shipped"], &[], 3)));
        assert!(!index.upsert(target(1, "acme", &["stock.*"], &[], 2)));
        assert_eq!(ids(index.matching("acme", "order.shipped", None)), [1]);
        assert!(index.upsert(target(1, "acme", &["stock.*"], &[], 4)));
        assert!(index.matching("acme", "order.shipped", None).is_empty());
        assert!(!index.remove(WebhookId::from_uuid(uuid::Uuid::from_u128(1)), 3));
        assert!(index.remove(WebhookId::from_uuid(uuid::Uuid::from_u128(1)), 5));
        // A late update older than the deletion does not bring it back.
        assert!(!index.upsert(target(1, "acme", &["*"], &[], 4)));
        assert!(index.is_empty());
    }

    #[test]
    fn resync_drops_what_is_gone_and_keeps_what_arrived_meanwhile() {
        let index = Index::default();
        index.upsert(target(1, "acme", &["*"], &[], 1));
        index.upsert(target(2, "acme", &["*"], &[], 1));
        let before = index.ids();
        // Created while the snapshot was read.
        index.upsert(target(3, "acme", &["*"], &[], 1));
        index.resync(vec![target(1, "acme", &["order.*"], &[], 2)], &before);
        assert_eq!(ids(index.matching("acme", "order.shipped", None)), [1, 3]);
        assert!(
            index
                .get(WebhookId::from_uuid(uuid::Uuid::from_u128(2)))
                .is_none()
        );
        assert_eq!(index.len(), 2);
    }
}
