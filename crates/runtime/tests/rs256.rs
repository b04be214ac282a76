//! RS256 tokens, the option for installations whose tokens come from an identity provider.

#![allow(clippy::unwrap_used)]

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use waybill_domain::Scope;
use waybill_runtime::JwtKeys;

const PRIVATE: &[u8] = include_bytes!("fixtures/rs256-test-private.pem");
const PUBLIC: &[u8] = include_bytes!("fixtures/rs256-test-public.pem");

fn sign(alg: Algorithm, key: &EncodingKey) -> String {
    let exp = chrono::Utc::now().timestamp() + 600;
    jsonwebtoken::encode(
        &Header::new(alg),
        &json!({"tenant": "acme", "scopes": ["webhooks:read"], "exp": exp}),
        key,
    )
    .unwrap()
}

#[test]
fn rs256_tokens_verify_with_the_public_key() {
    let keys = JwtKeys::rs256(PUBLIC).unwrap();
    let token = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(PRIVATE).unwrap(),
    );
    let auth = keys.verify(&token).unwrap();
    assert_eq!(auth.tenant.as_str(), "acme");
    assert!(auth.scopes.contains(&Scope::WebhooksRead));
}

#[test]
fn rs256_installations_refuse_hs256_tokens_even_keyed_with_the_public_key() {
    let keys = JwtKeys::rs256(PUBLIC).unwrap();
    // The classic algorithm confusion: an HS256 token whose HMAC key is the public key's PEM.
    let forged = sign(Algorithm::HS256, &EncodingKey::from_secret(PUBLIC));
    assert_eq!(keys.verify(&forged).unwrap_err().code(), "unauthorized");
    assert!(
        keys.mint(
            &waybill_domain::TenantId::parse("acme").unwrap(),
            &[],
            chrono::Duration::hours(1)
        )
        .is_err()
    );
    assert!(JwtKeys::rs256(b"not a pem").is_err());
}
