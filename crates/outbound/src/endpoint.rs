//! A subscription as a request is made to it: where, how, and with which credentials and
//! signing keys, decrypted once when the subscription is loaded.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use waybill_domain::{HttpMethod, SigningSecret, change::SubscriptionSnapshot};
use waybill_store::{
    Cipher,
    crypto::{credential_context, secret_context},
};

/// One signing key and when it stops signing (`None`: the current key).
#[derive(Clone)]
pub struct SigningKey {
    pub key: Vec<u8>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a stored subscription cannot be sent to.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("unknown method `{0}`")]
    Method(String),
    // The texts are what a cancelled delivery's `last_error` shows; they stay as they were.
    #[error("ciphertext is not base64")]
    Encoding,
    #[error("{0}")]
    Decrypt(String),
    #[error("{0}")]
    Key(String),
    #[error("auth `{0}` without its credential")]
    MissingCredential(String),
}

/// The receiving end of a subscription.
#[derive(Clone)]
pub struct Endpoint {
    pub id: waybill_domain::WebhookId,
    pub url: String,
    pub method: HttpMethod,
    pub headers: Vec<(String, String)>,
    /// The auth header's name and value (`Authorization: Basic …` or the token header).
    pub auth: Option<(String, String)>,
    pub keys: Vec<SigningKey>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Decrypts a snapshot's credentials and keys.
    pub fn from_snapshot(s: &SubscriptionSnapshot, cipher: &Cipher) -> Result<Self, EndpointError> {
        let method =
            HttpMethod::parse(&s.method).ok_or_else(|| EndpointError::Method(s.method.clone()))?;
        let decrypt = |encoded: &str, context: &str| -> Result<String, EndpointError> {
            let ct = STANDARD
                .decode(encoded)
                .map_err(|_| EndpointError::Encoding)?;
            cipher
                .decrypt_string(&ct, context)
                .map_err(|e| EndpointError::Decrypt(e.to_string()))
        };
        let credential = s
            .auth
            .credential_encrypted
            .as_deref()
            .map(|c| decrypt(c, &credential_context(s.id)))
            .transpose()?;
        let auth = match (s.auth.kind.as_str(), credential) {
            ("none", _) => None,
            ("basic", Some(password)) => {
                let user = s.auth.username.clone().unwrap_or_default();
                Some((
                    "authorization".to_owned(),
                    format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
                ))
            }
            ("token", Some(token)) => Some((
                s.auth
                    .header
                    .clone()
                    .unwrap_or_else(|| "authorization".to_owned()),
                token,
            )),
            (kind, _) => return Err(EndpointError::MissingCredential(kind.to_owned())),
        };
        let keys = s
            .secrets
            .iter()
            .map(|k| {
                let text = decrypt(&k.secret_encrypted, &secret_context(s.id))?;
                let secret = SigningSecret::parse(&text).map_err(EndpointError::Key)?;
                Ok(SigningKey {
                    key: secret.key().to_vec(),
                    expires_at: k.expires_at,
                })
            })
            .collect::<Result<Vec<_>, EndpointError>>()?;
        Ok(Endpoint {
            id: s.id,
            url: s.url.clone(),
            method,
            headers: s
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            auth,
            keys,
        })
    }

    /// The keys that sign a request made at `now`.
    pub fn keys_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &[u8]> {
        self.keys
            .iter()
            .filter(move |k| k.expires_at.is_none_or(|e| e > now))
            .map(|k| k.key.as_slice())
    }
}
