//! A TCP proxy in front of PostgreSQL that a test can cut and restore, to show what the
//! service does when its database goes away and comes back: the chaos soak's proxy
//! (`src/bin/latchkey-bench/soak/proxy.rs`), pointed at the tests' server.

#[allow(dead_code)]
#[path = "../../src/bin/latchkey-bench/soak/proxy.rs"]
mod wire;

pub(crate) use wire::DbProxy;

/// A proxy, up, on a free port, to the tests' server.
pub async fn start() -> DbProxy {
    start_on(0).await
}

/// A proxy, up, on 127.0.0.1:`port` (0: a free one), to the tests' server.
pub async fn start_on(port: u16) -> DbProxy {
    let server = crate::helpers::server();
    DbProxy::start_on(port, format!("{}:{}", server.host, server.port))
        .await
        .expect("start the database proxy")
}
