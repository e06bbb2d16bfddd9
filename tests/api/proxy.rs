//! A TCP proxy in front of PostgreSQL that a test can cut and restore, to show what the
//! service does when its database goes away and comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The proxy: forwards to the tests' server while up; refuses and drops everything while down.
pub struct DbProxy {
    /// Local port to connect to.
    pub port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl DbProxy {
    /// Starts the proxy, up, on a free port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts the proxy, up, on 127.0.0.1:`port` (0: a free one).
    pub async fn start_on(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        let server = crate::helpers::server();
        let target = format!("{}:{}", server.host, server.port);
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
                links2.lock().expect("lock").push(link.abort_handle());
            }
        })
        .abort_handle();
        Self {
            port,
            up,
            links,
            accept,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
