//! `latchkey healthcheck`, the container's HEALTHCHECK: exit 0 when `/readyz` answers 200, 1
//! with the reason otherwise, 2 for a URL it cannot check.

use std::time::Duration;

use crate::helpers::{spawn_app_with, AppOptions};

/// Runs `latchkey healthcheck ARGS` with `LATCHKEY_BIND` set to `bind` (if given), off the
/// test's runtime (the service under test runs on it); returns (exit code, stdout, stderr).
async fn healthcheck(bind: Option<&str>, args: &[&str]) -> (Option<i32>, String, String) {
    let bind = bind.map(str::to_owned);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
        cmd.arg("healthcheck")
            .args(&args)
            .env_remove("LATCHKEY_BIND");
        if let Some(bind) = bind {
            cmd.env("LATCHKEY_BIND", bind);
        }
        let out = cmd.output().expect("run latchkey healthcheck");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn healthcheck_exits_0_when_ready_and_1_naming_the_status_while_the_database_is_down() {
    let proxy = crate::proxy::start().await;
    let app = spawn_app_with(AppOptions {
        connect_port: Some(proxy.port),
        ..AppOptions::default()
    })
    .await;
    let port = app.base.rsplit(':').next().expect("port").to_owned();
    // The default URL: /readyz on LATCHKEY_BIND, an unspecified address reached on loopback
    // (as in the image, which binds 0.0.0.0).
    let bind = format!("0.0.0.0:{port}");

    let (code, out, err) = healthcheck(Some(&bind), &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        format!("http://127.0.0.1:{port}/readyz: 200 OK")
    );

    proxy.cut();
    let (code, _, err) = healthcheck(Some(&bind), &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("answered 503"),
        "{err}"
    );

    proxy.restore();
    let mut code = None;
    for _ in 0..50 {
        code = healthcheck(Some(&bind), &[]).await.0;
        if code == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code, Some(0), "healthy again once the database is back");
}

#[tokio::test]
async fn healthcheck_exits_1_with_the_reason_when_nothing_listens_nothing_answers_or_not_200() {
    let app = spawn_app_with(AppOptions::default()).await;
    let (code, _, err) = healthcheck(None, &["--url", &app.url("/no-such-path")]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("answered 404"), "{err}");

    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let (code, _, err) = healthcheck(Some(&format!("127.0.0.1:{port}")), &[]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot connect"), "{err}");

    // Accepts, never answers: the check gives up at its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/readyz", silent.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let began = std::time::Instant::now();
    let (code, _, err) = healthcheck(None, &["--url", &url, "--timeout-secs", "1"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no answer within 1s"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(10));
    held.abort();
}

#[tokio::test]
async fn healthcheck_refuses_a_url_it_cannot_check_with_exit_2() {
    for url in [
        "https://127.0.0.1:8080/readyz",
        "127.0.0.1:8080",
        "not a url",
    ] {
        let (code, _, err) = healthcheck(None, &["--url", url]).await;
        assert_eq!(code, Some(2), "{url}: {err}");
        assert!(err.contains("--url"), "{err}");
    }
}
