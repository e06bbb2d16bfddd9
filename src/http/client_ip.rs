//! The client address of a request: the TCP peer, or behind trusted proxies the right-most
//! `X-Forwarded-For` hop that is not itself a trusted proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use super::AppState;

/// The client address. Only when `peer` is in `trusted` is `X-Forwarded-For` read (every
/// such header, in order, as one list): walking from the right, each hop that is a trusted
/// proxy is skipped and the first that is not is the client. A malformed entry stops the
/// walk and the last good hop is used; if every hop is trusted, the left-most one is.
/// Entries to the left of the client are whatever the client sent and are never used.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Split the raw bytes: proxies append the address they saw to whatever the client sent,
    // so a non-ASCII byte in the client's part must spoil that entry alone, never the rest.
    let values: Vec<&[u8]> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    for entry in values.iter().rev().flat_map(|v| v.rsplit(|b| *b == b',')) {
        let hop = std::str::from_utf8(entry)
            .ok()
            .and_then(|e| e.trim().parse::<IpAddr>().ok());
        let Some(hop) = hop else {
            return client;
        };
        client = hop.to_canonical();
        if !is_trusted(&client) {
            return client;
        }
    }
    client
}

/// The address every request counts under when none is known: a router served without
/// connection info (`into_make_service_with_connect_info`). Such clients share their limits,
/// so a missing address never lifts them.
pub(crate) const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The client address of a request for per-client limits: the same address the `Meta`
/// extractor records ([`client_ip`] of the peer), or [`UNKNOWN_CLIENT`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) IpAddr);

/// The client address of a request: [`client_ip`] of its peer (`ConnectInfo`) under the
/// configured trusted proxies; `None` when the router was served without connection info.
pub(crate) fn request_client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| client_ip(ci.0.ip(), &parts.headers, &state.http.trusted_proxies))
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            request_client_ip(parts, state).unwrap_or(UNKNOWN_CLIENT),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let h = xff(&["203.0.113.7"]);
        assert_eq!(client_ip(ip("198.51.100.1"), &h, &[]), ip("198.51.100.1"));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        let h = xff(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.7"));
        // Several headers are one list, in order.
        let h = xff(&["6.6.6.6", "203.0.113.7", "10.1.2.3"]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn a_malformed_hop_stops_the_walk_at_the_last_good_one() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = xff(&["203.0.113.7, garbage, 10.1.2.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.1.2.3"));
        let h = xff(&["garbage"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }

    #[test]
    fn a_non_ascii_byte_spoils_only_its_own_entry() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        // The client sent garbage; the proxy appended the address it saw.
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff, 203.0.113.7").unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.7"));
    }

    #[test]
    fn no_header_or_only_trusted_hops() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
        let h = xff(&["10.9.9.9, 10.1.2.3"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.9.9.9"));
        let h = xff(&["2001:db8::1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::1"));
    }
}
