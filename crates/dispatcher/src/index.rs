//! The in-memory subscription index: every subscription with its credentials decrypted, and a
//! lookup by (tenant, event type) that covers exact names, `<group>.*` and `*`. Changes are
//! applied by revision, so an older state never overwrites a newer one whatever order they
//! arrive in.
//!
//! A subscription's payload filter is compiled once, when it enters the index, and evaluated
//! only after the cheap checks (tenant, type, client) have picked it, outside the index's lock.
//! Each list entry carries those checks and a [`Shortcut`] of the filter, so that a candidate the
//! event's earlier answers already rule out costs no read of its subscription or filter: with
//! thousands of filtered subscriptions on one type, those reads (cache misses) are what costs.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use waybill_domain::{
    EventPattern, WebhookId,
    change::SubscriptionSnapshot,
    event::EventEnvelope,
    filter::{Body, Filter, Shortcut},
};
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
    /// Which events of its types and clients it wants, on the receiver's body; `None`: all.
    /// Behind a pointer: most subscriptions have none, and a compiled filter is big enough to
    /// grow every index entry (and the resync's copy of them) by more than the rest of it.
    pub filter: Option<Arc<Filter>>,
    pub revision: i64,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("url", &self.endpoint.url)
            .field("active", &self.active)
            .field("filtered", &self.filter.is_some())
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
    /// The stored filter does not parse (written by a version with other rules, or by hand).
    #[error("bad filter: {0}")]
    Filter(String),
}

impl Target {
    /// Decrypts a snapshot's credentials and keys and parses its patterns and filter.
    pub fn from_snapshot(s: &SubscriptionSnapshot, cipher: &Cipher) -> Result<Target, TargetError> {
        let events = s
            .events
            .iter()
            .map(|e| EventPattern::parse(e).ok_or_else(|| TargetError::Pattern(e.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let filter = s
            .filter
            .as_ref()
            .map(|f| {
                Filter::parse(f)
                    .map(Arc::new)
                    .map_err(|e| TargetError::Filter(e.to_string()))
            })
            .transpose()?;
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
            filter,
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

/// The subscriptions an event goes to.
#[derive(Debug, Default)]
pub struct Matched {
    /// Active subscriptions whose type, client and filter all let the event through.
    pub targets: Vec<Arc<Target>>,
    /// Active subscriptions whose type and client matched but whose filter did not.
    pub filtered_out: usize,
}

/// How long a deleted subscription's revision is remembered, so a late older change cannot
/// bring it back.
const TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

/// A subscription in the list of one (tenant, pattern).
#[derive(Clone)]
struct Entry {
    target: Arc<Target>,
    /// Whether it lists more than one pattern: only such a subscription can be met in two
    /// lists of one lookup.
    several: bool,
    /// Some of its filter's conditions, kept here so that a candidate an event's earlier
    /// answers already rule out is turned away without reading its filter.
    shortcut: Shortcut,
    /// The target's `active`, and whether it takes every client: the cheap checks, read from
    /// the list itself.
    active: bool,
    every_client: bool,
    filtered: bool,
}

#[derive(Default)]
struct Inner {
    targets: HashMap<WebhookId, Arc<Target>>,
    /// (tenant, pattern) → subscriptions listing that pattern. Shared with the lookups in
    /// progress, which walk a list after the lock is released; a change copies a list only
    /// while a lookup still holds it.
    by_pattern: HashMap<(String, String), Arc<Vec<Entry>>>,
    tombstones: HashMap<WebhookId, (i64, Instant)>,
}

/// The distinct patterns of a subscription, as the keys of its lists.
fn pattern_keys(t: &Target) -> Vec<String> {
    let mut keys: Vec<String> = t.events.iter().map(ToString::to_string).collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

impl Inner {
    fn unlink(&mut self, t: &Target) {
        for p in pattern_keys(t) {
            let key = (t.tenant.clone(), p);
            if let Some(list) = self.by_pattern.get_mut(&key) {
                Arc::make_mut(list).retain(|e| e.target.id != t.id);
                if list.is_empty() {
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
        let keys = pattern_keys(&t);
        let several = keys.len() > 1;
        let shortcut = t.filter.as_ref().map(|f| f.shortcut()).unwrap_or_default();
        let target = Arc::new(t);
        for p in keys {
            let list = self
                .by_pattern
                .entry((target.tenant.clone(), p))
                .or_default();
            Arc::make_mut(list).push(Entry {
                target: target.clone(),
                several,
                shortcut,
                active: target.active,
                every_client: target.client_ids.is_empty(),
                filtered: target.filter.is_some(),
            });
        }
        self.targets.insert(target.id, target);
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
    /// each once even when several of its patterns match; filters are not looked at.
    pub fn matching(
        &self,
        tenant: &str,
        event_type: &str,
        client_id: Option<&str>,
    ) -> Vec<Arc<Target>> {
        self.select(tenant, event_type, client_id, |_| true)
    }

    /// The subscriptions `event` goes to: [`Index::matching`] on its tenant, type and client,
    /// then each one's filter on the body its receiver would get.
    pub fn matching_event(&self, event: &EventEnvelope) -> Matched {
        // Built for the first filter met: without any, the event's body is not even looked at.
        let mut body = None;
        let mut filtered_out = 0;
        let targets = self.select(
            event.tenant.as_str(),
            event.kind.as_str(),
            event.client_id.as_deref(),
            |e| {
                if !e.filtered {
                    return true;
                }
                let body = body.get_or_insert_with(|| Body::of(event));
                let kept = match body.known(&e.shortcut) {
                    Some(known) => known,
                    None => match &e.target.filter {
                        None => return true,
                        Some(filter) => filter.matches(body),
                    },
                };
                filtered_out += usize::from(!kept);
                kept
            },
        );
        Matched {
            targets,
            filtered_out,
        }
    }

    /// Active subscriptions of `tenant` wanting `event_type` from `client_id`, each once, that
    /// `keep` accepts. The lock is held only to take the lists: the walk over them, and any
    /// filter `keep` evaluates, never hold up the change feed's writes.
    fn select(
        &self,
        tenant: &str,
        event_type: &str,
        client_id: Option<&str>,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> Vec<Arc<Target>> {
        let keys: Vec<(String, String)> = EventPattern::covering(event_type)
            .into_iter()
            .map(|p| (tenant.to_owned(), p))
            .collect();
        let lists: Vec<Arc<Vec<Entry>>> = {
            let inner = self.read();
            keys.iter()
                .filter_map(|k| inner.by_pattern.get(k).cloned())
                .collect()
        };
        let overlap = lists.len() > 1;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for list in &lists {
            for e in list.iter() {
                if !e.active || (!e.every_client && !e.target.wants_client(client_id)) {
                    continue;
                }
                if overlap && e.several && !seen.insert(e.target.id) {
                    continue;
                }
                if keep(e) {
                    out.push(e.target.clone());
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
            filter: None,
            revision,
        }
    }

    fn filtered(mut t: Target, filter: serde_json::Value) -> Target {
        t.filter = Some(Arc::new(Filter::parse(&filter).unwrap()));
        t
    }

    fn event(kind: &str, client_id: Option<&str>, data: serde_json::Value) -> EventEnvelope {
        let now = chrono::Utc::now();
        EventEnvelope {
            id: "ev-1".into(),
            tenant: waybill_domain::TenantId::parse("acme").unwrap(),
            kind: waybill_domain::EventTypeName::parse(kind).unwrap(),
            client_id: client_id.map(Into::into),
            occurred_at: now,
            received_at: now,
            data: serde_json::from_value(data).unwrap(),
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
    fn a_pattern_listed_twice_or_covered_twice_still_delivers_once() {
        let index = Index::default();
        index.upsert(target(
            1,
            "acme",
            &["order.shipped", "order.shipped"],
            &[],
            1,
        ));
        index.upsert(target(
            2,
            "acme",
            &["*", "order.*", "order.shipped"],
            &[],
            1,
        ));
        assert_eq!(ids(index.matching("acme", "order.shipped", None)), [1, 2]);
        index.upsert(target(1, "acme", &["stock.*"], &[], 2));
        assert_eq!(ids(index.matching("acme", "order.shipped", None)), [2]);
        assert_eq!(ids(index.matching("acme", "stock.low", None)), [1, 2]);
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

    #[test]
    fn a_filter_decides_after_type_and_client_and_counts_what_it_kept_out() {
        let index = Index::default();
        let low = serde_json::json!({"data.available": {"$lt": 10}});
        index.upsert(target(1, "acme", &["stock.updated"], &[], 1));
        index.upsert(filtered(
            target(2, "acme", &["stock.*"], &[], 1),
            low.clone(),
        ));
        index.upsert(filtered(
            target(3, "acme", &["stock.updated"], &[], 1),
            serde_json::json!({"data.warehouse_id": {"$in": ["wh_ams_01", "wh_rtm_01"]}}),
        ));
        // Would keep the events out, but their type or client already does: not counted.
        index.upsert(filtered(
            target(4, "acme", &["order.*"], &[], 1),
            low.clone(),
        ));
        index.upsert(filtered(target(5, "acme", &["*"], &["c9"], 1), low.clone()));
        let mut off = filtered(target(6, "acme", &["*"], &[], 1), low);
        off.active = false;
        index.upsert(off);

        let plenty = event(
            "stock.updated",
            Some("c1"),
            serde_json::json!({"warehouse_id": "wh_rtm_01", "available": 288}),
        );
        let m = index.matching_event(&plenty);
        assert_eq!(ids(m.targets), [1, 3]);
        assert_eq!(m.filtered_out, 1);

        let short = event(
            "stock.updated",
            Some("c1"),
            serde_json::json!({"warehouse_id": "wh_lyon_02", "available": 3}),
        );
        let m = index.matching_event(&short);
        assert_eq!(ids(m.targets), [1, 2]);
        assert_eq!(m.filtered_out, 1);

        // The type-and-client lookup alone still returns every candidate.
        assert_eq!(
            ids(index.matching("acme", "stock.updated", Some("c1"))),
            [1, 2, 3]
        );
    }

    #[test]
    fn filters_sharing_conditions_are_settled_by_shortcut_exactly_as_by_evaluation() {
        // Many subscriptions whose filters share conditions, so that most are settled from the
        // event's earlier answers; some also inactive or for one client. Every lookup must give
        // what evaluating each filter on its own gives.
        let index = Index::default();
        let warehouses = ["wh_ams_01", "wh_rtm_01", "wh_par_01"];
        let mut expected = Vec::new();
        for i in 0..300u128 {
            let wh = warehouses[(i % 3) as usize];
            let f = serde_json::json!({
                "data.warehouse_id": wh,
                "data.available": {"$lt": (i % 7) * 5},
                "data.sku": {"$in": ["A", (["B", "C"][(i % 2) as usize])]},
            });
            let mut t = filtered(target(i + 1, "acme", &["stock.updated"], &[], 1), f);
            if i % 11 == 0 {
                t.active = false;
            }
            if i % 13 == 0 {
                t.client_ids = vec!["c9".into()];
            }
            expected.push((i + 1, t.clone()));
            index.upsert(t);
        }
        for (n, (wh, available, sku)) in [
            ("wh_ams_01", 3, "A"),
            ("wh_rtm_01", 12, "B"),
            ("wh_par_01", 29, "C"),
            ("wh_lyo_01", 0, "A"),
        ]
        .into_iter()
        .enumerate()
        {
            let e = event(
                "stock.updated",
                Some("c1"),
                serde_json::json!({"warehouse_id": wh, "available": available, "sku": sku}),
            );
            let body = Body::of(&e);
            let mut want = Vec::new();
            let mut out = 0;
            for (id, t) in &expected {
                if !t.active || !t.wants_client(Some("c1")) {
                    continue;
                }
                if t.filter.as_ref().is_none_or(|f| f.matches(&body)) {
                    want.push(*id);
                } else {
                    out += 1;
                }
            }
            let m = index.matching_event(&e);
            assert_eq!(ids(m.targets), want, "event {n}");
            assert_eq!(m.filtered_out, out, "event {n}");
        }
    }

    #[test]
    fn an_event_every_filter_keeps_out_goes_nowhere() {
        let index = Index::default();
        index.upsert(filtered(
            target(1, "acme", &["stock.updated"], &[], 1),
            serde_json::json!({"data.sku": "TSH-BLK-M"}),
        ));
        index.upsert(filtered(
            target(2, "acme", &["stock.*"], &[], 1),
            serde_json::json!({"client_id": "c7"}),
        ));
        let m = index.matching_event(&event(
            "stock.updated",
            None,
            serde_json::json!({"sku": "TSH-WHT-S"}),
        ));
        assert!(m.targets.is_empty());
        assert_eq!(m.filtered_out, 2);
        let m = index.matching_event(&event(
            "stock.updated",
            Some("c7"),
            serde_json::json!({"sku": "TSH-BLK-M"}),
        ));
        assert_eq!(ids(m.targets), [1, 2]);
        assert_eq!(m.filtered_out, 0);
    }

    #[test]
    fn a_new_revision_replaces_or_removes_the_filter() {
        let index = Index::default();
        index.upsert(filtered(
            target(1, "acme", &["stock.updated"], &[], 1),
            serde_json::json!({"data.sku": "A"}),
        ));
        let b = event("stock.updated", None, serde_json::json!({"sku": "B"}));
        assert!(index.matching_event(&b).targets.is_empty());
        index.upsert(filtered(
            target(1, "acme", &["stock.updated"], &[], 2),
            serde_json::json!({"data.sku": "B"}),
        ));
        assert_eq!(ids(index.matching_event(&b).targets), [1]);
        let c = event("stock.updated", None, serde_json::json!({"sku": "C"}));
        assert!(index.matching_event(&c).targets.is_empty());
        index.upsert(target(1, "acme", &["stock.updated"], &[], 3));
        let m = index.matching_event(&c);
        assert_eq!(ids(m.targets), [1]);
        assert_eq!(m.filtered_out, 0);
    }

    #[test]
    fn a_stored_filter_that_does_not_parse_is_refused() {
        let snapshot = SubscriptionSnapshot {
            id: WebhookId::from_uuid(uuid::Uuid::from_u128(1)),
            tenant: "acme".into(),
            url: "https://example.com/".into(),
            method: "POST".into(),
            events: vec!["stock.updated".into()],
            client_ids: vec![],
            headers: Default::default(),
            auth: waybill_domain::change::AuthSnapshot {
                kind: "none".into(),
                username: None,
                header: None,
                credential_encrypted: None,
            },
            secrets: vec![],
            active: true,
            disabled_reason: None,
            rate_limit: None,
            filter: Some(serde_json::json!(["data.sku", "A"])),
            revision: 1,
        };
        let cipher = Cipher::new(&[7; 32]).unwrap();
        let err = Target::from_snapshot(&snapshot, &cipher).unwrap_err();
        assert!(matches!(err, TargetError::Filter(_)), "{err}");
        let ok = SubscriptionSnapshot {
            filter: Some(serde_json::json!({"data.sku": "A"})),
            ..snapshot
        };
        let t = Target::from_snapshot(&ok, &cipher).unwrap();
        assert_eq!(
            t.filter.as_deref().map(Filter::as_json),
            Some(&serde_json::json!({"data.sku": "A"}))
        );
    }
}
