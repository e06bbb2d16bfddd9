//! A `DATABASE_URL` with several hosts: latchkey finds the node that is not in recovery,
//! refuses a standby, and follows the primary when a standby is promoted (a private primary
//! and a synchronous streaming standby).

use std::time::{Duration, Instant};

use latchkey::db::primary::{Follower, Nodes};
use latchkey::embedded::{Cluster, ClusterOptions, STANDBY_NAME};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::embedded::TempDataDir;

/// A primary and its synchronous standby, each in a temporary data directory.
pub(crate) struct Pair {
    pub(crate) primary: Cluster,
    pub(crate) standby: Cluster,
    pub(crate) primary_dir: TempDataDir,
    pub(crate) standby_dir: TempDataDir,
}

impl Pair {
    pub(crate) async fn start() -> Self {
        let (primary_dir, standby_dir) = (TempDataDir::new(), TempDataDir::new());
        let mut options = ClusterOptions::new(&primary_dir.0);
        options.sync = false;
        let to = standby_dir.0.clone();
        let (primary, standby) = tokio::task::spawn_blocking(move || {
            let primary = Cluster::start(&options).expect("primary");
            let standby = primary.start_standby(&to, None).expect("standby");
            (primary, standby)
        })
        .await
        .expect("join");
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(primary.connect_options())
            .await
            .expect("connect to the primary");
        sqlx::query(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
        ))
        .execute(&admin)
        .await
        .expect("alter system");
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&admin)
            .await
            .expect("reload");
        admin.close().await;
        Self {
            primary,
            standby,
            primary_dir,
            standby_dir,
        }
    }

    /// `postgres://postgres:PW@127.0.0.1:STANDBY,127.0.0.1:PRIMARY/postgres?...`: the standby
    /// first, so that taking the first host would be wrong.
    pub(crate) fn url(&self, database: &str) -> String {
        let primary = format!("127.0.0.1:{}", self.primary.port());
        self.primary.url(database).replacen(
            &primary,
            &format!("127.0.0.1:{},{primary}", self.standby.port()),
            1,
        ) + "?target_session_attrs=read-write"
    }
}

async fn server_port(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(pool)
        .await
}

#[tokio::test]
async fn the_writable_node_is_found_a_standby_refused_and_a_promoted_standby_followed() {
    let pair = Pair::start().await;
    let nodes = Nodes::parse(&pair.url("postgres")).expect("parse");
    assert_eq!(nodes.urls().len(), 2);
    assert_eq!(nodes.find_primary().await.expect("a primary"), 1);

    // A pool guarded by the follower never writes to a standby: its connections are refused.
    let follower = Follower::new(nodes.clone(), 1);
    let standby_options: PgConnectOptions = nodes.urls()[0].parse().expect("url");
    let refused = follower
        .guard(PgPoolOptions::new().acquire_timeout(Duration::from_secs(1)))
        .connect_lazy_with(standby_options);
    assert!(matches!(
        server_port(&refused).await,
        Err(sqlx::Error::PoolTimedOut)
    ));

    let primary_options: PgConnectOptions = nodes.urls()[1].parse().expect("url");
    let pool = follower
        .guard(PgPoolOptions::new().acquire_timeout(Duration::from_secs(1)))
        .connect_lazy_with(primary_options);
    follower.follow(&pool, |node| node);
    follower.spawn();
    sqlx::query("CREATE TABLE acknowledged (n int)")
        .execute(&pool)
        .await
        .expect("create");
    sqlx::query("INSERT INTO acknowledged VALUES (1)")
        .execute(&pool)
        .await
        .expect("insert before the switch");
    assert_eq!(
        server_port(&pool).await.expect("port"),
        i32::from(pair.primary.port())
    );

    let (primary_dir, standby_dir) = (pair.primary_dir.0.clone(), pair.standby_dir.0.clone());
    tokio::task::spawn_blocking(move || {
        Cluster::crash(&primary_dir).expect("crash the primary");
        Cluster::promote(&standby_dir).expect("promote the standby");
    })
    .await
    .expect("join");

    let switched = Instant::now();
    loop {
        match sqlx::query("INSERT INTO acknowledged VALUES (2)")
            .execute(&pool)
            .await
        {
            Ok(_) => break,
            Err(e) => assert!(
                switched.elapsed() < Duration::from_secs(20),
                "no write 20 s after the promotion: {e}"
            ),
        }
    }
    assert_eq!(
        server_port(&pool).await.expect("port"),
        i32::from(pair.standby.port())
    );
    let rows: Vec<i32> = sqlx::query_scalar("SELECT n FROM acknowledged ORDER BY n")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(
        rows,
        [1, 2],
        "the write acknowledged before the crash survived"
    );
}

#[tokio::test]
async fn a_one_shot_command_given_both_nodes_runs_on_the_primary() {
    let pair = Pair::start().await;
    // The standby is listed first: run there, `migrate` would fail (read-only).
    let url = pair.url("latchkey");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
            .arg("migrate")
            .env("DATABASE_URL", url)
            .env_remove("LATCHKEY_DATA_DIR")
            .env("NO_COLOR", "1")
            .output()
            .expect("run latchkey migrate")
    })
    .await
    .expect("join");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "migrations applied\n");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pair.primary.connect_options().database("latchkey"))
        .await
        .expect("the database is on the primary");
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM latchkey._sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(migrated > 0);
}
