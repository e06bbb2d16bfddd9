//! `latchkey healthcheck`: one GET of the service's `/readyz` (or `--url`), for a container's
//! HEALTHCHECK, which has neither curl nor wget in a slim image. Exit 0 on 200; 1 with the
//! reason otherwise (no connection, no answer in time, another status).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hyper::header::HOST;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthcheckArgs;

/// Runs the check; prints `URL: STATUS` on success.
///
/// # Errors
/// Anything but a 200, with the reason.
pub(super) async fn healthcheck(args: &HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = args.target().map_err(|e| anyhow!(e))?;
    let within = Duration::from_secs(args.timeout_secs);
    let status = tokio::time::timeout(within, get(&url))
        .await
        .map_err(|_| anyhow!("{url}: no answer within {}s", args.timeout_secs))??;
    if status != hyper::StatusCode::OK {
        bail!("{url} answered {status}");
    }
    println!("{url}: {status}");
    Ok(ExitCode::SUCCESS)
}

/// The status of `GET url` over HTTP/1.1 on a connection of its own.
async fn get(url: &Uri) -> anyhow::Result<hyper::StatusCode> {
    let authority = url
        .authority()
        .with_context(|| format!("{url} has no host"))?
        .clone();
    let address = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let stream = TcpStream::connect(&address)
        .await
        .with_context(|| format!("{url}: cannot connect to {address}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("{url}: HTTP handshake"))?;
    tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(HOST, authority.as_str())
        .body(String::new())
        .with_context(|| format!("{url}: building the request"))?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("{url}: no answer"))?;
    Ok(response.status())
}
