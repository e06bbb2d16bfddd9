//! The TCP proxy between the service instances and PostgreSQL: forwards while up; while cut,
//! drops every open connection and refuses new ones, as a network partition does. The
//! integration tests use it too (`tests/api/proxy.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A proxy on 127.0.0.1 to one target address.
pub(crate) struct DbProxy {
    /// The local port the instances connect to.
    pub(crate) port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl DbProxy {
    /// Starts the proxy, up, on a free port, forwarding to `target` (`host:port`).
    pub(crate) async fn start(target: String) -> anyhow::Result<Self> {
        Self::start_on(0, target).await
    }

    /// Starts the proxy, up, on 127.0.0.1:`port` (0: a free one), forwarding to `target`.
    pub(crate) async fn start_on(port: u16, target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .context("binding the database proxy")?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut links = links2.lock().unwrap_or_else(|e| e.into_inner());
                links.retain(|l| !l.is_finished());
                links.push(link.abort_handle());
            }
        })
        .abort_handle();
        Ok(Self {
            port,
            up,
            links,
            accept,
        })
    }

    /// Cuts every open connection and refuses new ones.
    pub(crate) fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for link in links.drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub(crate) fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
