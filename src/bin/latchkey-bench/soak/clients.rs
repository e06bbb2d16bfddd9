//! The soak's clients, each following the retry contract: a request that got a 5xx, a 429 or
//! no answer is sent again, with the same token, to the next instance, after `Retry-After`
//! (100 ms when there was no answer), until it gets an answer that is not a failure.
//!
//! * chain: a stateless session refreshing its token, over and over;
//! * stateful: a cookie session checking itself, refreshing every fourth time;
//! * login: logs in (stateless) every few seconds, keeping the last session;
//! * listener: a cookie session with an `/auth/events` stream open, reconnecting (to the
//!   next instance) whenever it ends.
//!
//! A 401 on a token the client was given is a logout: the promise broken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::instances::ORIGIN;
use super::report::Tally;

/// Longest wait for one answer before the client counts it lost and retries.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The password of every soak user.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// What every client shares.
#[derive(Clone)]
pub(crate) struct Ctx {
    /// Requests with a timeout each.
    pub(crate) http: reqwest::Client,
    /// The event streams (no total timeout).
    pub(crate) streams: reqwest::Client,
    /// `http://127.0.0.1:<port>` of each instance.
    pub(crate) bases: Arc<Vec<String>>,
    pub(crate) tally: Arc<Tally>,
    /// Becomes true when the run ends.
    pub(crate) stop: watch::Receiver<bool>,
    /// A client still retrying past this gives up (the service did not recover).
    pub(crate) deadline: Instant,
    /// Pause between two operations of a client.
    pub(crate) think: Duration,
}

/// The kinds of client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Chain,
    Stateful,
    Login,
    Listener,
}

/// A client at the end of the run: the last token it was given (refresh token or cookie).
pub(crate) struct ClientEnd {
    pub(crate) kind: Kind,
    pub(crate) id: usize,
    pub(crate) held: Option<String>,
    /// Still retrying when the deadline passed.
    pub(crate) unfinished: bool,
}

/// One answer.
struct Answer {
    status: u16,
    code: String,
    body: Value,
    cookie: Option<String>,
    retry_after: Option<u64>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<String> {
        self.body[name].as_str().map(str::to_owned)
    }
}

/// Sends one request and counts what came back; `Err` when nothing (whole) came back.
async fn send(ctx: &Ctx, what: &str, req: RequestBuilder) -> Result<Answer, ()> {
    let got = async {
        let res = req.timeout(REQUEST_TIMEOUT).send().await?;
        let status = res.status().as_u16();
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("retry-after").and_then(|v| v.trim().parse().ok());
        let cookie = header("set-cookie")
            .and_then(|c| c.split(';').next().map(str::trim).map(str::to_owned));
        let bytes = res.bytes().await?;
        Ok::<_, reqwest::Error>((status, retry_after, cookie, bytes))
    };
    match got.await {
        Ok((status, retry_after, cookie, bytes)) => {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let code = if status >= 400 {
                body["code"].as_str().unwrap_or("?").to_owned()
            } else {
                String::new()
            };
            ctx.tally.answer(what, status, &code, retry_after.is_some());
            Ok(Answer {
                status,
                code,
                body,
                cookie,
                retry_after,
            })
        }
        Err(e) => {
            ctx.tally.transport(
                what,
                if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "other"
                },
            );
            Err(())
        }
    }
}

/// The retry contract: sends `make(base)` to instance `*next`, and again to the following
/// instances while the answer is a failure (5xx, 429) or missing; `None` past the deadline.
async fn until_answered(
    ctx: &Ctx,
    what: &str,
    next: &mut usize,
    make: impl Fn(&str) -> RequestBuilder,
) -> Option<Answer> {
    loop {
        let base = &ctx.bases[*next % ctx.bases.len()];
        let wait = match send(ctx, what, make(base)).await {
            Ok(a) if a.status >= 500 || a.status == 429 => {
                Duration::from_secs(a.retry_after.unwrap_or(1).min(10))
            }
            Ok(a) => return Some(a),
            Err(()) => Duration::from_millis(100),
        };
        *next += 1;
        if Instant::now() + wait > ctx.deadline {
            return None;
        }
        tokio::time::sleep(wait).await;
    }
}

fn login_req(ctx: &Ctx, base: &str, email: &str, mode: &str) -> RequestBuilder {
    ctx.http
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD, "mode": mode }))
}

fn refresh_req(ctx: &Ctx, base: &str, token: &str) -> RequestBuilder {
    ctx.http
        .post(format!("{base}/auth/refresh"))
        .json(&json!({ "refresh_token": token }))
}

fn cookie_req(ctx: &Ctx, base: &str, refresh: bool, cookie: &str) -> RequestBuilder {
    let req = if refresh {
        ctx.http.post(format!("{base}/auth/refresh"))
    } else {
        ctx.http.get(format!("{base}/auth/session"))
    };
    req.header("cookie", cookie).header("origin", ORIGIN)
}

/// Logs in in `mode` until it succeeds: the refresh token (stateless) or the cookie.
async fn log_in(ctx: &Ctx, who: &str, email: &str, mode: &str, next: &mut usize) -> Option<String> {
    loop {
        let a = until_answered(ctx, "login", next, |b| login_req(ctx, b, email, mode)).await?;
        let held = match mode {
            "stateless" => a.field("refresh_token"),
            _ => a.cookie.clone(),
        };
        match (a.status, held) {
            (200, Some(held)) => {
                ctx.tally.acknowledged();
                return Some(held);
            }
            _ => {
                ctx.tally
                    .logged_out(format!("{who}: login answered {} {}", a.status, a.code));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Pause of about `think` (±50 %), cut short by the end of the run.
async fn pause(ctx: &mut Ctx, think: Duration) {
    let ms = think.as_millis() as u64;
    let jitter = rand::random_range(ms / 2..=ms + ms / 2);
    let stop = async {
        let _ = ctx.stop.wait_for(|stop| *stop).await;
    };
    let _ = tokio::time::timeout(Duration::from_millis(jitter), stop).await;
}

fn stopped(ctx: &Ctx) -> bool {
    *ctx.stop.borrow()
}

/// Runs one client of `kind` as user `email` until the run stops.
pub(crate) async fn run(mut ctx: Ctx, kind: Kind, id: usize, email: String) -> ClientEnd {
    let who = format!("{kind:?} {id}").to_lowercase();
    let mut next = id;
    let mut end = ClientEnd {
        kind,
        id,
        held: None,
        unfinished: false,
    };
    let mode = match kind {
        Kind::Chain | Kind::Login => "stateless",
        Kind::Stateful | Kind::Listener => "stateful",
    };
    let think = ctx.think;
    pause(&mut ctx, think).await;
    end.held = log_in(&ctx, &who, &email, mode, &mut next).await;
    let mut ops = 0_u64;
    while !stopped(&ctx) {
        let Some(held) = end.held.clone() else {
            end.unfinished = true;
            break;
        };
        ops += 1;
        let answer = match kind {
            Kind::Chain => {
                pause(&mut ctx, think).await;
                until_answered(&ctx, "refresh", &mut next, |b| refresh_req(&ctx, b, &held)).await
            }
            Kind::Stateful => {
                pause(&mut ctx, think).await;
                let refresh = ops.is_multiple_of(4);
                let what = if refresh {
                    "cookie refresh"
                } else {
                    "session check"
                };
                until_answered(&ctx, what, &mut next, |b| {
                    cookie_req(&ctx, b, refresh, &held)
                })
                .await
            }
            Kind::Login => {
                pause(&mut ctx, think * 10).await;
                end.held = log_in(&ctx, &who, &email, mode, &mut next).await;
                continue;
            }
            Kind::Listener => match listen(&mut ctx, &who, &held, &mut next).await {
                Listened::Ended => continue,
                Listened::Refused(a) => Some(a),
                Listened::GaveUp => None,
            },
        };
        let Some(a) = answer else {
            end.unfinished = true;
            break;
        };
        if a.status == 200 {
            let successor = match kind {
                Kind::Chain => a.field("refresh_token"),
                _ => a.cookie.clone(),
            };
            if let Some(successor) = successor {
                ctx.tally.acknowledged();
                end.held = Some(successor);
            }
            continue;
        }
        ctx.tally
            .logged_out(format!("{who}: {} {}", a.status, a.code));
        end.held = log_in(&ctx, &who, &email, mode, &mut next).await;
    }
    end
}

/// How a stream ended.
enum Listened {
    /// It ended (instance gone, database gone, end of the run): connect again.
    Ended,
    /// Refused with a final answer (401 …).
    Refused(Answer),
    /// Still failing at the deadline.
    GaveUp,
}

/// Opens `/auth/events` with `cookie` and reads it until it ends; a `revoked` event is a
/// logout.
async fn listen(ctx: &mut Ctx, who: &str, cookie: &str, next: &mut usize) -> Listened {
    let streams = ctx.streams.clone();
    let opened = loop {
        let base = &ctx.bases[*next % ctx.bases.len()];
        *next += 1;
        let req = streams
            .get(format!("{base}/auth/events"))
            .header("cookie", cookie)
            .header("origin", ORIGIN)
            .header("accept", "text/event-stream");
        match req.send().await {
            Ok(res) if res.status().is_success() => {
                ctx.tally.answer("events", 200, "", true);
                break res;
            }
            Ok(res) => {
                let status = res.status().as_u16();
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let body: Value = res.json().await.unwrap_or(Value::Null);
                let code = body["code"].as_str().unwrap_or("?").to_owned();
                ctx.tally
                    .answer("events", status, &code, retry_after.is_some());
                if status < 500 && status != 429 {
                    return Listened::Refused(Answer {
                        status,
                        code,
                        body,
                        cookie: None,
                        retry_after,
                    });
                }
                let wait = Duration::from_secs(retry_after.unwrap_or(1).min(10));
                if Instant::now() + wait > ctx.deadline {
                    return Listened::GaveUp;
                }
                tokio::time::sleep(wait).await;
            }
            Err(_) => {
                ctx.tally.transport("events", "connect");
                if Instant::now() > ctx.deadline {
                    return Listened::GaveUp;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if stopped(ctx) {
            return Listened::Ended;
        }
    };
    let mut res = opened;
    let mut seen = String::new();
    let mut stop = ctx.stop.clone();
    let ended = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::pin!(ended);
    loop {
        tokio::select! {
            () = &mut ended => return Listened::Ended,
            chunk = res.chunk() => match chunk {
                Ok(Some(bytes)) => {
                    seen.push_str(&String::from_utf8_lossy(&bytes));
                    if seen.contains("event: revoked") {
                        ctx.tally.logged_out(format!("{who}: revoked event on its stream"));
                        seen.clear();
                    }
                    // Keep only the unfinished last line.
                    if let Some(cut) = seen.rfind('\n') {
                        seen.drain(..=cut);
                    }
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Listened::Ended;
                }
            },
        }
    }
}

/// Checks that a client's last acknowledged token still works: a refresh for a stateless
/// one, a session check for a cookie; `Err` says why not.
pub(crate) async fn check_held(ctx: &Ctx, end: &ClientEnd) -> Result<(), String> {
    let who = format!("{:?} {}", end.kind, end.id).to_lowercase();
    let Some(held) = end.held.as_deref() else {
        return Err(format!("{who}: held no token"));
    };
    let mut next = end.id;
    let answer = match end.kind {
        Kind::Chain | Kind::Login => {
            until_answered(ctx, "final refresh", &mut next, |b| {
                refresh_req(ctx, b, held)
            })
            .await
        }
        Kind::Stateful | Kind::Listener => {
            until_answered(ctx, "final check", &mut next, |b| {
                cookie_req(ctx, b, false, held)
            })
            .await
        }
    };
    match answer {
        Some(a) if a.status == 200 => Ok(()),
        Some(a) => Err(format!("{who}: {} {}", a.status, a.code)),
        None => Err(format!("{who}: no answer before the deadline")),
    }
}
