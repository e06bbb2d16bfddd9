//! `--scenario scale`: the refresh, check, login and store runs with `--scale-base-rows`
//! (N1) and then `--scale-rows` (N2) sessions in the table, in one run; bytes per session
//! (heap, TOAST, each index); then `--scale-rotations` rotations and what they did to the
//! table and its indexes, with the share of HOT updates.
//!
//! The rows are filled with SQL in the real schema ([`fill`]); the refresh and check runs
//! present the tokens of filled rows drawn at random from the whole table ([`clients`]), so
//! at N2 they reach pages all over it; the rotations run the store's own statement
//! ([`rotate`]).

mod clients;
mod fill;
mod rotate;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use tower_sessions::SessionStore;

use crate::harness::{drive, drive_clients, quiesce, Stats};
use crate::login::login_clients;
use crate::service::Service;
use crate::store::Op;
use crate::Args;
use clients::{CookieHand, TokenChains};

/// Sessions each client of the refresh and check runs takes in turn.
const PER_CLIENT: usize = 500;

/// One measured run: what, how many clients, throughput and p99 in ms.
struct Row {
    what: &'static str,
    clients: usize,
    rps: f64,
    p99_ms: f64,
}

impl Row {
    fn of(what: &'static str, clients: usize, s: &Stats) -> Self {
        Self {
            what,
            clients,
            rps: s.rps(),
            p99_ms: s.pct(0.99),
        }
    }
}

/// The refresh, check, login and store runs at every `--clients` count, as rows.
async fn measure(svc: &Service, cookie: &str, args: &Args, rows: i64) -> anyhow::Result<Vec<Row>> {
    let duration = Duration::from_secs(args.seconds);
    let mut out = Vec::new();
    let print = |r: &Row| {
        println!(
            "{:<10} {:>7} {:>11} {:>10.0} {:>8.2}",
            r.what, r.clients, rows, r.rps, r.p99_ms
        );
    };
    for &n in &args.clients {
        quiesce(&svc.pool).await?;
        let chains = TokenChains::make(svc, n, PER_CLIENT).await?;
        let s = drive("scale-refresh".into(), chains, duration, TokenChains::step).await;
        check_errors(&s, "refresh")?;
        out.push(Row::of("refresh", n, &s));
        print(&out[out.len() - 1]);

        quiesce(&svc.pool).await?;
        let hands = CookieHand::make(svc, cookie, n, PER_CLIENT).await?;
        let s = drive_clients("scale-check", hands, duration).await;
        check_errors(&s, "check")?;
        out.push(Row::of("check", n, &s));
        print(&out[out.len() - 1]);

        quiesce(&svc.pool).await?;
        // One bench user: the login throttle answers part of the logins with 429, which
        // count as errors and not in ok/s.
        let s = drive_clients("scale-login", login_clients(svc, n), duration).await;
        out.push(Row::of("login", n, &s));
        print(&out[out.len() - 1]);
        if s.errors() > 0 {
            println!(
                "#   login: {} errors, first: {}",
                s.errors(),
                s.first_error().unwrap_or("-")
            );
        }

        let store: Arc<dyn SessionStore> =
            Arc::new(latchkey::store::PgSessionStore::new(svc.pool.clone()));
        let mut seeds = Vec::new();
        for (op, what) in [
            (Op::Create, "store-create"),
            (Op::Load, "store-load"),
            (Op::Save, "store-save"),
            (Op::Touch, "store-touch"),
        ] {
            quiesce(&svc.pool).await?;
            let (sample, held) = crate::store::run(store.clone(), op, n, duration, seeds).await?;
            seeds = held;
            out.push(Row {
                what,
                clients: n,
                rps: sample.rps,
                p99_ms: sample.p99_ms,
            });
            print(&out[out.len() - 1]);
        }
    }
    Ok(out)
}

/// A run with errors is not a measurement.
fn check_errors(s: &Stats, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.errors() == 0,
        "{what}: {} errors, first: {}",
        s.errors(),
        s.first_error().unwrap_or("-")
    );
    Ok(())
}

/// Fills to N1, measures, fills to N2, measures, compares; then the rotations.
pub(crate) async fn run(options: PgConnectOptions, args: &Args) -> anyhow::Result<()> {
    let (n1, n2) = (args.scale_base_rows, args.scale_rows);
    anyhow::ensure!(n1 < n2, "--scale-base-rows must be below --scale-rows");
    let svc = Service::start(options).await?;
    let cookie = clients::cookie_name(&svc).await?;
    println!(
        "scenario=scale seconds={} rows={n1},{n2} rotations={}",
        args.seconds, args.scale_rotations
    );
    let secs = fill::fill(&svc.pool, 0, n1).await?;
    let vac = fill::settle(&svc.pool).await?;
    println!("# filled {n1} rows in {secs:.1} s, VACUUM (ANALYZE) {vac:.1} s");
    fill::sizes(&svc.pool).await?.print_per_row("N1");
    println!(
        "{:<10} {:>7} {:>11} {:>10} {:>8}",
        "run", "clients", "rows", "ok/s", "p99_ms"
    );
    let at_n1 = measure(&svc, &cookie, args, n1).await?;

    let secs = fill::fill(&svc.pool, n1, n2).await?;
    let vac = fill::settle(&svc.pool).await?;
    println!(
        "# filled {} more rows in {secs:.1} s ({:.0} rows/s), VACUUM (ANALYZE) {vac:.1} s",
        n2 - n1,
        (n2 - n1) as f64 / secs
    );
    fill::sizes(&svc.pool).await?.print_per_row("N2");
    let at_n2 = measure(&svc, &cookie, args, n2).await?;

    println!(
        "{:<10} {:>7} {:>12} {:>12}",
        "run", "clients", "ok/s N2/N1", "p99 N2/N1"
    );
    for (a, b) in at_n1.iter().zip(&at_n2) {
        let goal = if matches!(a.what, "refresh" | "check") {
            "  (goal: ok/s >= 0.9x)"
        } else {
            ""
        };
        println!(
            "{:<10} {:>7} {:>11.2}x {:>11.2}x{goal}",
            a.what,
            a.clients,
            b.rps / a.rps,
            b.p99_ms / a.p99_ms
        );
    }

    let result = rotations(&svc, args.scale_rotations, args.scale_step_secs).await;
    svc.pool.close().await;
    svc.stop();
    result
}

/// `total` rotations (expiry step `step`, default the service's), then the growth of the table
/// and its indexes and the HOT share.
async fn rotations(svc: &Service, total: u64, step: Option<u64>) -> anyhow::Result<()> {
    fill::settle(&svc.pool).await?;
    let before = fill::sizes(&svc.pool).await?;
    let upd0 = rotate::updates(&svc.pool, Duration::from_secs(11)).await?;
    let tasks = usize::try_from(crate::service::POOL)?;
    let (done, failed, secs) = rotate::rotate(&svc.pool, total, tasks, step).await?;
    let upd1 = rotate::updates(&svc.pool, Duration::from_secs(11)).await?;
    let after = fill::sizes(&svc.pool).await?;
    let (upd, hot) = (upd1.upd - upd0.upd, upd1.hot - upd0.hot);
    let step = step.unwrap_or(latchkey::auth::AuthConfig::default().expiry_step_secs());
    println!(
        "# {done} rotations (expiry step {step} s) in {secs:.1} s ({:.0}/s), {failed} lost their compare-and-swap",
        done as f64 / secs
    );
    println!(
        "# HOT updates: {hot} of {upd} ({:.1}%), autovacuum ran {} times on sessions",
        100.0 * hot as f64 / upd.max(1) as f64,
        upd1.autovacuums - upd0.autovacuums
    );
    println!("# growth over the rotations:");
    after.print_growth(&before);
    after.print_per_row("after the rotations");
    Ok(())
}
