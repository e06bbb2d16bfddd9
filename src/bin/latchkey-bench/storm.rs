//! `--scenario refresh-storm`: `--tabs` tabs refresh one token at once, round after round;
//! every answer must be 200 with one common successor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::service::{login_token, refresh, Service};

/// Rounds until `duration` is up; prints rounds/s, round latency, errors and forks.
pub(crate) async fn run_scenario(
    svc: &Service,
    tabs: usize,
    duration: Duration,
) -> anyhow::Result<()> {
    println!(
        "scenario=refresh-storm seconds={} tabs={tabs}",
        duration.as_secs()
    );
    let mut token = login_token(&svc.client, &svc.base).await?;
    let (mut rounds, mut forks, mut errors, mut answers) = (0u64, 0u64, 0u64, 0u64);
    let mut round_ms = Vec::new();
    let mut first_error: Option<String> = None;
    let began = Instant::now();
    let mut last_print = Instant::now();
    while began.elapsed() < duration {
        let t0 = Instant::now();
        let barrier = Arc::new(Barrier::new(tabs));
        let mut tasks = Vec::with_capacity(tabs);
        for _ in 0..tabs {
            let (client, base, tok, barrier) = (
                svc.client.clone(),
                svc.base.clone(),
                token.clone(),
                barrier.clone(),
            );
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                refresh(&client, &base, &tok).await
            }));
        }
        let mut successors = std::collections::BTreeSet::new();
        for t in tasks {
            answers += 1;
            match t.await.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(next) => {
                    successors.insert(next);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        if successors.len() > 1 {
            forks += 1;
        }
        round_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        rounds += 1;
        match successors.into_iter().next() {
            Some(next) => token = next,
            None => {
                token = login_token(&svc.client, &svc.base).await?;
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprint!("\r\x1b[Krefresh-storm: {rounds} rounds, {errors} errors, {forks} forks");
            last_print = Instant::now();
        }
    }
    eprint!("\r\x1b[K");
    let secs = began.elapsed().as_secs_f64();
    round_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| round_ms[((round_ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "refresh-storm tabs={tabs} rounds={rounds} rounds/s={:.1} answers={answers} \
         round_p50_ms={:.2} round_p99_ms={:.2} errors={errors} forks={forks}{}",
        rounds as f64 / secs,
        pct(0.5),
        pct(0.99),
        first_error
            .map(|e| format!(" first error: {e}"))
            .unwrap_or_default()
    );
    Ok(())
}
