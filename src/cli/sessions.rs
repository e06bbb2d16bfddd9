//! `latchkey sessions …`: listing and revoking sessions.

use std::process::ExitCode;

use anyhow::bail;

use crate::config::SessionsCommand;
use crate::store::RevokeReason;

use super::{open_store, Target, LISTED_TIME};

pub(super) async fn sessions(target: &Target, cmd: SessionsCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(target, 2).await?;
    match cmd {
        SessionsCommand::List { owner, json } => {
            let rows = store.list_sessions(owner.as_ref()).await?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
            } else {
                println!(
                    "{:<36}  {:<9}  {:<8}  {:<44}  {:<20}  {:<20}",
                    "SESSION", "KIND", "STATE", "OWNER", "CREATED", "EXPIRES"
                );
                for r in &rows {
                    println!(
                        "{:<36}  {:<9}  {:<8}  {:<44}  {:<20}  {:<20}",
                        r.session_id,
                        r.kind.as_str(),
                        r.state,
                        r.owner_key,
                        r.created_at.format(LISTED_TIME).unwrap_or_default(),
                        r.expires_at.format(LISTED_TIME).unwrap_or_default(),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Revoke { id, owner } => {
            let n = match (id, owner) {
                (Some(id), _) => {
                    if !store.revoke(id, RevokeReason::Admin).await? {
                        println!("revoked=0");
                        eprintln!("no live session with id {id} (unknown, or already revoked)");
                        return Ok(ExitCode::FAILURE);
                    }
                    1
                }
                (None, Some(owner)) => store.revoke_owner(&owner, RevokeReason::Admin).await?.len(),
                (None, None) => bail!("give a session id or --owner"),
            };
            println!("revoked={n}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
