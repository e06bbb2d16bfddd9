//! Sends the requests of `hostile` (over a raw TCP socket or an HTTP client) and tallies the
//! answers; shared by `--scenario malformed` and its smoke test in `tests/api/malformed/`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::hostile::{generate, Framing, Hostile, Material};

/// How long a request waits for its answer.
const WAIT: Duration = Duration::from_secs(15);

/// What came back for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A final status code.
    Status(u16),
    /// The connection closed (or was reset) before a status line.
    Closed,
    /// No status line within the wait.
    TimedOut,
    /// The HTTP client would not build the request (a method or URL it cannot send).
    NotSent,
}

/// Writes `bytes` to a new connection and reads the first final status line.
pub(crate) async fn send_raw(addr: SocketAddr, bytes: &[u8], framing: Framing) -> Answer {
    let Ok(Ok(mut stream)) = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await else {
        return Answer::TimedOut;
    };
    // A server that answers early (a head too large) may close before all is written.
    let wrote = tokio::time::timeout(WAIT, stream.write_all(bytes)).await;
    if framing == Framing::Truncated || !matches!(wrote, Ok(Ok(()))) {
        let _ = stream.shutdown().await;
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(status) = final_status(&seen) {
                return Answer::Status(status);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Answer::Closed,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.unwrap_or(Answer::TimedOut)
}

/// The status of the first response that is not `1xx`, once its status line is in `seen`.
fn final_status(mut seen: &[u8]) -> Option<u16> {
    loop {
        let line_end = seen.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&seen[..line_end]).ok()?;
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        if !(100..200).contains(&status) {
            return Some(status);
        }
        let head_end = seen.windows(4).position(|w| w == b"\r\n\r\n")?;
        seen = &seen[head_end + 4..];
    }
}

/// Sends an HTTP request built from the parts; headers the client cannot send are dropped.
pub(crate) async fn send_http(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    headers: &[(String, Vec<u8>)],
    body: Vec<u8>,
) -> Answer {
    let Ok(method) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return Answer::NotSent;
    };
    let mut request = client.request(method, format!("{base}{path}"));
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value),
        ) {
            request = request.header(n, v);
        }
    }
    match tokio::time::timeout(WAIT, request.body(body).send()).await {
        Ok(Ok(res)) => Answer::Status(res.status().as_u16()),
        Ok(Err(e)) if e.is_builder() => Answer::NotSent,
        Ok(Err(_)) => Answer::Closed,
        Err(_) => Answer::TimedOut,
    }
}

/// The answers of a storm.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Count per answer (`200`, `400`, …, `closed`, `timed-out`, `not-sent`).
    pub(crate) answers: BTreeMap<String, u64>,
    /// Raw requests sent, HTTP requests sent.
    pub(crate) raw: u64,
    /// HTTP requests sent.
    pub(crate) http: u64,
    /// The first requests that got a 5xx: (index, status), to reproduce them.
    pub(crate) server_errors: Vec<(u64, u16)>,
    /// Complete requests (raw or HTTP) that got no answer: their indexes.
    pub(crate) unanswered: Vec<u64>,
}

impl Tally {
    /// How many answers were 5xx.
    pub(crate) fn count_5xx(&self) -> u64 {
        self.answers
            .iter()
            .filter(|(k, _)| k.starts_with('5') && k.len() == 3)
            .map(|(_, n)| n)
            .sum()
    }

    /// One line: every answer and its count.
    pub(crate) fn summary(&self) -> String {
        self.answers
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Sends requests `0..count` of `seed` to `addr` from `clients` tasks (even indexes raw,
/// odd ones HTTP) and tallies the answers.
pub(crate) async fn storm(
    addr: SocketAddr,
    seed: u64,
    count: u64,
    clients: usize,
    material: Arc<Material>,
) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let base = format!("http://{addr}");
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (next, tally, material, base) =
                (next.clone(), tally.clone(), material.clone(), base.clone());
            tokio::spawn(async move {
                // A new connection per request: a request never meets a connection the
                // server closed after the previous one (a kept-alive connection closed after
                // an answer whose body was left unread), so every unanswered one is its own.
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("HTTP client");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let raw = i % 2 == 0;
                    let (answer, complete) = match generate(seed, i, raw, &material) {
                        Hostile::Raw { bytes, framing } => (
                            send_raw(addr, &bytes, framing).await,
                            framing == Framing::Complete,
                        ),
                        Hostile::Http {
                            method,
                            path,
                            headers,
                            body,
                        } => (
                            send_http(&client, &base, &method, &path, &headers, body).await,
                            true,
                        ),
                    };
                    let key = match answer {
                        Answer::Status(s) => s.to_string(),
                        Answer::Closed => "closed".to_owned(),
                        Answer::TimedOut => "timed-out".to_owned(),
                        Answer::NotSent => "not-sent".to_owned(),
                    };
                    let mut t = tally.lock().expect("tally");
                    *t.answers.entry(key).or_default() += 1;
                    if raw {
                        t.raw += 1;
                    } else {
                        t.http += 1;
                    }
                    match answer {
                        Answer::Status(s) if s >= 500 && t.server_errors.len() < 20 => {
                            t.server_errors.push((i, s));
                        }
                        Answer::Closed | Answer::TimedOut
                            if complete && t.unanswered.len() < 20 =>
                        {
                            t.unanswered.push(i);
                        }
                        _ => {}
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(tally)
        .map(|m| m.into_inner().expect("tally"))
        .unwrap_or_default()
}
