//! Following the primary among several PostgreSQL nodes: a `DATABASE_URL` that lists several
//! hosts, libpq-style (`postgres://user@h1:5432,h2:5433/db?target_session_attrs=read-write`).
//!
//! sqlx connects to one host, so latchkey keeps, per pool, the options of the node it found
//! writable (`pg_is_in_recovery()` false, each node tried in the order given) and:
//!
//! - refuses, in the pool's `after_connect`, a connection to a node in recovery, so a standby
//!   or a demoted node is never written to (the request waits for the next node, then 503);
//! - watches the node in use with one connection of its own, every [`PROBE_INTERVAL`]; when
//!   that connection breaks, or the node is in recovery, or a pool refused a connection, it
//!   looks for the writable node again and points every following pool at it
//!   (`set_connect_options`). Connections already open to the old node fail on their next
//!   statement (503) and are dropped.
//!
//! With one host nothing of this runs: the URL is used as it is.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::Notify;

/// How often the node in use is checked.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Longest a connection attempt to one node may take while looking for the primary.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes of a database URL: one single-host URL per host, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    urls: Vec<String>,
}

impl Nodes {
    /// Splits `url`'s host list (`h1:5432,h2:5433`) into one URL per host, each with the same
    /// user, password, database and parameters, less `target_session_attrs`, which may only
    /// be `read-write` or `primary` (latchkey writes): anything else is refused.
    ///
    /// # Errors
    /// `sqlx::Error::Configuration` when the URL has no scheme, an empty host, a
    /// `target_session_attrs` latchkey cannot honour, or a node URL sqlx cannot parse.
    pub fn parse(url: &str) -> Result<Self, sqlx::Error> {
        let bad = |why: String| sqlx::Error::Configuration(why.into());
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("the database URL has no scheme (postgres://)".into()))?;
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let tail = strip_session_attrs(tail).map_err(bad)?;
        let mut urls = Vec::new();
        for host in hosts.split(',') {
            if host.is_empty() && hosts.contains(',') {
                return Err(bad("the database URL lists an empty host".into()));
            }
            let node = format!("{scheme}://{userinfo}{host}{tail}");
            node.parse::<PgConnectOptions>()?;
            urls.push(node);
        }
        Ok(Self { urls })
    }

    /// The single-host URLs, in the order given.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether the URL named more than one host.
    pub fn is_several(&self) -> bool {
        self.urls.len() > 1
    }

    /// The first node, in the order given, that accepts a connection and is not in recovery.
    ///
    /// # Errors
    /// The last node's failure (connection error, or a `Protocol` error when it is in
    /// recovery) when none is writable.
    pub async fn find_primary(&self) -> Result<usize, sqlx::Error> {
        let mut last = sqlx::Error::Configuration("no database host".into());
        for (i, url) in self.urls.iter().enumerate() {
            match probe(url).await {
                Ok(()) => return Ok(i),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The single-host URL of the writable node of `url` (`url` itself when it names one host),
/// for a command that runs once on the primary (`latchkey migrate`, `user`, `expire` …).
///
/// # Errors
/// A URL [`Nodes::parse`] refuses, or no writable node.
pub async fn primary_url(url: &str) -> Result<String, sqlx::Error> {
    let nodes = Nodes::parse(url)?;
    if !nodes.is_several() {
        return Ok(url.to_owned());
    }
    let i = nodes.find_primary().await?;
    Ok(nodes.urls[i].clone())
}

/// Removes `target_session_attrs` from the path-and-query `tail`, refusing values other than
/// `read-write` and `primary`.
fn strip_session_attrs(tail: &str) -> Result<String, String> {
    let Some((path, query)) = tail.split_once('?') else {
        return Ok(tail.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("target_session_attrs", "read-write" | "primary")) => {}
            Some(("target_session_attrs", other)) => {
                return Err(format!(
                    "target_session_attrs={other} is not supported: latchkey writes, so it \
                     always connects to the primary (read-write)"
                ))
            }
            _ => kept.push(pair),
        }
    }
    Ok(if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

/// One connection to `url`, within [`NODE_CONNECT_TIMEOUT`], closed after checking the node
/// is writable. A database not created yet (3D000: `serve` and `migrate` create it on the
/// primary) is checked through the `postgres` database instead.
async fn probe(url: &str) -> Result<(), sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let connect = |options: PgConnectOptions| async move {
        tokio::time::timeout(NODE_CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    };
    let mut conn = match connect(options.clone()).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
            connect(options.database("postgres")).await?
        }
        other => other?,
    };
    let checked = refuse_standby(&mut conn).await;
    let _ = conn.close().await;
    checked
}

/// `Ok` when `conn`'s node is writable (not in recovery), else a `Protocol` error (503).
///
/// # Errors
/// When the node is in recovery or the check fails.
pub async fn refuse_standby(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut *conn)
        .await?;
    if in_recovery {
        Err(sqlx::Error::Protocol(
            "the database node is in recovery (a standby), not the primary".into(),
        ))
    } else {
        Ok(())
    }
}

/// The future of an `after_connect` check.
type Checked<'c> = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send + 'c>>;

/// Turns a node's options into a pool's own (statement timeouts, application name...).
type Shape = Arc<dyn Fn(PgConnectOptions) -> PgConnectOptions + Send + Sync>;

/// The node in use and the pools that follow it; see the module's comment.
pub struct Follower {
    nodes: Nodes,
    current: Mutex<usize>,
    pools: Mutex<Vec<(PgPool, Shape)>>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("nodes", &self.nodes)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Follower {
    /// A follower of `nodes`, starting at node `current` (from [`Nodes::find_primary`]).
    /// Nothing runs until [`Follower::spawn`].
    pub fn new(nodes: Nodes, current: usize) -> Arc<Self> {
        Arc::new(Self {
            nodes,
            current: Mutex::new(current),
            pools: Mutex::new(Vec::new()),
            wake: Arc::new(Notify::new()),
        })
    }

    /// The single-host URL of the node in use.
    pub fn current_url(&self) -> String {
        let i = *self.current.lock().unwrap_or_else(|e| e.into_inner());
        self.nodes.urls[i].clone()
    }

    /// `options` with an `after_connect` that refuses a node in recovery and wakes the
    /// follower to look for the primary again.
    pub fn guard(&self, options: PgPoolOptions) -> PgPoolOptions {
        let wake = self.wake.clone();
        options.after_connect(move |conn, _meta| -> Checked<'_> {
            let wake = wake.clone();
            Box::pin(async move {
                let checked = refuse_standby(conn).await;
                if checked.is_err() {
                    wake.notify_one();
                }
                checked
            })
        })
    }

    /// Makes `pool` follow the primary: on each switch its options become `shape` of the new
    /// node's.
    pub fn follow(
        &self,
        pool: &PgPool,
        shape: impl Fn(PgConnectOptions) -> PgConnectOptions + Send + Sync + 'static,
    ) {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pool.clone(), Arc::new(shape)));
    }

    /// Starts the watch of the node in use (a task that ends with the runtime).
    pub fn spawn(self: &Arc<Self>) {
        tokio::spawn(self.clone().watch());
    }

    async fn watch(self: Arc<Self>) {
        let mut conn: Option<PgConnection> = None;
        let mut searching = false;
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
            if let Some(c) = conn.as_mut() {
                let alive = tokio::time::timeout(NODE_CONNECT_TIMEOUT, refuse_standby(c)).await;
                if matches!(alive, Ok(Ok(()))) {
                    continue;
                }
                conn = None;
            }
            match self.reconnect().await {
                Ok(c) => {
                    if std::mem::take(&mut searching) {
                        tracing::info!("a writable database node answers again");
                    }
                    conn = Some(c);
                }
                // Once per search, not at every probe.
                Err(e) if !searching => {
                    searching = true;
                    tracing::warn!(error = %e, "no writable database node: looking for the primary");
                }
                Err(_) => {}
            }
        }
    }

    /// Finds the primary, switches the pools to it if it changed, and opens the watch
    /// connection to it.
    async fn reconnect(&self) -> Result<PgConnection, sqlx::Error> {
        let found = self.nodes.find_primary().await?;
        let url = &self.nodes.urls[found];
        let switched = {
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *current, found) != found
        };
        let options: PgConnectOptions = url.parse()?;
        if switched {
            let host = options.get_host().to_owned();
            let port = options.get_port();
            tracing::warn!(%host, port, "the primary moved: pools now connect to it");
            for (pool, shape) in self.pools.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                pool.set_connect_options(shape(options.clone()));
            }
        }
        let mut conn = tokio::time::timeout(NODE_CONNECT_TIMEOUT, options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        refuse_standby(&mut conn).await?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_hosts_become_one_url_each_with_the_rest_kept() {
        let nodes = Nodes::parse(
            "postgres://u:p%40w@h1:5432,h2:5433/db?target_session_attrs=read-write&sslmode=disable",
        )
        .expect("parse");
        assert_eq!(
            nodes.urls(),
            [
                "postgres://u:p%40w@h1:5432/db?sslmode=disable",
                "postgres://u:p%40w@h2:5433/db?sslmode=disable"
            ]
        );
        assert!(nodes.is_several());
    }

    #[test]
    fn one_host_is_left_as_it_is() {
        let nodes = Nodes::parse("postgres://u@localhost/db").expect("parse");
        assert_eq!(nodes.urls(), ["postgres://u@localhost/db"]);
        assert!(!nodes.is_several());
        let bare = Nodes::parse("postgres://a:1,b:2?target_session_attrs=primary").expect("parse");
        assert_eq!(bare.urls(), ["postgres://a:1", "postgres://b:2"]);
    }

    #[test]
    fn a_read_only_target_an_empty_host_or_no_scheme_is_refused() {
        for url in [
            "postgres://h1,h2/db?target_session_attrs=read-only",
            "postgres://h1,,h2/db",
            "h1,h2/db",
        ] {
            assert!(
                matches!(Nodes::parse(url), Err(sqlx::Error::Configuration(_))),
                "{url}"
            );
        }
    }
}
