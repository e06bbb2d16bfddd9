//! The client ip that per-client limits count: the address [`Meta`] reports, else the peer
//! address of the connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use super::extract::Meta;

/// The ip every request counts under when none is known: a router served without connection
/// info (`into_make_service_with_connect_info`). Such clients share their limits, so a
/// missing address never lifts them.
pub(crate) const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The client ip of a request, for per-client limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientIp(pub(crate) IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let reported = Meta::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|Meta(meta)| meta.ip)
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let ip = reported.or_else(|| {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ci| ci.0.ip())
        });
        Ok(Self(ip.unwrap_or(UNKNOWN_CLIENT)))
    }
}
