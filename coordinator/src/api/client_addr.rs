//! The client's address: the one function every use of it goes through
//! (network placement, registration, rate limits). It is the connection's
//! peer address, unless that peer is a trusted proxy (`--trusted-proxy`):
//! then the proxy's forwarding header is read from the right, skipping
//! trusted hops, and the first untrusted hop is the client. Anything left
//! of it was written by the client and is never believed.

use crate::Coordinator;
use crate::edge::ProxyHeader;
use crate::error::ApiError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The client's address, as [`client_ip`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<Coordinator> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, c: &Coordinator) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip())
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "no peer address: the router is served without the coordinator's accept loop"
                ))
            })?;
        let edge = &c.config().edge;
        Ok(ClientAddr(client_ip(
            peer,
            &parts.headers,
            &edge.trusted_proxies,
            edge.proxy_header,
        )))
    }
}

/// The client of a request that came from `peer` with `headers`.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ProxyHeader,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer.to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    // Right to left: each hop was appended by the one after it. A hop
    // that cannot be read (`unknown`, an obfuscated name, garbage) ends
    // the walk at the last address known, which is a trusted proxy: all
    // such clients then share that address's limits, never escape them.
    for hop in hops(headers, header).into_iter().rev() {
        let Some(ip) = hop else { break };
        client = ip.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// The hops a forwarding header lists, left to right, across all its
/// lines; `None` for one that is not an address.
fn hops(headers: &HeaderMap, header: ProxyHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ProxyHeader::XForwardedFor => "x-forwarded-for",
        ProxyHeader::Forwarded => "forwarded",
    };
    let mut hops = Vec::new();
    for line in headers.get_all(name) {
        let Ok(line) = line.to_str() else {
            hops.push(None);
            continue;
        };
        for element in line.split(',') {
            hops.push(match header {
                ProxyHeader::XForwardedFor => parse_node(element),
                ProxyHeader::Forwarded => forwarded_for(element),
            });
        }
    }
    hops
}

/// The `for=` of one element of `Forwarded` (RFC 7239: `;`-separated
/// pairs, keys case-insensitive, values perhaps quoted).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_node(value.trim().trim_matches('"'))
    })
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:80`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, v.parse().unwrap());
        }
        h
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers("x-forwarded-for", &["198.51.100.7"]);
        let client = client_ip(
            ip("203.0.113.9"),
            &h,
            &nets(&["10.0.0.0/8"]),
            ProxyHeader::XForwardedFor,
        );
        assert_eq!(client, ip("203.0.113.9"));
        // No trusted proxies at all: the same.
        let client = client_ip(ip("10.0.0.1"), &h, &[], ProxyHeader::XForwardedFor);
        assert_eq!(client, ip("10.0.0.1"));
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client claims 1.1.1.1; the first proxy saw 198.51.100.7 and
        // appended it; a second, inner proxy appended the first.
        let h = headers("x-forwarded-for", &["1.1.1.1, 198.51.100.7", "10.0.0.2"]);
        let client = client_ip(ip("10.0.0.3"), &h, &trusted, ProxyHeader::XForwardedFor);
        assert_eq!(client, ip("198.51.100.7"));
        // Every hop trusted: the left-most is the client.
        let h = headers("x-forwarded-for", &["10.0.0.9, 10.0.0.2"]);
        let client = client_ip(ip("10.0.0.3"), &h, &trusted, ProxyHeader::XForwardedFor);
        assert_eq!(client, ip("10.0.0.9"));
        // No header: the proxy itself.
        let client = client_ip(
            ip("10.0.0.3"),
            &HeaderMap::new(),
            &trusted,
            ProxyHeader::XForwardedFor,
        );
        assert_eq!(client, ip("10.0.0.3"));
    }

    #[test]
    fn forwarded_is_read_as_rfc_7239_writes_it_and_only_when_chosen() {
        let trusted = nets(&["10.0.0.0/8", "2001:db8:1::/48"]);
        let h = headers(
            "forwarded",
            &["for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.1.1.1;by=10.0.0.1"],
        );
        let client = client_ip(ip("2001:db8:1::5"), &h, &trusted, ProxyHeader::Forwarded);
        assert_eq!(client, ip("2001:db8:cafe::17"));
        // The proxy writes X-Forwarded-For: a Forwarded the client sent is
        // not read.
        let client = client_ip(
            ip("2001:db8:1::5"),
            &h,
            &trusted,
            ProxyHeader::XForwardedFor,
        );
        assert_eq!(client, ip("2001:db8:1::5"));
    }

    #[test]
    fn an_unreadable_hop_ends_the_walk_at_the_last_known_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(
            "forwarded",
            &["for=198.51.100.7, for=unknown, for=10.0.0.2"],
        );
        let client = client_ip(ip("10.0.0.3"), &h, &trusted, ProxyHeader::Forwarded);
        assert_eq!(client, ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_their_ipv4_address() {
        let h = headers("x-forwarded-for", &["198.51.100.7"]);
        let client = client_ip(
            ip("::ffff:10.0.0.3"),
            &h,
            &nets(&["10.0.0.0/8"]),
            ProxyHeader::XForwardedFor,
        );
        assert_eq!(client, ip("198.51.100.7"));
    }
}
