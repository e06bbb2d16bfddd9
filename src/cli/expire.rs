//! The purge: `latchkey expire` (cron) and the in-service sweeper of `latchkey serve`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::ExpireArgs;
use crate::store::{ExpirePolicy, ExpireReport, Store};

use super::open_store;

/// `latchkey expire`: batches until nothing is left, then one summary line on stdout.
pub(super) async fn expire(url: &str, args: &ExpireArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(url, 1).await?;
    let started = std::time::Instant::now();
    let mut progress = Progress::new();
    let report = store
        .expire(&args.policy(), |r| progress.show(r, started))
        .await
        .context("expiring sessions")?;
    progress.finish();
    let logins = store
        .purge_login_records(&args.policy())
        .await
        .context("purging login throttle counters and failures")?;
    let ms = started.elapsed().as_millis();
    if args.json {
        let mut value = serde_json::to_value(report)?;
        value["ms"] = serde_json::json!(ms);
        value["logins"] = serde_json::json!(logins);
        println!("{value}");
    } else {
        println!(
            "expired={} revoked={} events={} batches={} ms={ms} logins={logins}{}",
            report.expired,
            report.revoked,
            report.events,
            report.batches,
            if report.dry_run { " dry_run=true" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A running total on stderr when the purge is long: rewritten in place twice a second on a
/// terminal, one line every ten seconds otherwise (a log under cron shows it moving).
struct Progress {
    terminal: bool,
    shown: bool,
    last: Option<std::time::Instant>,
}

impl Progress {
    /// Runs shorter than this print nothing but the summary.
    const AFTER: std::time::Duration = std::time::Duration::from_secs(2);

    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            shown: false,
            last: None,
        }
    }

    fn every(&self) -> std::time::Duration {
        if self.terminal {
            std::time::Duration::from_millis(500)
        } else {
            std::time::Duration::from_secs(10)
        }
    }

    fn show(&mut self, r: &ExpireReport, started: std::time::Instant) {
        if started.elapsed() < Self::AFTER {
            return;
        }
        if self.last.is_some_and(|t| t.elapsed() < self.every()) {
            return;
        }
        self.last = Some(std::time::Instant::now());
        let line = format!(
            "expiring: expired={} revoked={} events={} batches={} ({}s)",
            r.expired,
            r.revoked,
            r.events,
            r.batches,
            started.elapsed().as_secs()
        );
        if self.terminal {
            self.shown = true;
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// The optional background purge of `latchkey serve`: the same batches as `latchkey expire`.
pub(super) fn spawn_sweeper(store: Store, every_secs: u64) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            match store.expire(&ExpirePolicy::default(), |_| {}).await {
                Ok(r) if r.batches > 0 => tracing::info!(
                    expired = r.expired,
                    revoked = r.revoked,
                    events = r.events,
                    batches = r.batches,
                    ms = started.elapsed().as_millis() as u64,
                    "sweeper purged sessions"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper failed; retrying at the next interval")
                }
            }
            match store.purge_login_records(&ExpirePolicy::default()).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "sweeper purged login throttle rows and failures"),
                Err(e) => tracing::warn!(error = %e, "sweeper failed to purge login records"),
            }
        }
    });
}
