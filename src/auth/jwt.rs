//! Bearer JWT verification, and minting (HS256) for development.
//!
//! RFC 8725 rules: an explicit algorithm allowlist; the algorithm must fit the
//! key (never taken from the token alone; `none` is never accepted); `exp`,
//! `sub`, `iss` and `aud` are required; `nbf` is checked; a small leeway
//! absorbs clock skew. Explicit typing: a `typ`, when present, is `JWT` or
//! `at+jwt` (RFC 9068); a `crit` header is refused, as we understand no
//! extension (RFC 7515 §4.1.11); `exp` may lie at most
//! `auth.max_token_lifetime` ahead and `iat` not in the future.

use super::jwks::Jwks;
use super::keys::{ALLOWED, VerifyingKey};
use super::{AuthFailure, Principal, PrincipalKind, roles_from};
use crate::config::{AuthConfig, Secret};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    pub iss: String,
    pub aud: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// What a token must say besides its signature: from `[auth]`.
#[derive(Debug, Clone)]
pub struct TokenRules {
    pub issuer: String,
    pub audience: String,
    pub leeway: Duration,
    /// Zero: no bound.
    pub max_lifetime: Duration,
    pub admin_role: String,
}

impl From<&AuthConfig> for TokenRules {
    fn from(a: &AuthConfig) -> Self {
        Self {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            leeway: a.leeway,
            max_lifetime: a.max_token_lifetime,
            admin_role: a.admin_role.clone(),
        }
    }
}

/// Verifies bearer tokens against the configured keys and, when one is
/// configured, a JWKS.
pub struct JwtVerifier {
    /// The HS256 secret and the PEM keys.
    static_keys: Vec<Arc<VerifyingKey>>,
    jwks: Option<Arc<Jwks>>,
    /// One prepared validation per allowed algorithm.
    validations: Vec<(Algorithm, Validation)>,
    rules: TokenRules,
    verified: VerifiedCache,
}

impl JwtVerifier {
    pub fn new(static_keys: Vec<VerifyingKey>, jwks: Option<Arc<Jwks>>, rules: TokenRules) -> Self {
        let validations = ALLOWED
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
                v.validate_nbf = true;
                v.validate_exp = true;
                v.leeway = rules.leeway.as_secs();
                v.set_issuer(&[&rules.issuer]);
                v.set_audience(&[&rules.audience]);
                (alg, v)
            })
            .collect();
        Self {
            static_keys: static_keys.into_iter().map(Arc::new).collect(),
            jwks,
            validations,
            verified: VerifiedCache::new(rules.leeway),
            rules,
        }
    }

    /// A verifier for HS256 tokens only (dev mode, tests).
    pub fn hs256(secret: &Secret, rules: TokenRules) -> Self {
        Self::new(vec![VerifyingKey::hmac(secret.expose().as_bytes())], None, rules)
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, AuthFailure> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::Malformed);
        }
        if let Some(principal) = self.verified.get(token) {
            return Ok(principal);
        }
        // Boxed: the decoded header and a JWKS refetch make this part's
        // future large, and every request's future would carry it.
        Box::pin(self.verify_uncached(token)).await
    }

    /// A token not in the cache: decode, check, and cache it.
    async fn verify_uncached(&self, token: &str) -> Result<Principal, AuthFailure> {
        // The header only chooses among our keys; `jku`/`x5u` are never read.
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        if header.crit.is_some() {
            return Err(AuthFailure::UnsupportedCrit);
        }
        if header.typ.as_deref().is_some_and(|typ| !typed_as_jwt(typ)) {
            return Err(AuthFailure::BadType);
        }
        let alg = header.alg;
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or(AuthFailure::BadSignature)?;
        let claims = match header.kid {
            Some(kid) => {
                let key = self.key_for_kid(&kid).await.ok_or(AuthFailure::UnknownKid)?;
                if !key.accepts(alg) {
                    return Err(AuthFailure::BadSignature);
                }
                decode(token, &key, validation)?
            }
            None => self.try_family(token, alg, validation)?,
        };
        self.check_times(&claims)?;
        let exp = claims.exp;
        let principal = self.principal(claims)?;
        self.verified.put(token, &principal, exp);
        Ok(principal)
    }

    async fn key_for_kid(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        if let Some(k) = self.static_keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
            return Some(k.clone());
        }
        let jwks = self.jwks.as_ref()?;
        if let Some(k) = jwks.current().find(kid) {
            return Some(k.clone());
        }
        if jwks.refetch_for(kid).await { jwks.current().find(kid).cloned() } else { None }
    }

    /// No `kid`: try every key of the algorithm's family; the first whose
    /// signature matches decides.
    fn try_family(
        &self,
        token: &str,
        alg: Algorithm,
        validation: &Validation,
    ) -> Result<Claims, AuthFailure> {
        let jwks = self.jwks.as_ref().map(|j| j.current());
        let jwks_keys = jwks.iter().flat_map(|c| c.keys.iter());
        for key in self.static_keys.iter().chain(jwks_keys).filter(|k| k.accepts(alg)) {
            match decode(token, key, validation) {
                Err(AuthFailure::BadSignature) => continue,
                other => return other,
            }
        }
        Err(AuthFailure::BadSignature)
    }

    /// `exp` within the longest lifetime, `iat` not in the future (both with
    /// leeway); the signature and `exp`/`nbf` themselves are checked already.
    fn check_times(&self, claims: &Claims) -> Result<(), AuthFailure> {
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.rules.leeway.as_secs();
        if claims.iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(AuthFailure::IssuedInFuture);
        }
        let max = self.rules.max_lifetime.as_secs();
        if max > 0 && claims.exp > now.saturating_add(max).saturating_add(leeway) {
            return Err(AuthFailure::LifetimeTooLong);
        }
        Ok(())
    }

    fn principal(&self, claims: Claims) -> Result<Principal, AuthFailure> {
        if claims.sub.is_empty() || claims.sub.len() > 256 || claims.sub.starts_with("apikey:") {
            return Err(AuthFailure::Malformed);
        }
        let roles = roles_from(&claims);
        let is_admin = roles.contains(&self.rules.admin_role);
        Ok(Principal {
            id: Arc::from(claims.sub),
            kind: PrincipalKind::User,
            roles: Arc::from(roles),
            is_admin,
        })
    }
}

/// Tokens already verified, keyed by their exact bytes, so a client that
/// sends the same token on every request pays for HMAC/RSA/ECDSA and JSON
/// parsing once. An entry is used only while its token's `exp` (with leeway)
/// has not passed and for at most `VERIFIED_TTL`, so a key removed from the
/// JWKS or a changed setting takes effect within that. Bounded: a full shard
/// is emptied rather than grown. Both limits become one monotonic instant
/// when the entry is made, so a hit reads one clock (the wall clock is read
/// on a miss, by the verification itself); a step of the wall clock reaches
/// an entry already made within `VERIFIED_TTL`.
type VerifiedShard = parking_lot::Mutex<hashbrown::HashMap<Box<str>, Verified>>;

pub(super) struct VerifiedCache {
    shards: Box<[VerifiedShard]>,
    hasher: hashbrown::DefaultHashBuilder,
    leeway: u64,
}

struct Verified {
    principal: Principal,
    /// The earlier of the entry's end (`VERIFIED_TTL`) and the token's
    /// (`exp` plus leeway, to the end of that second).
    until: std::time::Instant,
}

const VERIFIED_TTL: Duration = Duration::from_secs(30);
const VERIFIED_SHARDS: usize = 16;
const VERIFIED_PER_SHARD: usize = 4096;

impl VerifiedCache {
    pub(super) fn new(leeway: Duration) -> Self {
        Self {
            shards: (0..VERIFIED_SHARDS).map(|_| Default::default()).collect(),
            hasher: Default::default(),
            leeway: leeway.as_secs(),
        }
    }

    fn shard(&self, token: &str) -> &VerifiedShard {
        use std::hash::BuildHasher;
        &self.shards[(self.hasher.hash_one(token) as usize) % VERIFIED_SHARDS]
    }

    pub(super) fn get(&self, token: &str) -> Option<Principal> {
        let now = std::time::Instant::now();
        let shard = self.shard(token).lock();
        let v = shard.get(token)?;
        (now < v.until).then(|| v.principal.clone())
    }

    pub(super) fn put(&self, token: &str, principal: &Principal, exp: u64) {
        let mut shard = self.shard(token).lock();
        if shard.len() >= VERIFIED_PER_SHARD {
            shard.clear();
        }
        let now = std::time::Instant::now();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let token_end = Duration::from_secs(exp.saturating_add(self.leeway).saturating_add(1));
        let until = now + token_end.saturating_sub(wall).min(VERIFIED_TTL);
        shard.insert(Box::from(token), Verified { principal: principal.clone(), until });
    }
}

fn decode(token: &str, key: &VerifyingKey, validation: &Validation) -> Result<Claims, AuthFailure> {
    jsonwebtoken::decode::<Claims>(token, &key.key, validation)
        .map(|d| d.claims)
        .map_err(|e| classify(e.kind()))
}

fn classify(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::BadIssuer,
        ErrorKind::InvalidAudience => AuthFailure::BadAudience,
        // A token whose header asks for another algorithm than the key's
        // (including `none`) cannot have been signed by that key.
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthFailure::BadSignature,
        _ => AuthFailure::Malformed,
    }
}

/// A `typ` we accept: `JWT` or `at+jwt`, case-insensitive, with or without
/// the `application/` prefix (RFC 7515 §4.1.9, RFC 9068 §2.1).
fn typed_as_jwt(typ: &str) -> bool {
    let typ = typ.get(..12).filter(|p| p.eq_ignore_ascii_case("application/")).map_or(typ, |_| &typ[12..]);
    typ.eq_ignore_ascii_case("jwt") || typ.eq_ignore_ascii_case("at+jwt")
}

/// Mint an HS256 token (for `sessiongate token`, dev mode and tests).
pub fn mint_token(
    secret: &Secret,
    issuer: &str,
    audience: &str,
    sub: &str,
    roles: &[String],
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: sub.to_string(),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
        iss: issuer.to_string(),
        aud: serde_json::Value::String(audience.to_string()),
        roles: (!roles.is_empty()).then(|| roles.to_vec()),
        scope: None,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new("0123456789abcdef0123456789abcdef")
    }

    fn rules() -> TokenRules {
        TokenRules {
            issuer: "iss".into(),
            audience: "aud".into(),
            leeway: Duration::from_secs(0),
            max_lifetime: Duration::from_secs(24 * 3600),
            admin_role: "admin".into(),
        }
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::hs256(&secret(), rules())
    }

    #[test]
    fn typ_is_jwt_or_at_jwt_with_or_without_the_media_type_prefix() {
        for ok in ["JWT", "jwt", "at+jwt", "AT+JWT", "application/jwt", "Application/At+JWT"] {
            assert!(typed_as_jwt(ok), "{ok}");
        }
        for bad in ["dpop+jwt", "JOSE", "", "application/", "application/dpop+jwt", "jwt ", "secevent+jwt"] {
            assert!(!typed_as_jwt(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn accepts_a_minted_token_with_roles() {
        let t =
            mint_token(&secret(), "iss", "aud", "alice", &["admin".into()], Duration::from_secs(60)).unwrap();
        let p = verifier().verify(&t).await.unwrap();
        assert_eq!(&*p.id, "alice");
        assert!(p.is_admin);
    }

    #[tokio::test]
    async fn refuses_wrong_issuer_audience_and_key() {
        let ttl = Duration::from_secs(60);
        let t = mint_token(&secret(), "other", "aud", "a", &[], ttl).unwrap();
        assert_eq!(verifier().verify(&t).await, Err(AuthFailure::BadIssuer));
        let t = mint_token(&secret(), "iss", "other", "a", &[], ttl).unwrap();
        assert_eq!(verifier().verify(&t).await, Err(AuthFailure::BadAudience));
        let t = mint_token(&Secret::new("another-secret-another-secret-xx"), "iss", "aud", "a", &[], ttl)
            .unwrap();
        assert_eq!(verifier().verify(&t).await, Err(AuthFailure::BadSignature));
        assert_eq!(verifier().verify("not.a.jwt").await, Err(AuthFailure::Malformed));
    }

    #[test]
    fn the_verified_cache_honours_exp_and_its_bound() {
        let cache = VerifiedCache::new(Duration::from_secs(0));
        let p = Principal {
            id: Arc::from("a"),
            kind: PrincipalKind::User,
            roles: Arc::from(vec![]),
            is_admin: false,
        };
        let now = jsonwebtoken::get_current_timestamp();
        cache.put("live", &p, now + 60);
        cache.put("expired", &p, now - 1);
        assert_eq!(cache.get("live"), Some(p.clone()));
        assert_eq!(cache.get("expired"), None, "an expired token is not served from the cache");
        assert_eq!(cache.get("never-seen"), None);
        for i in 0..(VERIFIED_SHARDS * VERIFIED_PER_SHARD * 2) {
            cache.put(&format!("t{i}"), &p, now + 60);
        }
        let held: usize = cache.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= VERIFIED_SHARDS * VERIFIED_PER_SHARD, "bounded: {held}");
    }

    #[tokio::test]
    async fn refuses_alg_none() {
        use base64_like::encode;
        let header = encode(br#"{"alg":"none","typ":"JWT"}"#);
        let now = jsonwebtoken::get_current_timestamp();
        let body = encode(format!(r#"{{"sub":"a","exp":{},"iss":"iss","aud":"aud"}}"#, now + 60).as_bytes());
        let token = format!("{header}.{body}.");
        assert_eq!(verifier().verify(&token).await, Err(AuthFailure::Malformed));
    }

    /// URL-safe base64 without padding, enough for building hostile tokens.
    mod base64_like {
        pub fn encode(bytes: &[u8]) -> String {
            const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
