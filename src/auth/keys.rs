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

/// RSA keys shorter than this are refused (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;

/// Why a JWKS key was left out: the `reason` label of
/// `sessiongate_jwks_keys_skipped_total`, and the detail for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub reason: &'static str,
    pub why: String,
}

impl Skipped {
    /// An RSA key under `MIN_RSA_BITS`.
    pub const WEAK: &'static str = "weak_key";
    /// Anything else we do not use: `use=enc`, `oct`, other curves or algorithms.
    pub const UNSUPPORTED: &'static str = "unsupported";
    pub const REASONS: [&'static str; 2] = [Self::WEAK, Self::UNSUPPORTED];

    fn unsupported(why: impl Into<String>) -> Self {
        Self { reason: Self::UNSUPPORTED, why: why.into() }
    }
}

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
            let bits = rsa_key_bits(&k)
                .with_context(|| format!("{}: cannot read the RSA key's size", path.display()))?;
            if bits < MIN_RSA_BITS {
                bail!(
                    "{}: an RSA key of {bits} bits; RS256 and PS256 need at least {MIN_RSA_BITS} (RFC 7518 §3.3)",
                    path.display()
                );
            }
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
    /// RSA keys under `MIN_RSA_BITS` are refused as weak.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, Skipped> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(Skipped::unsupported("an encryption key (use=enc)"));
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                let bits = modulus_bits(&p.n)
                    .ok_or_else(|| Skipped::unsupported("an RSA modulus that is not base64url"))?;
                if bits < MIN_RSA_BITS {
                    return Err(Skipped {
                        reason: Skipped::WEAK,
                        why: format!(
                            "an RSA key of {bits} bits; at least {MIN_RSA_BITS} are needed (RFC 7518 §3.3)"
                        ),
                    });
                }
                Family::Rsa
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Family::Ec,
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Family::Ed,
            _ => return Err(Skipped::unsupported("unsupported key type or curve")),
        };
        let pinned = match jwk.common.key_algorithm {
            None => None,
            Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
            Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
            Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
            Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
            Some(other) => return Err(Skipped::unsupported(format!("algorithm {other:?} is not allowed"))),
        };
        if pinned.is_some_and(|p| family_of(p) != Some(family)) {
            return Err(Skipped::unsupported("the key's alg does not fit its key type"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| Skipped::unsupported(e.to_string()))?;
        Ok(Self { kid: jwk.common.key_id.clone(), family, pinned, key })
    }
}

/// The size of an RSA key as jsonwebtoken read it from a PEM file (SPKI,
/// PKCS#1 or a certificate: in each case the PKCS#1 public key's DER).
fn rsa_key_bits(key: &DecodingKey) -> anyhow::Result<usize> {
    use jsonwebtoken::DecodingKeyKind;
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::traits::PublicKeyParts;
    match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => Ok(rsa::RsaPublicKey::from_pkcs1_der(der)?.n().bits()),
        DecodingKeyKind::RsaModulusExponent { n, .. } => modulus_bits_of(n).context("an empty modulus"),
    }
}

/// The bits of a JWK's base64url modulus `n`, leading zeros left out.
fn modulus_bits(n: &str) -> Option<usize> {
    use base64::Engine;
    modulus_bits_of(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(n.trim_end_matches('=')).ok()?)
}

/// The bits of a big-endian modulus, leading zeros left out.
fn modulus_bits_of(bytes: &[u8]) -> Option<usize> {
    let first = bytes.iter().position(|&b| b != 0)?;
    Some((bytes.len() - first - 1) * 8 + (8 - bytes[first].leading_zeros() as usize))
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

    #[test]
    fn modulus_bits_leave_out_leading_zeros() {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(modulus_bits(&b64(&[0x80; 256])), Some(2048));
        assert_eq!(modulus_bits(&b64(&[0x01, 0xff])), Some(9));
        assert_eq!(modulus_bits(&b64(&[0x00, 0x00, 0x80])), Some(8));
        assert_eq!(modulus_bits(&b64(&[0x00])), None);
        assert_eq!(modulus_bits("not base64!"), None);
    }
}
