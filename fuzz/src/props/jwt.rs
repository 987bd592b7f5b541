//! `jwt_verify`: the credential entry (`Authenticator::authenticate`,
//! `JwtVerifier::verify`, `ApiKeys::authenticate`).
//!
//! Input: a mode byte, then
//! - `0`: the raw `Authorization` header value;
//! - `1`: the raw `X-API-Key` value (bit 2 of the mode: send both headers);
//! - `2`: the bearer token itself (lossy UTF-8);
//! - `3`: a structured token: `header JSON \n payload JSON [\n signature op]`,
//!   base64url-encoded and signed with the verifier's secret, so mutations
//!   reach claim validation. The optional signature op spoils the signature
//!   (see [`signature`]).
//!
//! Properties, beyond "no panic":
//! - soundness: whatever is accepted carries the HMAC-SHA-256 of its signing
//!   input under the secret, computed here independently; its header says
//!   HS256 and names no `kid`; its claims satisfy every rule (issuer,
//!   audience, `exp`/`nbf` with leeway, `sub`), and the principal is built
//!   from them (id, roles from `roles` and `scope`, admin flag);
//! - completeness (structured mode): a correctly signed token with
//!   canonical JSON and well-typed, valid claims is accepted;
//! - an API key is accepted exactly when it is the configured one; both
//!   headers at once are always `Ambiguous`.

use super::encoding::{b64url, b64url_decode, hs256_signature, sha256};
use super::split_at_byte;
use futures::executor::block_on;
use serde_json::Value;
use sessiongate::auth::{ApiKeys, AuthFailure, Authenticator, JwtVerifier, MAX_TOKEN_BYTES};
use sessiongate::auth::{Principal, PrincipalKind};
use sessiongate::config::{ApiKeyConfig, Secret};
use std::sync::OnceLock;
use std::time::Duration;

pub const SECRET: &str = "fuzz-hs256-secret-0123456789abcdef-0123";
pub const ISSUER: &str = "https://issuer.example";
pub const AUDIENCE: &str = "sessiongate";
pub const LEEWAY_SECS: u64 = 30;
/// `auth.max_token_lifetime`: `exp` at most this far ahead (plus leeway).
const MAX_LIFETIME_SECS: u64 = 24 * 3600;
pub const ADMIN_ROLE: &str = "admin";
pub const API_KEY: &str = "sg_fuzz_0123456789abcdef0123456789abcdef";
pub const API_KEY_ID: &str = "fuzz-key";

struct Harness {
    verifier: JwtVerifier,
    auth: Authenticator,
}

/// Built once per process: the verifier's cache of verified tokens carries
/// over between inputs, as it does between requests.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let verifier = || {
            JwtVerifier::hs256(
                &Secret::new(SECRET),
                sessiongate::auth::TokenRules {
                    issuer: ISSUER.into(),
                    audience: AUDIENCE.into(),
                    leeway: Duration::from_secs(LEEWAY_SECS),
                    max_lifetime: Duration::from_secs(MAX_LIFETIME_SECS),
                    admin_role: ADMIN_ROLE.into(),
                },
            )
        };
        let hash: String = sha256(API_KEY.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let keys = ApiKeys::from_config(
            &[ApiKeyConfig {
                id: API_KEY_ID.into(),
                sha256: hash,
                roles: vec![ADMIN_ROLE.into(), "svc".into()],
            }],
            ADMIN_ROLE,
        )
        .expect("the fuzz API key config is valid");
        Harness { verifier: verifier(), auth: Authenticator::new(verifier(), keys) }
    })
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
}

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 4 {
        0 => authorization_header(rest),
        1 => api_key(rest, mode & 4 != 0),
        2 => raw_token(&String::from_utf8_lossy(rest)),
        _ => structured(rest),
    }
}

fn authorization_header(raw: &[u8]) {
    let h = harness();
    let before = now();
    let result = block_on(h.auth.authenticate(Some(raw), None));
    let after = now();
    let Ok(principal) = result else { return };
    let value = std::str::from_utf8(raw).expect("accepted a non-UTF-8 Authorization header");
    let (scheme, token) = value.split_once(' ').expect("accepted an Authorization header without a scheme");
    assert!(scheme.eq_ignore_ascii_case("bearer"), "accepted the scheme {scheme:?}");
    let token = token.trim();
    assert_accepted(token, &principal, before, after);
    // The same token straight to the verifier: the same principal.
    assert_eq!(block_on(h.verifier.verify(token)), Ok(principal), "header and direct paths disagree");
}

fn api_key(raw: &[u8], both: bool) {
    let h = harness();
    if both {
        assert_eq!(block_on(h.auth.authenticate(Some(raw), Some(raw))), Err(AuthFailure::Ambiguous));
    }
    match block_on(h.auth.authenticate(None, Some(raw))) {
        Ok(p) => {
            assert_eq!(raw, API_KEY.as_bytes(), "accepted an API key that is not the configured one");
            assert_eq!(&*p.id, format!("apikey:{API_KEY_ID}"));
            assert_eq!(p.kind, PrincipalKind::ApiKey);
            assert!(p.is_admin);
        }
        Err(e) => {
            assert_eq!(e, AuthFailure::BadApiKey);
            assert_ne!(raw, API_KEY.as_bytes(), "refused the configured API key");
        }
    }
}

fn raw_token(token: &str) {
    let before = now();
    let result = block_on(harness().verifier.verify(token));
    let after = now();
    if let Ok(principal) = result {
        assert_accepted(token, &principal, before, after);
    }
}

fn structured(rest: &[u8]) {
    let (header, tail) = split_at_byte(rest, b'\n');
    let (payload, op) = match tail {
        Some(t) => split_at_byte(t, b'\n'),
        None => (&[][..], None),
    };
    let signing_input = format!("{}.{}", b64url(header), b64url(payload));
    let good = hs256_signature(SECRET.as_bytes(), &signing_input);
    let token = format!("{signing_input}.{}", signature(&good, &signing_input, op.unwrap_or_default()));
    let before = now();
    let result = block_on(harness().verifier.verify(&token));
    let after = now();
    match result {
        Ok(principal) => assert_accepted(&token, &principal, before, after),
        Err(e) => {
            let signed = token == format!("{signing_input}.{good}");
            assert!(
                !(signed && should_accept(header, payload, &token, before, after)),
                "refused a well-formed, correctly signed token with valid claims ({e:?}): {token}"
            );
        }
    }
}

/// The signature segment: the good one unless `op` says how to spoil it:
/// `0` a literal segment, `1` one character replaced, `2` another key,
/// `3` the good one followed by another segment.
fn signature(good: &str, signing_input: &str, op: &[u8]) -> String {
    let Some((&kind, arg)) = op.split_first() else { return good.to_string() };
    match kind % 4 {
        0 => String::from_utf8_lossy(arg).into_owned(),
        1 => {
            let mut sig = good.as_bytes().to_vec();
            let at = *arg.first().unwrap_or(&0) as usize % sig.len();
            sig[at] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                [*arg.get(1).unwrap_or(&0) as usize % 64];
            String::from_utf8(sig).expect("ASCII")
        }
        2 => hs256_signature(arg, signing_input),
        _ => format!("{good}.{}", String::from_utf8_lossy(arg)),
    }
}

/// Soundness: `token` was accepted as `principal` between `before` and
/// `after` (Unix seconds).
pub fn assert_accepted(token: &str, principal: &Principal, before: u64, after: u64) {
    assert!(token.len() <= MAX_TOKEN_BYTES, "accepted an oversize token");
    let (signing_input, signature) = token.rsplit_once('.').expect("accepted a token without a '.'");
    assert_eq!(
        signature,
        hs256_signature(SECRET.as_bytes(), signing_input),
        "accepted a token whose signature is not the HMAC of its signing input: {token:?}"
    );
    let (header, payload) = signing_input.split_once('.').expect("accepted a token of two segments");
    assert!(!payload.contains('.'), "accepted a token of four or more segments: {token:?}");
    let json = |segment: &str, what: &str| -> Value {
        let bytes = b64url_decode(segment)
            .unwrap_or_else(|| panic!("accepted a {what} that is not canonical base64url: {token:?}"));
        // Lossy: serde_json skips unknown members without checking their
        // UTF-8, so jsonwebtoken accepts invalid UTF-8 there (harmless: the
        // token is signed, and every claim read here is checked UTF-8).
        serde_json::from_str(&String::from_utf8_lossy(&bytes))
            .unwrap_or_else(|e| panic!("accepted a {what} that is not JSON ({e}): {token:?}"))
    };
    let header = json(header, "header");
    assert_eq!(header.get("alg"), Some(&Value::from("HS256")), "accepted the header {header}");
    assert!(header.get("kid").is_none_or(Value::is_null), "accepted a kid without a keyed key: {header}");
    assert!(header.get("crit").is_none(), "accepted a crit header: {header}");
    assert!(header.get("typ").is_none_or(|t| t.as_str().is_some_and(jwt_typ)), "accepted the typ: {header}");
    let claims = json(payload, "payload");
    let c = claims.as_object().unwrap_or_else(|| panic!("accepted claims that are no object: {claims}"));
    let sub =
        c.get("sub").and_then(Value::as_str).unwrap_or_else(|| panic!("accepted without a sub: {claims}"));
    assert!(!sub.is_empty() && sub.len() <= 256 && !sub.starts_with("apikey:"), "accepted the sub {sub:?}");
    assert_eq!(&*principal.id, sub);
    assert_eq!(principal.kind, PrincipalKind::User);
    assert_eq!(c.get("iss").and_then(Value::as_str), Some(ISSUER), "accepted the issuer: {claims}");
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(aud_ok, "accepted the audience: {claims}");
    let exp = c.get("exp").and_then(Value::as_u64).unwrap_or_else(|| panic!("accepted the exp: {claims}"));
    assert!(exp.saturating_add(LEEWAY_SECS) >= before, "accepted an expired token: {claims}");
    assert!(exp <= after + MAX_LIFETIME_SECS + LEEWAY_SECS, "accepted a token living too long: {claims}");
    if let Some(iat) = c.get("iat") {
        let iat = iat.as_u64().unwrap_or_else(|| panic!("accepted the iat: {claims}"));
        assert!(iat <= after + LEEWAY_SECS, "accepted a token issued in the future: {claims}");
    }
    match c.get("nbf") {
        None => {}
        Some(nbf) => {
            let nbf = nbf.as_u64().unwrap_or_else(|| panic!("accepted the nbf: {claims}"));
            assert!(nbf <= after + LEEWAY_SECS, "accepted a token before its nbf: {claims}");
        }
    }
    let mut roles: Vec<String> = match c.get("roles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|r| r.as_str().unwrap_or_else(|| panic!("accepted non-string roles: {claims}")).to_string())
            .collect(),
        Some(other) => panic!("accepted the roles {other}"),
    };
    match c.get("scope") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => roles.extend(s.split_whitespace().map(str::to_string)),
        Some(other) => panic!("accepted the scope {other}"),
    }
    roles.sort();
    roles.dedup();
    assert_eq!(&*principal.roles, &roles[..], "roles of {claims}");
    assert_eq!(principal.is_admin, roles.iter().any(|r| r == ADMIN_ROLE), "admin flag of {claims}");
}

/// A `typ` the verifier accepts: `JWT` or `at+jwt`, any case, with or
/// without `application/` (written here from the RFCs, not from the code).
fn jwt_typ(typ: &str) -> bool {
    let lower = typ.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    bare == "jwt" || bare == "at+jwt"
}

/// Completeness: JSON in canonical form (as `serde_json` writes it, so no
/// duplicate keys or escapes), the header `{"alg":"HS256"}` (and a string
/// `typ`), and claims of the right types that satisfy every rule with a
/// margin of two seconds.
fn should_accept(header: &[u8], payload: &[u8], token: &str, before: u64, after: u64) -> bool {
    let canonical = |bytes: &[u8]| -> Option<serde_json::Map<String, Value>> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        (serde_json::to_vec(&v).ok()? == bytes).then_some(())?;
        v.as_object().cloned()
    };
    let (Some(h), Some(c)) = (canonical(header), canonical(payload)) else { return false };
    let header_ok = h.get("alg") == Some(&Value::from("HS256"))
        && h.iter().all(|(k, v)| k == "alg" || (k == "typ" && v.as_str().is_some_and(jwt_typ)));
    let opt_u64 = |k: &str| c.get(k).is_none_or(|v| v.is_u64());
    let string_list = |v: &Value| v.as_array().is_some_and(|l| l.iter().all(Value::is_string));
    let claims_ok = c
        .get("sub")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty() && s.len() <= 256 && !s.starts_with("apikey:"))
        && c.get("iss").and_then(Value::as_str) == Some(ISSUER)
        && match c.get("aud") {
            Some(Value::String(a)) => a == AUDIENCE,
            Some(v) => string_list(v) && v.as_array().is_some_and(|l| l.iter().any(|a| a == AUDIENCE)),
            None => false,
        }
        && c.get("exp").and_then(Value::as_u64).is_some_and(|e| {
            e.saturating_add(LEEWAY_SECS) >= after + 2 && e + 2 <= before + MAX_LIFETIME_SECS + LEEWAY_SECS
        })
        && opt_u64("nbf")
        && c.get("nbf").and_then(Value::as_u64).is_none_or(|n| n.saturating_add(2) <= before + LEEWAY_SECS)
        && opt_u64("iat")
        && c.get("iat").and_then(Value::as_u64).is_none_or(|i| i.saturating_add(2) <= before + LEEWAY_SECS)
        && c.get("roles").is_none_or(|r| r.is_null() || string_list(r))
        && c.get("scope").is_none_or(|s| s.is_null() || s.is_string());
    header_ok && claims_ok && token.len() <= MAX_TOKEN_BYTES
}
