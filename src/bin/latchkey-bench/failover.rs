//! `--scenario failover`: a primary switch under load. A private PostgreSQL primary and its
//! synchronous streaming standby (`initdb`, `pg_basebackup -R`, `synchronous_standby_names`,
//! own ports, a temporary directory: no other server is touched), two `latchkey serve`
//! processes given both nodes (`postgres://…@127.0.0.1:P,127.0.0.1:S/latchkey?
//! target_session_attrs=read-write`), and refresh clients following the retry contract (the
//! soak's). A third of the way in, the primary is stopped at once (`pg_ctl stop -m
//! immediate`) and the standby promoted (`pg_ctl promote`); latchkey is not restarted.
//!
//! The report: the soak's (answers, promises), then the switch's figures: the failure window
//! (first to last failed request), the time from the stop until the service wrote again (the
//! first acknowledged refresh), until every instance was ready, and whether every client's
//! last acknowledged token still worked at the end (acknowledged refreshes lost: must be 0),
//! and that each instance's `LISTEN` connection (live streams) is on the new primary.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use latchkey::embedded::{Cluster, ClusterOptions, STANDBY_NAME};
use sqlx::{Connection, PgConnection};

use crate::soak::clients::{self, Kind};
use crate::soak::faults::{self, FaultKind, FaultRecord};
use crate::soak::report;
use crate::soak::{grace_used, prepare_database, wait_and_check, Fleet, DATABASE, INSTANCES};
use crate::Args;

/// Runs the scenario; an error when a promise was broken or it could not run.
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "latchkey-failover-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let (primary_dir, standby_dir) = (dir.join("primary"), dir.join("standby"));
    std::fs::create_dir_all(&dir)?;
    eprintln!("failover: private primary and standby in {}", dir.display());
    let mut options = ClusterOptions::new(&primary_dir);
    options.sync = false;
    options.settings = vec![("max_connections".to_owned(), "200".to_owned())];
    let to = standby_dir.clone();
    let (primary, standby) = tokio::task::spawn_blocking(move || {
        let primary = Cluster::start(&options)?;
        let standby = primary.start_standby(&to, None)?;
        Ok::<_, latchkey::embedded::EmbeddedError>((primary, standby))
    })
    .await?
    .context("starting the private primary and its standby")?;
    let result = tokio::select! {
        result = switch(args, &primary, &standby, &dir) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    drop((primary, standby));
    let _ = tokio::task::spawn_blocking(move || {
        let _ = Cluster::stop(&standby_dir);
        let _ = Cluster::stop(&primary_dir);
    })
    .await;
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!("failover: logs kept in {}", dir.display()),
    }
    result
}

/// The live streams' `LISTEN` connections on `node` (they must have followed the primary).
async fn listeners_on(node: &Cluster) -> anyhow::Result<i64> {
    let mut conn = PgConnection::connect_with(&node.connect_options()).await?;
    let n = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(latchkey::events::LISTENER_APPLICATION_NAME)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(n)
}

/// Makes the standby synchronous and waits until it is.
async fn make_synchronous(primary: &Cluster) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect_with(&primary.connect_options()).await?;
    sqlx::query(&format!(
        "ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'"
    ))
    .execute(&mut admin)
    .await?;
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await?;
    let began = Instant::now();
    loop {
        let state: Option<String> = sqlx::query_scalar(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
        )
        .bind(STANDBY_NAME)
        .fetch_optional(&mut admin)
        .await?;
        if state.as_deref() == Some("sync") {
            break;
        }
        anyhow::ensure!(
            began.elapsed() < Duration::from_secs(30),
            "the standby is not synchronous after 30 s ({state:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin.close().await?;
    Ok(())
}

/// Everything after both nodes are up.
async fn switch(
    args: &Args,
    primary: &Cluster,
    standby: &Cluster,
    dir: &Path,
) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.soak_secs.max(15));
    let clients = args.soak_clients.max(4);
    let users = clients.div_ceil(8);
    make_synchronous(primary).await?;
    prepare_database(primary, users).await?;
    let primary_node = format!("127.0.0.1:{}", primary.port());
    let database_url = primary.url(DATABASE).replacen(
        &primary_node,
        &format!("{primary_node},127.0.0.1:{}", standby.port()),
        1,
    ) + "?target_session_attrs=read-write";
    let Fleet {
        http,
        mut instances,
        ctx,
        tally,
        stop: stop_tx,
        began,
        ..
    } = Fleet::start(args, database_url, dir, duration).await?;
    let header = format!(
        "failover: {} s, {clients} refresh clients (stateless chains), {INSTANCES} instances of \
         {} given both nodes, a private primary and its synchronous standby; the primary \
         stopped (immediate) and the standby promoted at {} s",
        duration.as_secs(),
        args.server_bin.display(),
        (duration / 3).as_secs(),
    );
    eprintln!("{header}");
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            let email = format!("soak{}@example.com", id % users);
            tokio::spawn(clients::run(ctx.clone(), Kind::Chain, id, email))
        })
        .collect();

    tokio::time::sleep_until((began + duration / 3).into()).await;
    let at = began.elapsed();
    eprintln!("failover: {:>6.1} s  primary-switch", at.as_secs_f64());
    let (old, new) = (primary.data_dir().to_owned(), standby.data_dir().to_owned());
    let stopped_in = Instant::now();
    let (stopped, promoted) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        Cluster::crash(&old)?;
        let stopped = t.elapsed();
        Cluster::promote(&new)?;
        Ok::<_, latchkey::embedded::EmbeddedError>((stopped, t.elapsed()))
    })
    .await?
    .context("stopping the primary and promoting the standby")?;
    let outage = stopped_in.elapsed();
    let recover = faults::recovery(&mut instances, &http).await;
    let record = FaultRecord {
        kind: FaultKind::PrimarySwitch,
        at,
        outage,
        recover,
    };

    tokio::time::sleep_until((began + duration).into()).await;
    stop_tx.send_replace(true);
    let (mut ending, elapsed) = wait_and_check(tasks, ctx, began).await?;
    ending.grace_used = grace_used(standby).await?;
    let listeners = listeners_on(standby).await?;
    let restarted = instances
        .iter_mut()
        .map(|i| usize::from(!i.alive()))
        .sum::<usize>();
    let mut kept = report::print(&header, &tally, &[record], &ending, elapsed);
    let (failed, window) = tally.failures_since(at);
    let written = tally.first_ack_since(at + outage);
    let secs = |d: Duration| format!("{:.2}", d.as_secs_f64());
    println!("primary switch:");
    println!(
        "  primary stopped in {} s, standby promoted {} s after the stop",
        secs(stopped),
        secs(promoted)
    );
    match window {
        Some((first, last)) => println!(
            "  failed requests from the stop on: {failed}, first {} s and last {} s after \
             the stop: a failure window of {} s",
            secs(first.saturating_sub(at)),
            secs(last.saturating_sub(at)),
            secs(last - first)
        ),
        None => println!("  failed requests from the stop on: 0"),
    }
    match written {
        Some(t) => println!(
            "  service wrote again (first acknowledged refresh after the promotion) {} s \
             after the stop",
            secs(t - at)
        ),
        None => {
            println!("  service never wrote again");
            kept = false;
        }
    }
    println!(
        "  every instance ready after the promotion: {}; instances that exited: {restarted}",
        recover.map_or_else(|| "NEVER".to_owned(), |r| format!("{} s", secs(r)))
    );
    println!("  LISTEN connections on the new primary: {listeners} (of {INSTANCES} instances)");
    println!(
        "  acknowledged refreshes lost: {} (of {} clients checked)",
        ending.lost.len(),
        ending.checked
    );
    for instance in &mut instances {
        instance.stop();
    }
    if kept && restarted == 0 && listeners == INSTANCES as i64 {
        Ok(())
    } else {
        anyhow::bail!("the primary switch broke a promise (report above)")
    }
}
