//! Bearer JWT authentication, scopes and the per-tenant rate limit.

use std::{collections::HashSet, future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use waybill_domain::{Scope, TenantId};

use crate::{ApiError, config::Settings, rate_limit::TenantLimiter};

/// The claims Waybill reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub tenant: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// Keys to verify (and, for HS256, to mint) tokens.
#[derive(Clone)]
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

impl JwtKeys {
    pub fn from_settings(s: &Settings) -> anyhow::Result<Self> {
        match &s.auth.jwt_public_key {
            Some(pem) => Ok(Self::rs256(pem.as_bytes())?),
            None => Ok(Self::hs256(s.jwt_secret().as_bytes())),
        }
    }

    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            decoding: DecodingKey::from_secret(secret),
            encoding: Some(EncodingKey::from_secret(secret)),
            validation: validation(Algorithm::HS256),
        }
    }

    pub fn rs256(public_pem: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            decoding: DecodingKey::from_rsa_pem(public_pem).map_err(|e| {
                anyhow::anyhow!("auth.jwt_public_key is not an RSA public key in PEM: {e}")
            })?,
            encoding: None,
            validation: validation(Algorithm::RS256),
        })
    }

    /// Checks a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Auth, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let why = match e.kind() {
                ErrorKind::ExpiredSignature => "The token has expired.",
                ErrorKind::InvalidSignature => "The token's signature is invalid.",
                ErrorKind::InvalidAlgorithm => "The token is signed with an algorithm this server does not accept.",
                ErrorKind::MissingRequiredClaim(_) => "The token lacks a required claim (`tenant`, `exp`).",
                ErrorKind::Json(_) => "The token's claims are malformed (`tenant` string, `scopes` array, `exp` number).",
                _ => "The token is malformed.",
            };
            ApiError::unauthorized(why)
        })?;
        let tenant = TenantId::parse(&data.claims.tenant).map_err(|_| {
            ApiError::unauthorized(
                "The token's `tenant` claim must be 1 to 64 characters of [A-Za-z0-9._-].",
            )
        })?;
        // Unknown scope names are ignored, so older servers accept tokens naming newer scopes.
        let scopes = data
            .claims
            .scopes
            .iter()
            .filter_map(|s| Scope::parse(s))
            .collect();
        Ok(Auth { tenant, scopes })
    }

    /// Mints an HS256 token (operators' `token` subcommand, tests).
    pub fn mint(
        &self,
        tenant: &TenantId,
        scopes: &[Scope],
        ttl: chrono::Duration,
    ) -> anyhow::Result<String> {
        let key = self.encoding.as_ref().ok_or_else(|| {
            anyhow::anyhow!("tokens can only be minted with an HS256 secret (auth.jwt_secret)")
        })?;
        let now = chrono::Utc::now();
        let claims = Claims {
            tenant: tenant.to_string(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            exp: (now + ttl).timestamp(),
            iat: Some(now.timestamp()),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            key,
        )?)
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.set_required_spec_claims(&["exp"]);
    v.leeway = 30;
    v.validate_nbf = true;
    // Tokens from an identity provider usually name an audience; Waybill does not check it.
    v.validate_aud = false;
    v
}

/// What every binary's `token` subcommand does: a token for `tenant` with the comma-separated
/// `scopes`, valid for `ttl`.
pub fn mint_for_operator(
    settings: &Settings,
    tenant: &str,
    scopes: &str,
    ttl: &str,
) -> anyhow::Result<String> {
    let tenant = TenantId::parse(tenant).map_err(anyhow::Error::msg)?;
    let scopes = scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Scope::parse(s).ok_or_else(|| anyhow::anyhow!("unknown scope `{s}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    JwtKeys::from_settings(settings)?.mint(&tenant, &scopes, parse_ttl(ttl)?)
}

/// Parses `1h`, `30m`, `7d`, `3600s` or plain seconds.
pub fn parse_ttl(raw: &str) -> anyhow::Result<chrono::Duration> {
    let raw = raw.trim();
    let (num, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("ttl must look like 3600, 90s, 30m, 12h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => anyhow::bail!("ttl must look like 3600, 90s, 30m, 12h or 7d"),
    };
    if secs <= 0 {
        anyhow::bail!("ttl must be positive");
    }
    Ok(chrono::Duration::seconds(secs))
}

/// What a handler needs to authenticate requests, kept in app data.
#[derive(Clone)]
pub struct AuthState {
    pub keys: JwtKeys,
    pub limiter: TenantLimiter,
}

/// An authenticated caller: its tenant and scopes. Extracting it also spends one unit of the
/// tenant's rate limit.
#[derive(Debug, Clone)]
pub struct Auth {
    pub tenant: TenantId,
    pub scopes: HashSet<Scope>,
}

impl Auth {
    /// Passes when the token carries `admin` or any of `scopes`.
    pub fn require_any(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        if self.scopes.contains(&Scope::Admin) || scopes.iter().any(|s| self.scopes.contains(s)) {
            Ok(())
        } else {
            let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "This action needs the scope `{}`.",
                names.join("` or `")
            )))
        }
    }
}

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let result = authenticate(req);
        Box::pin(async move { result })
    }
}

fn authenticate(req: &HttpRequest) -> Result<Auth, ApiError> {
    let state = req
        .app_data::<web::Data<AuthState>>()
        .ok_or_else(|| ApiError::internal("AuthState missing from app data"))?;
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("Send a bearer token: `Authorization: Bearer <token>`.")
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("The Authorization header is not valid ASCII."))?;
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("The Authorization header must be `Bearer <token>`.")
        })?;
    let auth = state.keys.verify(token)?;
    state
        .limiter
        .check(auth.tenant.as_str())
        .map_err(|wait| ApiError::rate_limited(wait.as_secs_f64().ceil() as u64))?;
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mint_and_verify() {
        let keys = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef");
        let t = TenantId::parse("acme").unwrap();
        let token = keys
            .mint(&t, &[Scope::WebhooksRead], chrono::Duration::hours(1))
            .unwrap();
        let auth = keys.verify(&token).unwrap();
        assert_eq!(auth.tenant, t);
        assert!(auth.require_any(&[Scope::WebhooksRead]).is_ok());
        assert!(auth.require_any(&[Scope::WebhooksWrite]).is_err());
        let other = JwtKeys::hs256(b"another-secret-another-secret-xx");
        assert!(other.verify(&token).is_err());
        let expired = keys.mint(&t, &[], chrono::Duration::seconds(1)).unwrap();
        let mut claims: Claims = serde_json::from_value(
            serde_json::json!({"tenant": "acme", "scopes": [], "exp": 1000}),
        )
        .unwrap();
        claims.iat = None;
        let old = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        assert_eq!(
            keys.verify(&old).unwrap_err().message(),
            "The token has expired."
        );
        assert!(keys.verify(&expired).is_ok());
    }

    #[test]
    fn ttl() {
        assert_eq!(parse_ttl("90").unwrap().num_seconds(), 90);
        assert_eq!(parse_ttl("12h").unwrap().num_seconds(), 43200);
        assert_eq!(parse_ttl("7d").unwrap().num_days(), 7);
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
