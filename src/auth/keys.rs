//! Verification keys and the rule for which key may verify which token.
//!
//! The algorithm always comes from the key: a key belongs to one family
//! (HMAC, RSA, EC P-256, Ed25519) and verifies only that family's allowed
//! algorithms — an RSA key RS256 and PS256, unless its JWK pins one. A token
//! can only choose among keys; it can never turn a public key into an HMAC
//! secret, and `none` is not an algorithm here.

use anyhow::{Context, bail};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::Path;

/// The only algorithms accepted (RFC 8725: an explicit allowlist).
pub const ALLOWED: [Algorithm; 5] =
    [Algorithm::HS256, Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

/// The family of an allowed algorithm; `None` for anything not allowed.
pub fn family_of(alg: Algorithm) -> Option<Family> {
    match alg {
        Algorithm::HS256 => Some(Family::Hmac),
        Algorithm::RS256 | Algorithm::PS256 => Some(Family::Rsa),
        Algorithm::ES256 => Some(Family::Ec),
        Algorithm::EdDSA => Some(Family::Ed),
        _ => None,
    }
}

pub struct VerifyingKey {
    pub kid: Option<String>,
    pub family: Family,
    /// A JWK's `alg`, when it pins one.
    pub pinned: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    pub fn hmac(secret: &[u8]) -> Self {
        Self { kid: None, family: Family::Hmac, pinned: None, key: DecodingKey::from_secret(secret) }
    }

    /// May this key verify a token signed with `alg`?
    pub fn accepts(&self, alg: Algorithm) -> bool {
        family_of(alg) == Some(self.family) && self.pinned.is_none_or(|p| p == alg)
    }

    /// A PEM public key (SPKI, or PKCS#1 for RSA); its `kid` is the file stem.
    pub fn from_pem_file(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let kid = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let (family, key) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
            (Family::Rsa, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
            (Family::Ec, k)
        } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
            (Family::Ed, k)
        } else {
            bail!("{} is not an RSA, EC P-256 or Ed25519 public key in PEM form", path.display());
        };
        Ok(Self { kid, family, pinned: None, key })
    }

    /// A key from a JWKS. Symmetric (`oct`) keys and curves we do not accept
    /// are refused: a key set served over the network never holds secrets.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, String> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err("an encryption key (use=enc)".into());
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Family::Ec,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Family::Ed,
            _ => return Err("unsupported key type or curve".into()),
        };
        let pinned = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(other) => return Err(format!("algorithm {other:?} is not allowed")),
        };
        if pinned.is_some_and(|p| family_of(p) != Some(family)) {
            return Err("the key's alg does not fit its key type".into());
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
        Ok(Self { kid: jwk.common.key_id.clone(), family, pinned, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_pins_decide_acceptance() {
        let rsa = VerifyingKey {
            kid: None,
            family: Family::Rsa,
            pinned: None,
            key: DecodingKey::from_secret(b"unused"),
        };
        assert!(rsa.accepts(Algorithm::RS256) && rsa.accepts(Algorithm::PS256));
        assert!(!rsa.accepts(Algorithm::HS256) && !rsa.accepts(Algorithm::RS384));
        let pinned = VerifyingKey { pinned: Some(Algorithm::RS256), ..rsa };
        assert!(pinned.accepts(Algorithm::RS256) && !pinned.accepts(Algorithm::PS256));
        let hmac = VerifyingKey::hmac(b"k");
        assert!(hmac.accepts(Algorithm::HS256) && !hmac.accepts(Algorithm::HS384));
    }
}
