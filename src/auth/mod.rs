//! Who is calling: bearer JWTs (HS256, RS256, PS256, ES256, EdDSA from a
//! secret, PEM files or a JWKS) and service API keys, resolved into a
//! `Principal` with roles. Every refusal is an `AuthFailure` with one fixed reason.
//!
//! This module knows nothing of sessions, stores or HTTP routing; the HTTP
//! layer turns failures into 401/403 responses.

pub mod api_keys;
mod jwks;
mod jwt;
pub mod keys;

pub use api_keys::ApiKeys;
pub use jwks::Jwks;
pub use jwt::{Claims, JwtVerifier, MAX_TOKEN_BYTES, TokenRules, mint_token};

use crate::config::{AuthConfig, Secret};
use crate::telemetry::Events;
use keys::VerifyingKey;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    User,
    ApiKey,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The JWT `sub`, or `apikey:<id>`. Sessions are owned by this id.
    pub id: Arc<str>,
    pub kind: PrincipalKind,
    /// Shared: a principal is cloned into every request it makes.
    pub roles: Arc<[String]>,
    pub is_admin: bool,
}

impl Principal {
    pub fn kind_str(&self) -> &'static str {
        match self.kind {
            PrincipalKind::User => "user",
            PrincipalKind::ApiKey => "api_key",
        }
    }
}

/// Why a request was refused. The `reason` strings are the label values of
/// `sessiongate_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    UnknownKid,
    BadApiKey,
    Ambiguous,
    Forbidden,
    /// A `crit` header: we understand no extension (RFC 7515 §4.1.11).
    UnsupportedCrit,
    /// A `typ` other than `JWT` or `at+jwt` (RFC 8725 §3.11, RFC 9068).
    BadType,
    /// `exp` further ahead than `auth.max_token_lifetime` (plus leeway).
    LifetimeTooLong,
    /// `iat` in the future beyond leeway.
    IssuedInFuture,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::BadIssuer => "bad_issuer",
            AuthFailure::BadAudience => "bad_audience",
            AuthFailure::UnknownKid => "unknown_kid",
            AuthFailure::BadApiKey => "bad_api_key",
            AuthFailure::Ambiguous => "ambiguous",
            AuthFailure::Forbidden => "forbidden",
            AuthFailure::UnsupportedCrit => "unsupported_crit",
            AuthFailure::BadType => "bad_type",
            AuthFailure::LifetimeTooLong => "lifetime_too_long",
            AuthFailure::IssuedInFuture => "issued_in_future",
        }
    }

    /// What failed, for `error_description`; never key material or token contents.
    pub fn description(self) -> &'static str {
        match self {
            AuthFailure::Missing => "no credentials were sent",
            AuthFailure::Malformed => "the token is not a well-formed JWT with the required claims",
            AuthFailure::BadSignature => "the token signature is invalid",
            AuthFailure::Expired => "the token has expired",
            AuthFailure::NotYetValid => "the token is not valid yet (nbf)",
            AuthFailure::BadIssuer => "the token issuer is not accepted",
            AuthFailure::BadAudience => "the token audience is not accepted",
            AuthFailure::UnknownKid => "the token names an unknown key id",
            AuthFailure::BadApiKey => "the API key is not valid",
            AuthFailure::Ambiguous => "send either a bearer token or an API key, not both",
            AuthFailure::Forbidden => "the caller lacks the role this route requires",
            AuthFailure::UnsupportedCrit => {
                "the token header lists critical extensions (crit), which are not supported"
            }
            AuthFailure::BadType => "the token type (typ) is not JWT or at+jwt",
            AuthFailure::LifetimeTooLong => {
                "the token expires further ahead than the longest lifetime accepted"
            }
            AuthFailure::IssuedInFuture => "the token was issued in the future (iat)",
        }
    }
}

/// Roles from the `roles` claim (array) and the `scope` claim (space-separated).
pub fn roles_from(claims: &Claims) -> Vec<String> {
    let mut roles: Vec<String> = claims.roles.clone().unwrap_or_default();
    if let Some(scope) = &claims.scope {
        roles.extend(scope.split_whitespace().map(str::to_string));
    }
    roles.sort();
    roles.dedup();
    roles
}

/// Resolves request credentials into a principal.
pub struct Authenticator {
    jwt: JwtVerifier,
    api_keys: ApiKeys,
}

impl Authenticator {
    pub fn new(jwt: JwtVerifier, api_keys: ApiKeys) -> Self {
        Self { jwt, api_keys }
    }

    /// `authorization` is the raw `Authorization` header, `api_key` the raw
    /// `X-API-Key` header. Both present is ambiguous and refused.
    pub async fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
    ) -> Result<Principal, AuthFailure> {
        match (authorization, api_key) {
            (Some(_), Some(_)) => Err(AuthFailure::Ambiguous),
            (None, None) => Err(AuthFailure::Missing),
            (None, Some(key)) => self.api_keys.authenticate(key),
            (Some(raw), None) => {
                let value = std::str::from_utf8(raw).map_err(|_| AuthFailure::Malformed)?;
                let token = bearer_token(value).ok_or(AuthFailure::Malformed)?;
                self.jwt.verify(token).await
            }
        }
    }
}

/// The authenticator for `config`, and the JWKS (if any) whose refresher the
/// caller must run. `hs256` is the secret to accept (configured, or dev mode's).
pub async fn build(
    config: &AuthConfig,
    hs256: Option<&Secret>,
    production: bool,
    events: Arc<Events>,
) -> anyhow::Result<(Authenticator, Option<Arc<Jwks>>)> {
    use anyhow::Context;
    let mut keys = Vec::new();
    if let Some(secret) = hs256 {
        keys.push(VerifyingKey::hmac(secret.expose().as_bytes()));
    }
    for (i, path) in config.public_key_files.iter().enumerate() {
        keys.push(
            VerifyingKey::from_pem_file(std::path::Path::new(path))
                .with_context(|| format!("auth.public_key_files[{i}]"))?,
        );
    }
    let jwks = if config.jwks_url.is_empty() {
        None
    } else {
        let jwks =
            Arc::new(Jwks::new(config.jwks_url.clone(), config.jwks_refresh, config.jwks_cooldown, events));
        if let Err(e) = jwks.refresh().await {
            if production {
                anyhow::bail!("auth.jwks_url: cannot fetch the key set at start-up: {e}");
            }
            tracing::warn!(error = %e, "auth.jwks_url: cannot fetch the key set at start-up; will retry");
        }
        Some(jwks)
    };
    let jwt = JwtVerifier::new(keys, jwks.clone(), TokenRules::from(config));
    let api_keys = ApiKeys::from_config(&config.api_keys, &config.admin_role)?;
    Ok((Authenticator::new(jwt, api_keys), jwks))
}

/// Start-up checks of the configured key material, for `check-config` and
/// the server alike: the HS256 secret's length, and each PEM key (readable,
/// of a family we accept, RSA at least 2048 bits).
pub fn check_key_material(config: &AuthConfig) -> anyhow::Result<()> {
    use anyhow::Context;
    config.load_hs256_secret()?;
    for (i, path) in config.public_key_files.iter().enumerate() {
        VerifyingKey::from_pem_file(std::path::Path::new(path))
            .with_context(|| format!("auth.public_key_files[{i}]"))?;
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}
