//! API keys for services: the config holds an id, the SHA-256 of the key and
//! roles — never the key. A presented key is hashed and compared against
//! every configured hash in constant time.

use super::{AuthFailure, Principal, PrincipalKind};
use crate::config::ApiKeyConfig;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Longer keys are refused without hashing.
const MAX_KEY_BYTES: usize = 512;

struct Entry {
    principal: Principal,
    sha256: [u8; 32],
}

pub struct ApiKeys(Vec<Entry>);

impl ApiKeys {
    pub fn from_config(keys: &[ApiKeyConfig], admin_role: &str) -> anyhow::Result<Self> {
        let mut entries = Vec::new();
        for k in keys {
            let mut sha256 = [0u8; 32];
            hex::decode_to_slice(&k.sha256, &mut sha256)
                .map_err(|_| anyhow::anyhow!("auth.api_keys: {:?} has an invalid sha256", k.id))?;
            entries.push(Entry {
                principal: Principal {
                    id: Arc::from(format!("apikey:{}", k.id)),
                    kind: PrincipalKind::ApiKey,
                    roles: Arc::from(k.roles.clone()),
                    is_admin: k.roles.iter().any(|r| r == admin_role),
                },
                sha256,
            });
        }
        Ok(Self(entries))
    }

    pub fn authenticate(&self, presented: &[u8]) -> Result<Principal, AuthFailure> {
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return Err(AuthFailure::BadApiKey);
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        // Every entry is compared, whichever matches, so timing says nothing.
        let mut found = None;
        for e in &self.0 {
            if bool::from(e.sha256.ct_eq(&digest)) {
                found = Some(&e.principal);
            }
        }
        found.cloned().ok_or(AuthFailure::BadApiKey)
    }
}

/// A new random key and its SHA-256, for `sessiongate hash-key`.
pub fn generate() -> (String, String) {
    let key = format!("sg_{}", hex::encode(rand::random::<[u8; 32]>()));
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    (key, hash)
}

/// The SHA-256 of a given key, hex.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_configured_hash() {
        let (key, hash) = generate();
        let keys = ApiKeys::from_config(
            &[ApiKeyConfig { id: "billing".into(), sha256: hash, roles: vec!["admin".into()] }],
            "admin",
        )
        .unwrap();
        let p = keys.authenticate(key.as_bytes()).unwrap();
        assert_eq!(&*p.id, "apikey:billing");
        assert!(p.is_admin);
        assert_eq!(keys.authenticate(b"sg_wrong"), Err(AuthFailure::BadApiKey));
        assert_eq!(keys.authenticate(b""), Err(AuthFailure::BadApiKey));
    }
}
