//! `--scenario login`: stateless logins against argon2id hashes/s of the same parameters on
//! every core.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{drive_clients, header, Client};
use crate::service::{login, Service, PASSWORD};

/// argon2id hashes/s of the service's parameters on every core, computed here.
async fn argon2_baseline(duration: Duration) -> anyhow::Result<(f64, usize)> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let params = latchkey::auth::password::owasp_params();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let began = Instant::now();
    for _ in 0..threads {
        let (params, stop, count) = (params.clone(), stop.clone(), count.clone());
        handles.push(tokio::task::spawn_blocking(move || {
            use argon2::PasswordHasher as _;
            let a =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let salt = *b"bench-salt-16byt";
            while !stop.load(Ordering::Relaxed) {
                a.hash_password_with_salt(PASSWORD.as_bytes(), &salt)
                    .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
                count.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.await??;
    }
    Ok((
        count.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64(),
        threads,
    ))
}

/// Per-client state of the login loop.
pub(crate) struct LoginClient {
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
}

impl Client for LoginClient {
    /// One stateless login.
    async fn call(&self) -> anyhow::Result<()> {
        login(&self.client, &self.base, "stateless")
            .await
            .map(|_| ())
    }
}

/// `n` clients of `svc` for the login loop.
pub(crate) fn login_clients(svc: &Service, n: usize) -> Vec<LoginClient> {
    (0..n)
        .map(|_| LoginClient {
            client: svc.client.clone(),
            base: svc.base.clone(),
        })
        .collect()
}

/// The hashing baseline, then the logins at each client count.
pub(crate) async fn run_scenario(
    svc: &Service,
    clients: &[usize],
    duration: Duration,
) -> anyhow::Result<()> {
    println!("scenario=login seconds={}", duration.as_secs());
    header();
    let (hps, threads) = argon2_baseline(duration).await?;
    for &n in clients {
        let ours = drive_clients("login", login_clients(svc, n), duration).await;
        ours.print("login", n, "http");
        println!(
            "{:<14} {:>7} {:<12} {:>10.1}   (argon2id m=19456 t=2 p=1 on {threads} threads)",
            "login", n, "argon2-only", hps
        );
        println!(
            "{:<14} {:>7} {:<12} {:>9.2}x   (goal: >= 0.9x)",
            "login",
            n,
            "ratio",
            ours.rps() / hps
        );
    }
    Ok(())
}
