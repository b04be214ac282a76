//! Encryption at rest for credentials: AES-256-GCM with a random nonce per value, bound to the
//! row and column it belongs to (associated data), so a ciphertext copied elsewhere fails.

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, Generate, KeyInit, Payload},
};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// Encrypts and decrypts credentials with the operator's key.
#[derive(Clone)]
pub struct Cipher {
    aead: Aes256Gcm,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(AES-256-GCM)")
    }
}

/// A value that cannot be decrypted: wrong key, or tampered with.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the encryption key must be 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("a stored credential cannot be decrypted (wrong key or tampered data)")]
    Decrypt,
    #[error("a credential could not be encrypted")]
    Encrypt,
}

impl Cipher {
    pub fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let aead = Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::KeyLength(key.len()))?;
        Ok(Self { aead })
    }

    /// `version || nonce || ciphertext+tag`.
    pub fn encrypt(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let nonce = Nonce::generate();
        let sealed = self
            .aead
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn decrypt(&self, stored: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        let (version, rest) = stored.split_first().ok_or(CryptoError::Decrypt)?;
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        self.aead
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }

    pub fn decrypt_string(&self, stored: &[u8], context: &str) -> Result<String, CryptoError> {
        String::from_utf8(self.decrypt(stored, context)?).map_err(|_| CryptoError::Decrypt)
    }
}

/// The associated data of a webhook's signing secret.
pub fn secret_context(webhook_id: waybill_domain::WebhookId) -> String {
    format!("webhook:{webhook_id}:secret")
}

/// The associated data of a webhook's auth credential.
pub fn credential_context(webhook_id: waybill_domain::WebhookId) -> String {
    format!("webhook:{webhook_id}:auth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let c = Cipher::new(&[3u8; 32]).unwrap();
        let s = c.encrypt(b"hunter2", "a").unwrap();
        assert_eq!(c.decrypt(&s, "a").unwrap(), b"hunter2");
        assert!(c.decrypt(&s, "b").is_err(), "bound to its context");
        assert!(
            Cipher::new(&[4u8; 32]).unwrap().decrypt(&s, "a").is_err(),
            "wrong key"
        );
        assert_ne!(
            c.encrypt(b"hunter2", "a").unwrap(),
            s,
            "fresh nonce each time"
        );
        assert!(!s.windows(7).any(|w| w == b"hunter2"));
        assert!(Cipher::new(&[0u8; 16]).is_err());
        assert!(c.decrypt(&[], "a").is_err());
    }
}
