//! Outbound HTTP: one way to build a client, with TLS from rustls on the
//! `ring` provider (installed once, process-wide) and bounded timeouts.
//!
//! Used by the JWKS fetcher and, later, the `http` agent; knows nothing of
//! what they fetch.

use std::sync::Once;
use std::time::Duration;

/// Install the process's TLS crypto provider; idempotent.
pub fn init_tls() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client with connect and total timeouts that never follows redirects.
pub fn client(timeout: Duration) -> reqwest::Client {
    init_tls();
    reqwest::Client::builder()
        // A pinned URL stays pinned: no redirect to another scheme or host.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(concat!("sessiongate/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a TLS client can always be built once the provider is installed")
}
