//! One rule says whether a session is active, expired or revoked, and every place that shows
//! or enforces it agrees: the `session_overview` view, the listing, the row read by the
//! protocol, the re-validation of event streams, and the answers of the cookie check, the
//! bearer check and refresh. A revoked session stays revoked once it has expired too.

use latchkey::SessionKind;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp, Tokens};

/// One session put into a state by hand, and what every path must say of it.
struct Case {
    kind: SessionKind,
    login: Tokens,
    state: &'static str,
    /// The problem code of a check or refresh; `None` when they succeed.
    code: Option<&'static str>,
}

/// Logs in and moves the session to `(revoked, expired)` directly in the table.
async fn session_in(app: &TestApp, kind: SessionKind, revoked: bool, expired: bool) -> Case {
    let login = app.login(kind).await;
    assert_eq!(login.status, StatusCode::OK, "{:?}", login.body);
    if expired {
        sqlx::query(
            "UPDATE latchkey.sessions SET expires_at = now() - interval '1 minute' WHERE id = $1",
        )
        .bind(login.session_id())
        .execute(&app.db.pool)
        .await
        .expect("expire");
    }
    if revoked {
        sqlx::query(
            "UPDATE latchkey.sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
        )
        .bind(login.session_id())
        .execute(&app.db.pool)
        .await
        .expect("revoke");
    }
    let (state, code) = match (revoked, expired) {
        (true, _) => ("revoked", Some("session_revoked")),
        (false, true) => ("expired", Some("token_expired")),
        (false, false) => ("active", None),
    };
    Case {
        kind,
        login,
        state,
        code,
    }
}

/// Every combination of revoked and expired, in both modes.
async fn every_case(app: &TestApp) -> Vec<Case> {
    let mut cases = Vec::new();
    for kind in [SessionKind::Stateful, SessionKind::Stateless] {
        for (revoked, expired) in [(false, false), (false, true), (true, false), (true, true)] {
            cases.push(session_in(app, kind, revoked, expired).await);
        }
    }
    cases
}

async fn overview_state(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM latchkey.session_overview WHERE session_id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("overview row")
}

#[tokio::test]
async fn the_view_the_listing_the_row_and_the_stream_check_all_classify_a_session_alike() {
    let app = spawn_app().await;
    let cases = every_case(&app).await;
    let store = app.state.auth.store();
    let listed = store
        .list_sessions(Some(&app.user.owner()))
        .await
        .expect("list");
    let listed_all = store.list_sessions(None).await.expect("list all");

    for case in &cases {
        let id = case.login.session_id();
        let label = format!("{:?} {}", case.kind, case.state);
        assert_eq!(overview_state(&app, id).await, case.state, "view, {label}");
        for rows in [&listed, &listed_all] {
            let row = rows.iter().find(|r| r.session_id == id).expect("listed");
            assert_eq!(row.state, case.state, "listing, {label}");
        }
        let rec = store.find_session(id).await.expect("read").expect("row");
        assert_eq!(rec.state().as_str(), case.state, "record, {label}");
        assert_eq!(rec.summary().state, case.state, "summary, {label}");
        let live = store.live_status(id).await.expect("live").expect("row");
        assert_eq!(live.state().as_str(), case.state, "live status, {label}");
    }
}

/// The answer of a check or refresh, as `None` for 200 and the problem code otherwise.
fn outcome(answer: &Tokens) -> Option<String> {
    if answer.status == StatusCode::OK {
        None
    } else {
        Some(answer.code().to_owned())
    }
}

#[tokio::test]
async fn checks_and_refreshes_answer_session_revoked_even_once_the_revoked_session_has_expired() {
    let app = spawn_app().await;
    for case in every_case(&app).await {
        let label = format!("{:?} {}", case.kind, case.state);
        let want = case.code.map(str::to_owned);
        let (check, refresh) = match case.kind {
            SessionKind::Stateful => {
                let cookie = case.login.cookie();
                let check = app.whoami_cookie(&cookie).await;
                (check, app.refresh_cookie(&cookie).await)
            }
            SessionKind::Stateless => {
                let check = app.whoami_bearer(&case.login.access_token()).await;
                (check, app.refresh_json(&case.login.refresh_token()).await)
            }
        };
        assert_eq!(outcome(&check), want, "check, {label}: {:?}", check.body);
        assert_eq!(
            outcome(&refresh),
            want,
            "refresh, {label}: {:?}",
            refresh.body
        );
        if case.code.is_none() {
            assert_eq!(check.body["state"], case.state, "who am I, {label}");
        }
    }
}
