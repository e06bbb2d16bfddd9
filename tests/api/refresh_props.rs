//! A property of the refresh protocol against a real database (proptest, a fresh database per
//! case): for any schedule of rounds in which tabs sharing one token refresh at once (spread
//! over a few milliseconds) and clients whose answer was lost retry with the token they hold,
//! inside the grace window every call answers 200, every answer to one token is the same
//! successor, `version` rises by exactly one per round, and nothing is revoked.

use std::sync::Arc;
use std::time::Duration;

use latchkey::SessionKind;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::StatusCode;
use tokio::sync::Barrier;

use crate::helpers::{spawn_app, TestApp, Tokens};

/// One round: tabs refreshing the jar's token at once, each after its own delay (ms), then
/// retries of that same token after every tab has its answer.
#[derive(Debug, Clone)]
struct Round {
    delays: Vec<u8>,
    retries: usize,
}

fn round() -> impl Strategy<Value = Round> {
    (proptest::collection::vec(0u8..15, 1..7), 0usize..3)
        .prop_map(|(delays, retries)| Round { delays, retries })
}

fn mode() -> impl Strategy<Value = SessionKind> {
    prop_oneof![Just(SessionKind::Stateless), Just(SessionKind::Stateful)]
}

/// The token an answer carries in `mode`.
fn token_of(mode: SessionKind, answer: &Tokens) -> String {
    match mode {
        SessionKind::Stateless => answer.refresh_token(),
        SessionKind::Stateful => answer.cookie(),
    }
}

async fn refresh(app: &TestApp, mode: SessionKind, token: &str) -> Tokens {
    match mode {
        SessionKind::Stateless => app.refresh_json(token).await,
        SessionKind::Stateful => app.refresh_cookie(token).await,
    }
}

async fn run_case(mode: SessionKind, rounds: Vec<Round>) -> Result<(), TestCaseError> {
    let app = Arc::new(spawn_app().await);
    let login = app.login(mode).await;
    prop_assert_eq!(login.status, StatusCode::OK);
    let sid = login.session_id();
    let mut jar = token_of(mode, &login);
    for (n, round) in rounds.iter().enumerate() {
        let before = app.version_of(sid).await;
        let barrier = Arc::new(Barrier::new(round.delays.len()));
        let tabs: Vec<_> = round
            .delays
            .iter()
            .map(|&delay| {
                let (app, barrier, held) = (app.clone(), barrier.clone(), jar.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
                    refresh(&app, mode, &held).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for tab in tabs {
            answers.push(tab.await.expect("tab"));
        }
        for _ in 0..round.retries {
            answers.push(refresh(&app, mode, &jar).await);
        }
        let mut successors = Vec::new();
        for a in &answers {
            prop_assert_eq!(a.status, StatusCode::OK, "round {}: {:?}", n, a.body);
            successors.push(token_of(mode, a));
        }
        successors.dedup();
        prop_assert_eq!(successors.len(), 1, "round {}: the chain forked", n);
        prop_assert_eq!(app.version_of(sid).await, before + 1, "round {}", n);
        jar = successors.remove(0);
    }
    prop_assert_eq!(app.events_of(sid, "reuse_detected").await, 0);
    let still = match mode {
        SessionKind::Stateful => app.whoami_cookie(&jar).await,
        SessionKind::Stateless => {
            let last = app.refresh_json(&jar).await;
            prop_assert_eq!(last.status, StatusCode::OK);
            app.whoami_bearer(&last.access_token()).await
        }
    };
    prop_assert_eq!(
        still.status,
        StatusCode::OK,
        "the session is live: {:?}",
        still.body
    );
    Ok(())
}

#[test]
fn concurrent_and_retried_refreshes_inside_grace_converge_on_one_successor_per_version() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 8,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(mode(), proptest::collection::vec(round(), 1..5)),
            |(mode, rounds)| runtime.block_on(run_case(mode, rounds)),
        )
        .expect("property holds");
}
