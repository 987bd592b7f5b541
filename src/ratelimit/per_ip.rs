//! The client-IP key for the per-IP GCRA layer (tower-governor).
//!
//! The address is the socket's peer, unless that peer is a configured trusted
//! proxy: then the right-most address of `X-Forwarded-For` (all its header
//! lines, in order) that is not itself a trusted proxy — a client can prepend
//! anything, but not append past the proxy that appended its real address.
//! An entry that is not an address (`unknown`, garbage) ends the walk and the
//! peer is used: skipping it would hand the choice to what the client wrote.
//! Ports (`1.2.3.4:5678`, `[::1]:80`) are stripped. IPv6 clients are keyed by
//! their /64, the smallest block one subscriber usually holds.

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

    /// A dual-stack listener (`[::]`) sees an IPv4 peer as `::ffff:a.b.c.d`,
    /// which no IPv4 network contains: both forms are looked up.
    fn is_trusted(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// The client of a request from `peer` with these `X-Forwarded-For`
    /// header lines (in order), as the limiter's key.
    pub fn resolve<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        key(self.client(peer, forwarded_for))
    }

    fn client<'a>(&self, peer: IpAddr, forwarded_for: impl DoubleEndedIterator<Item = &'a str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        for entry in forwarded_for.rev().flat_map(|line| line.rsplit(',')) {
            match parse_entry(entry.trim()) {
                Some(ip) if self.is_trusted(ip) => continue,
                Some(ip) => return ip,
                None => return peer,
            }
        }
        peer
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]:80`; anything else is `None`.
fn parse_entry(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>().ok().or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// IPv6 by /64, IPv4 (and IPv4-mapped IPv6) as is.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !0xFFFF_FFFF_FFFF_FFFF)),
        },
        v4 => v4,
    }
}

static X_FORWARDED_FOR: axum::http::HeaderName = axum::http::HeaderName::from_static("x-forwarded-for");

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or(GovernorError::UnableToExtractKey)?;
        let lines =
            req.headers().get_all(&X_FORWARDED_FOR).into_iter().map(|v| v.to_str().unwrap_or("invalid"));
        Ok(self.resolve(peer, lines))
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
        let r = |peer, lines: &[&str]| c.resolve(peer, lines.iter().copied());
        assert_eq!(r(client, &["198.51.100.1"]), client, "untrusted peers cannot claim an address");
        assert_eq!(r(proxy, &["198.51.100.1, 203.0.113.7"]), client, "right-most untrusted");
        assert_eq!(r(proxy, &["203.0.113.7, 10.9.9.9"]), client, "trusted hops are skipped");
        assert_eq!(
            r(proxy, &["198.51.100.1", "203.0.113.7"]),
            client,
            "the last header line is the nearest hop"
        );
        assert_eq!(r(proxy, &["203.0.113.7:51234"]), client, "ports are stripped");
        assert_eq!(r(proxy, &[]), proxy);
        assert_eq!(r(proxy, &["garbage"]), proxy);
        // The proxy appended something unparseable: the client's own prefix must not win.
        assert_eq!(r(proxy, &["198.51.100.99, unknown"]), proxy, "an unparseable entry ends the walk");
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(r(a, &[]), r(b, &[]), "one /64, one bucket");
        let mapped_proxy: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(r(mapped_proxy, &["203.0.113.7"]), client, "a proxy seen by a dual-stack listener");
        assert_eq!(r(proxy, &["203.0.113.7, ::ffff:10.9.9.9"]), client, "a mapped trusted hop is skipped");
    }
}
