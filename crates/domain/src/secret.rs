//! Signing secrets in the Standard Webhooks form.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};

/// Prefix of secrets whose key is base64-encoded.
pub const WHSEC_PREFIX: &str = "whsec_";

/// A subscription's signing secret: the string a tenant sees and the key bytes it stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(••••••••)")
    }
}

impl SigningSecret {
    /// Parses a secret chosen by a tenant: 8–128 printable ASCII characters; a `whsec_` secret
    /// must carry base64 of 24–64 bytes, which are then the key.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !(8..=128).contains(&raw.len()) {
            return Err("must be 8 to 128 characters".into());
        }
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err("must be printable ASCII".into());
        }
        let key = match raw.strip_prefix(WHSEC_PREFIX) {
            Some(encoded) => {
                let key = STANDARD
                    .decode(encoded)
                    .or_else(|_| STANDARD_NO_PAD.decode(encoded))
                    .map_err(|_| "after `whsec_` must come standard base64".to_string())?;
                if !(24..=64).contains(&key.len()) {
                    return Err(format!(
                        "after `whsec_` must come base64 of 24 to 64 bytes, got {} bytes",
                        key.len()
                    ));
                }
                key
            }
            None => raw.as_bytes().to_vec(),
        };
        Ok(Self {
            text: raw.to_owned(),
            key,
        })
    }

    /// A new `whsec_` secret from 32 random bytes supplied by the caller.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self {
            text: format!("{WHSEC_PREFIX}{}", STANDARD.encode(bytes)),
            key: bytes.to_vec(),
        }
    }

    /// The secret as the tenant sees it.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(
            SigningSecret::parse("plainsecret").unwrap().key(),
            b"plainsecret"
        );
        assert!(SigningSecret::parse("short").is_err());
        assert!(SigningSecret::parse(&"a".repeat(129)).is_err());
        assert!(SigningSecret::parse("tab\there!!").is_err());
        let k = STANDARD.encode([7u8; 24]);
        assert_eq!(
            SigningSecret::parse(&format!("whsec_{k}")).unwrap().key(),
            &[7u8; 24]
        );
        assert!(SigningSecret::parse(&format!("whsec_{}", STANDARD.encode([1u8; 16]))).is_err());
        assert!(SigningSecret::parse("whsec_not*base64*at*all").is_err());
        let g = SigningSecret::from_random([9u8; 32]);
        assert_eq!(SigningSecret::parse(g.expose()).unwrap(), g);
        assert!(!format!("{g:?}").contains("whsec"));
    }
}
