//! The client-IP key for the per-IP GCRA layer (tower-governor).
//!
//! The address is the socket's peer, unless that peer is a configured trusted
//! proxy: then the right-most address of `X-Forwarded-For` that is not itself
//! a trusted proxy (a client can prepend anything, but not append past the
//! proxy that appended its real address).

use axum::extract::ConnectInfo;
use http::Request;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tower_governor::GovernorError;
use tower_governor::key_extractor::KeyExtractor;

#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
}

impl ClientIp {
    pub fn new(trusted: &[IpNet]) -> Self {
        Self { trusted: Arc::from(trusted) }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` with these headers.
    pub fn resolve(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        forwarded_for
            .into_iter()
            .flat_map(|v| v.rsplit(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        Ok(self.resolve(peer, forwarded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let c = ClientIp::new(&["10.0.0.0/8".parse().unwrap()]);
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let proxy: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            c.resolve(client, Some("198.51.100.1")),
            client,
            "untrusted peers cannot claim an address"
        );
        assert_eq!(c.resolve(proxy, Some("198.51.100.1, 203.0.113.7")), client, "right-most untrusted");
        assert_eq!(c.resolve(proxy, Some("203.0.113.7, 10.9.9.9")), client, "trusted hops are skipped");
        assert_eq!(c.resolve(proxy, None), proxy);
        assert_eq!(c.resolve(proxy, Some("garbage")), proxy);
    }
}
