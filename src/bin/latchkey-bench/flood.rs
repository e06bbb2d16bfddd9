//! `--scenario login-flood`: refresh latency while logins saturate the hashing pool, against
//! refresh latency idle.

use std::time::Duration;

use crate::harness::{drive, drive_clients, header, quiesce};
use crate::login::login_clients;
use crate::service::{refresh_http, Chain, Service};

/// Idle refreshes, then the same refreshes under a login flood.
pub(crate) async fn run_scenario(svc: &Service, duration: Duration) -> anyhow::Result<()> {
    const REFRESHERS: usize = 8;
    const LOGINS: usize = 32;
    println!(
        "scenario=login-flood seconds={} refreshers={REFRESHERS} login-clients={LOGINS}",
        duration.as_secs()
    );
    header();
    quiesce(&svc.pool).await?;
    let (idle, _) = refresh_http(svc, REFRESHERS, duration, "refresh idle").await?;
    idle.print("login-flood", REFRESHERS, "refresh-idle");
    quiesce(&svc.pool).await?;
    // Set up the refresh chains first so their logins do not queue behind the flood.
    let (flooded, flood) = {
        let mut chains = Vec::with_capacity(REFRESHERS);
        for _ in 0..REFRESHERS {
            chains.push(Chain::login(svc).await?);
        }
        let flood_task = tokio::spawn(drive_clients(
            "login flood",
            login_clients(svc, LOGINS),
            duration + Duration::from_secs(1),
        ));
        // Let the hashing pool fill up before measuring.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let flooded = drive(
            "refresh flooded".to_owned(),
            chains,
            duration,
            |mut c: Chain| async move {
                let r = c.refresh().await;
                (c, r)
            },
        )
        .await;
        (flooded, flood_task.await?)
    };
    flooded.print("login-flood", REFRESHERS, "refresh-flood");
    flood.print("login-flood", LOGINS, "logins");
    println!(
        "{:<14} {:>7} {:<12} {:>28.2}x  (p99 flooded / idle; goal: <= 2x)",
        "login-flood",
        REFRESHERS,
        "ratio",
        flooded.pct(0.99) / idle.pct(0.99)
    );
    Ok(())
}
