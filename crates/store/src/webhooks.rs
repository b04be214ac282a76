//! Webhook subscriptions and their signing secrets. Every change writes its change-feed message
//! to the outbox in the same transaction.

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Duration, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;
use waybill_domain::{
    EventPattern, HttpMethod, SigningSecret, WebhookAuth, WebhookId, WebhookSettings,
    change::{AuthSnapshot, ChangeKind, SecretSnapshot, SubscriptionChange, SubscriptionSnapshot},
    filter::Filter,
};

use crate::{
    Cipher, StoreError,
    crypto::{credential_context, secret_context},
    endpoints, outbox,
    schema::{webhook_secrets, webhooks},
};

/// Now, at the microsecond precision Postgres keeps, so what a call returns equals what is read
/// back later.
fn now_micros() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// One subscription row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhooks)]
pub struct WebhookRow {
    #[diesel(deserialize_as = Uuid)]
    pub id: WebhookId,
    pub tenant: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub method: String,
    pub events: Vec<String>,
    pub events_key: String,
    pub client_ids: Vec<String>,
    pub headers: serde_json::Value,
    pub auth_type: String,
    pub auth_username: Option<String>,
    pub auth_header: Option<String>,
    pub auth_credential: Option<Vec<u8>>,
    pub active: bool,
    pub disabled_reason: Option<String>,
    pub rate_limit: Option<i32>,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The payload filter as the tenant sent it; `None`: every selected event.
    pub filter: Option<serde_json::Value>,
}

/// One signing secret row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = webhook_secrets)]
pub struct SecretRow {
    pub id: i64,
    #[diesel(deserialize_as = Uuid)]
    pub webhook_id: WebhookId,
    pub secret: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl WebhookRow {
    /// The custom headers as a map.
    pub fn header_map(&self) -> BTreeMap<String, String> {
        serde_json::from_value(self.headers.clone()).unwrap_or_default()
    }

    /// The row as domain settings, credentials decrypted (for applying an update).
    pub fn settings(&self, cipher: &Cipher) -> Result<WebhookSettings, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("webhook {}: {what}", self.id));
        let credential = || -> Result<String, StoreError> {
            let ct = self
                .auth_credential
                .as_deref()
                .ok_or_else(|| corrupt("credential missing"))?;
            Ok(cipher.decrypt_string(ct, &credential_context(self.id))?)
        };
        let auth = match self.auth_type.as_str() {
            "none" => WebhookAuth::None,
            "basic" => WebhookAuth::Basic {
                username: self
                    .auth_username
                    .clone()
                    .ok_or_else(|| corrupt("username missing"))?,
                password: credential()?,
            },
            "token" => WebhookAuth::Token {
                header: self
                    .auth_header
                    .clone()
                    .ok_or_else(|| corrupt("auth header missing"))?,
                token: credential()?,
            },
            other => return Err(corrupt(&format!("unknown auth type {other}"))),
        };
        // Every stored filter passed these rules when it was written; one that fails them now
        // was written by something else, or under rules since changed.
        let filter = self
            .filter
            .as_ref()
            .map(Filter::parse)
            .transpose()
            .map_err(|e| corrupt(&format!("stored filter does not parse: {e}")))?;
        Ok(WebhookSettings {
            name: self.name.clone(),
            description: self.description.clone(),
            url: self.url.clone(),
            method: HttpMethod::parse(&self.method).ok_or_else(|| corrupt("bad method"))?,
            events: self
                .events
                .iter()
                .map(|e| EventPattern::parse(e).ok_or_else(|| corrupt("bad event pattern")))
                .collect::<Result<_, _>>()?,
            client_ids: self.client_ids.clone(),
            headers: self.header_map(),
            auth,
            active: self.active,
            rate_limit: self.rate_limit.and_then(|r| u32::try_from(r).ok()),
            filter,
        })
    }

    fn snapshot(&self, secrets: &[SecretRow]) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            id: self.id,
            tenant: self.tenant.clone(),
            url: self.url.clone(),
            method: self.method.clone(),
            events: self.events.clone(),
            client_ids: self.client_ids.clone(),
            headers: self.header_map(),
            auth: AuthSnapshot {
                kind: self.auth_type.clone(),
                username: self.auth_username.clone(),
                header: self.auth_header.clone(),
                credential_encrypted: self.auth_credential.as_deref().map(|c| STANDARD.encode(c)),
            },
            secrets: secrets
                .iter()
                .map(|s| SecretSnapshot {
                    secret_encrypted: STANDARD.encode(&s.secret),
                    expires_at: s.expires_at,
                })
                .collect(),
            active: self.active,
            disabled_reason: self.disabled_reason.clone(),
            rate_limit: self.rate_limit.and_then(|r| u32::try_from(r).ok()),
            filter: self.filter.clone(),
            revision: self.revision,
        }
    }
}

/// Columns written from settings on create and update.
#[derive(AsChangeset, Insertable)]
#[diesel(table_name = webhooks, treat_none_as_null = true)]
struct SettingsColumns {
    name: String,
    description: String,
    url: String,
    method: String,
    events: Vec<String>,
    events_key: String,
    client_ids: Vec<String>,
    headers: serde_json::Value,
    auth_type: String,
    auth_username: Option<String>,
    auth_header: Option<String>,
    auth_credential: Option<Vec<u8>>,
    active: bool,
    rate_limit: Option<i32>,
    filter: Option<serde_json::Value>,
}

impl SettingsColumns {
    fn new(id: WebhookId, s: &WebhookSettings, cipher: &Cipher) -> Result<Self, StoreError> {
        let ctx = credential_context(id);
        let (username, header, credential) = match &s.auth {
            WebhookAuth::None => (None, None, None),
            WebhookAuth::Basic { username, password } => (
                Some(username.clone()),
                None,
                Some(cipher.encrypt(password.as_bytes(), &ctx)?),
            ),
            WebhookAuth::Token { header, token } => (
                None,
                Some(header.clone()),
                Some(cipher.encrypt(token.as_bytes(), &ctx)?),
            ),
        };
        Ok(Self {
            name: s.name.clone(),
            description: s.description.clone(),
            url: s.url.clone(),
            method: s.method.as_str().to_owned(),
            events: s.events.iter().map(ToString::to_string).collect(),
            events_key: s.events_key(),
            client_ids: s.client_ids.clone(),
            headers: serde_json::to_value(&s.headers)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            auth_type: s.auth.kind().to_owned(),
            auth_username: username,
            auth_header: header,
            auth_credential: credential,
            active: s.active,
            rate_limit: s.rate_limit.and_then(|r| i32::try_from(r).ok()),
            filter: s.filter.as_ref().map(|f| f.as_json().clone()),
        })
    }
}

async fn live_secrets(
    conn: &mut AsyncPgConnection,
    id: WebhookId,
    now: DateTime<Utc>,
) -> QueryResult<Vec<SecretRow>> {
    use webhook_secrets::dsl;
    webhook_secrets::table
        .filter(dsl::webhook_id.eq(id.as_uuid()))
        .filter(dsl::expires_at.is_null().or(dsl::expires_at.gt(now)))
        .order(dsl::id.desc())
        .select(SecretRow::as_select())
        .load(conn)
        .await
}

/// Stores an encrypted key of `id` as its current one (no expiry).
async fn add_secret(
    conn: &mut AsyncPgConnection,
    id: WebhookId,
    ciphertext: Vec<u8>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    diesel::insert_into(webhook_secrets::table)
        .values((
            webhook_secrets::webhook_id.eq(id.as_uuid()),
            webhook_secrets::secret.eq(ciphertext),
            webhook_secrets::created_at.eq(now),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

async fn record_change(
    conn: &mut AsyncPgConnection,
    kind: ChangeKind,
    row: &WebhookRow,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let subscription = match kind {
        ChangeKind::Deleted => None,
        _ => Some(row.snapshot(&live_secrets(conn, row.id, now).await?)),
    };
    let change = SubscriptionChange {
        kind,
        tenant: row.tenant.clone(),
        webhook_id: row.id,
        revision: row.revision,
        changed_at: now,
        subscription,
    };
    outbox::enqueue(conn, &change).await
}

/// First key of the advisory lock a tenant's creates take (the second is the tenant's hash); the
/// two-key lock space is apart from the one-key locks used elsewhere.
const TENANT_CREATE_LOCK: i32 = 0x5742_0001;

/// Creates a subscription with its first secret. `Conflict` when the tenant already has one with
/// the same url, method and events; `None` when it already has `max_per_tenant` subscriptions
/// (0: no limit). Creates of one tenant take a lock for their transaction, so concurrent ones,
/// from any replica, count one after the other and never go over the limit together.
pub async fn create(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    tenant: &str,
    settings: &WebhookSettings,
    secret: &SigningSecret,
    max_per_tenant: u32,
) -> Result<Option<WebhookRow>, StoreError> {
    let id = WebhookId::generate();
    let now = now_micros();
    let columns = SettingsColumns::new(id, settings, cipher)?;
    let secret_ct = cipher.encrypt(secret.expose().as_bytes(), &secret_context(id))?;
    let tenant = tenant.to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        if max_per_tenant > 0 {
            diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind::<diesel::sql_types::Integer, _>(TENANT_CREATE_LOCK)
                .bind::<diesel::sql_types::Text, _>(&tenant)
                .execute(conn)
                .await?;
            // Read committed: this statement sees every create that held the lock before.
            let count: i64 = webhooks::table
                .filter(webhooks::tenant.eq(&tenant))
                .count()
                .get_result(conn)
                .await?;
            if count >= i64::from(max_per_tenant) {
                return Ok(None);
            }
        }
        let row = diesel::insert_into(webhooks::table)
            .values((
                webhooks::id.eq(id.as_uuid()),
                webhooks::tenant.eq(&tenant),
                columns,
                webhooks::revision.eq(1i64),
                webhooks::created_at.eq(now),
                webhooks::updated_at.eq(now),
            ))
            .returning(WebhookRow::as_returning())
            .get_result(conn)
            .await?;
        add_secret(conn, id, secret_ct, now).await?;
        record_change(conn, ChangeKind::Created, &row, now).await?;
        Ok(Some(row))
    })
    .await
}

/// One subscription of a tenant.
pub async fn find(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    id: WebhookId,
) -> QueryResult<Option<WebhookRow>> {
    webhooks::table
        .filter(webhooks::id.eq(id.as_uuid()))
        .filter(webhooks::tenant.eq(tenant))
        .select(WebhookRow::as_select())
        .first(conn)
        .await
        .optional()
}

/// Writes new settings if the row is still at `expected_revision`; `None` when another writer
/// got there first (the caller re-reads and re-applies).
pub async fn update(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    current: &WebhookRow,
    settings: &WebhookSettings,
) -> Result<Option<WebhookRow>, StoreError> {
    let now = now_micros();
    let columns = SettingsColumns::new(current.id, settings, cipher)?;
    // Re-enabling clears the reason the platform disabled it for.
    let disabled_reason = if settings.active {
        None
    } else {
        current.disabled_reason.clone()
    };
    let (id, tenant, expected) = (current.id, current.tenant.clone(), current.revision);
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let row = diesel::update(
            webhooks::table
                .filter(webhooks::id.eq(id.as_uuid()))
                .filter(webhooks::tenant.eq(&tenant))
                .filter(webhooks::revision.eq(expected)),
        )
        .set((
            columns,
            webhooks::disabled_reason.eq(disabled_reason),
            webhooks::revision.eq(expected + 1),
            webhooks::updated_at.eq(now),
        ))
        .returning(WebhookRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        if let Some(row) = &row {
            if row.active {
                // Any change of an active subscription (a fixed URL, or turning it back on)
                // closes its circuit and starts a new failing streak.
                endpoints::forget_health(conn, row.id.as_uuid()).await?;
            }
            record_change(conn, ChangeKind::Updated, row, now).await?;
        }
        Ok(row)
    })
    .await
}

/// Deletes a subscription (its secrets go with it). False when there was none.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    id: WebhookId,
) -> Result<bool, StoreError> {
    let tenant = tenant.to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let now = now_micros();
        let deleted = diesel::delete(
            webhooks::table
                .filter(webhooks::id.eq(id.as_uuid()))
                .filter(webhooks::tenant.eq(&tenant)),
        )
        .returning(WebhookRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(mut row) = deleted else {
            return Ok(false);
        };
        endpoints::forget(conn, row.id.as_uuid()).await?;
        row.revision += 1;
        record_change(conn, ChangeKind::Deleted, &row, now).await?;
        Ok(true)
    })
    .await
}

/// Turns off a subscription the platform gave up on, with the reason shown to its tenant.
/// `notify` runs inside the transaction, once the new row is known and before the commit: an
/// error from it undoes the change, so the tenant is never left untold. `None` when the
/// subscription is gone or already inactive (another replica got there first).
pub async fn disable<F, Fut>(
    conn: &mut AsyncPgConnection,
    id: WebhookId,
    reason: &str,
    notify: F,
) -> Result<Option<WebhookRow>, StoreError>
where
    F: FnOnce(WebhookRow) -> Fut + Send,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let reason = reason.to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let now = now_micros();
        let row = diesel::update(
            webhooks::table
                .filter(webhooks::id.eq(id.as_uuid()))
                .filter(webhooks::active.eq(true)),
        )
        .set((
            webhooks::active.eq(false),
            webhooks::disabled_reason.eq(Some(reason)),
            webhooks::revision.eq(webhooks::revision + 1),
            webhooks::updated_at.eq(now),
        ))
        .returning(WebhookRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        if let Some(row) = &row {
            endpoints::forget_health(conn, row.id.as_uuid()).await?;
            record_change(conn, ChangeKind::Updated, row, now).await?;
            notify(row.clone()).await.map_err(StoreError::Unavailable)?;
        }
        Ok(row)
    })
    .await
}

/// The current signing secret of a subscription.
pub async fn current_secret(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    tenant: &str,
    id: WebhookId,
) -> Result<Option<String>, StoreError> {
    let row: Option<Vec<u8>> = webhook_secrets::table
        .inner_join(webhooks::table)
        .filter(webhooks::id.eq(id.as_uuid()))
        .filter(webhooks::tenant.eq(tenant))
        .filter(webhook_secrets::expires_at.is_null())
        .select(webhook_secrets::secret)
        .first(conn)
        .await
        .optional()?;
    row.map(|ct| {
        cipher
            .decrypt_string(&ct, &secret_context(id))
            .map_err(StoreError::from)
    })
    .transpose()
}

/// Most rotated-out keys that keep signing during their grace period.
pub const MAX_PREVIOUS_SECRETS: i64 = 4;

/// Makes `secret` the current key; the old one keeps signing for `grace` (at most
/// [`MAX_PREVIOUS_SECRETS`] old keys are kept, the oldest dropped first). A grace of zero revokes
/// every earlier key at once. Returns when the old
/// key stops signing, or `None` when there is no such subscription.
pub async fn rotate_secret(
    conn: &mut AsyncPgConnection,
    cipher: &Cipher,
    tenant: &str,
    id: WebhookId,
    secret: &SigningSecret,
    grace: Duration,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let ct = cipher.encrypt(secret.expose().as_bytes(), &secret_context(id))?;
    let tenant = tenant.to_owned();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let now = now_micros();
        let row = diesel::update(
            webhooks::table
                .filter(webhooks::id.eq(id.as_uuid()))
                .filter(webhooks::tenant.eq(&tenant)),
        )
        .set((
            webhooks::revision.eq(webhooks::revision + 1),
            webhooks::updated_at.eq(now),
        ))
        .returning(WebhookRow::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(row) = row else { return Ok(None) };
        let expires = now + grace;
        use webhook_secrets::dsl;
        let mine = || webhook_secrets::table.filter(dsl::webhook_id.eq(id.as_uuid()));
        if grace.is_zero() {
            // Revoking (say, after a leak): only the new key signs from now on.
            diesel::delete(mine()).execute(conn).await?;
        } else {
            diesel::delete(mine().filter(dsl::expires_at.le(now)))
                .execute(conn)
                .await?;
            diesel::update(mine().filter(dsl::expires_at.is_null()))
                .set(dsl::expires_at.eq(expires))
                .execute(conn)
                .await?;
            // Every live key signs every delivery, so only the newest few old ones are kept.
            let keep: Vec<i64> = mine()
                .order(dsl::id.desc())
                .limit(MAX_PREVIOUS_SECRETS)
                .select(dsl::id)
                .load(conn)
                .await?;
            diesel::delete(mine().filter(dsl::id.ne_all(keep)))
                .execute(conn)
                .await?;
        }
        add_secret(conn, id, ct, now).await?;
        record_change(conn, ChangeKind::SecretRotated, &row, now).await?;
        Ok(Some(expires))
    })
    .await
}

/// Every subscription as the change feed describes it, ordered by id, a page at a time
/// (`after` is the last id of the previous page). A consumer that missed changes rebuilds its
/// view from these; each carries the `revision` its change messages would.
pub async fn snapshots(
    conn: &mut AsyncPgConnection,
    after: Option<WebhookId>,
    limit: i64,
) -> QueryResult<Vec<SubscriptionSnapshot>> {
    let mut q = webhooks::table
        .order(webhooks::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(webhooks::id.gt(after.as_uuid()));
    }
    let rows: Vec<WebhookRow> = q.select(WebhookRow::as_select()).load(conn).await?;
    with_secrets(conn, rows).await
}

/// One subscription as the change feed describes it, whatever its tenant; `None` once deleted.
pub async fn snapshot(
    conn: &mut AsyncPgConnection,
    id: WebhookId,
) -> QueryResult<Option<SubscriptionSnapshot>> {
    let rows: Vec<WebhookRow> = webhooks::table
        .filter(webhooks::id.eq(id.as_uuid()))
        .select(WebhookRow::as_select())
        .load(conn)
        .await?;
    Ok(with_secrets(conn, rows).await?.pop())
}

/// Snapshots of `rows` with the signing keys still in force.
async fn with_secrets(
    conn: &mut AsyncPgConnection,
    rows: Vec<WebhookRow>,
) -> QueryResult<Vec<SubscriptionSnapshot>> {
    let now = now_micros();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id.as_uuid()).collect();
    let secrets: Vec<SecretRow> = webhook_secrets::table
        .filter(webhook_secrets::webhook_id.eq_any(&ids))
        .filter(
            webhook_secrets::expires_at
                .is_null()
                .or(webhook_secrets::expires_at.gt(now)),
        )
        .order(webhook_secrets::id.desc())
        .select(SecretRow::as_select())
        .load(conn)
        .await?;
    let mut by_webhook: BTreeMap<WebhookId, Vec<SecretRow>> = BTreeMap::new();
    for s in secrets {
        by_webhook.entry(s.webhook_id).or_default().push(s);
    }
    Ok(rows
        .iter()
        .map(|r| r.snapshot(by_webhook.get(&r.id).map_or(&[][..], Vec::as_slice)))
        .collect())
}

/// Sort keys of the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    CreatedAt,
    UpdatedAt,
    Name,
    Url,
}

/// Filters and order of the listing.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub sort: SortKey,
    pub descending: bool,
    /// Keep subscriptions that would receive this event type.
    pub event: Option<String>,
    pub active: Option<bool>,
    /// Keep subscriptions with a filter (`true`) or without one (`false`).
    pub has_filter: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

/// A page of a tenant's subscriptions and the total that matches.
pub async fn list(
    conn: &mut AsyncPgConnection,
    tenant: &str,
    q: &ListQuery,
) -> QueryResult<(Vec<WebhookRow>, i64)> {
    let filtered = || {
        let mut b = webhooks::table
            .filter(webhooks::tenant.eq(tenant.to_owned()))
            .into_boxed();
        if let Some(event) = &q.event {
            b = b.filter(webhooks::events.overlaps_with(EventPattern::covering(event)));
        }
        if let Some(active) = q.active {
            b = b.filter(webhooks::active.eq(active));
        }
        match q.has_filter {
            Some(true) => b = b.filter(webhooks::filter.is_not_null()),
            Some(false) => b = b.filter(webhooks::filter.is_null()),
            None => {}
        }
        b
    };
    let total: i64 = filtered().count().get_result(conn).await?;
    let mut page = filtered();
    page = match (q.sort, q.descending) {
        (SortKey::CreatedAt, false) => page.order((webhooks::created_at.asc(), webhooks::id.asc())),
        (SortKey::CreatedAt, true) => {
            page.order((webhooks::created_at.desc(), webhooks::id.desc()))
        }
        (SortKey::UpdatedAt, false) => page.order((webhooks::updated_at.asc(), webhooks::id.asc())),
        (SortKey::UpdatedAt, true) => {
            page.order((webhooks::updated_at.desc(), webhooks::id.desc()))
        }
        (SortKey::Name, false) => page.order((webhooks::name.asc(), webhooks::id.asc())),
        (SortKey::Name, true) => page.order((webhooks::name.desc(), webhooks::id.desc())),
        (SortKey::Url, false) => page.order((webhooks::url.asc(), webhooks::id.asc())),
        (SortKey::Url, true) => page.order((webhooks::url.desc(), webhooks::id.desc())),
    };
    let rows = page
        .limit(q.limit)
        .offset(q.offset)
        .select(WebhookRow::as_select())
        .load(conn)
        .await?;
    Ok((rows, total))
}
