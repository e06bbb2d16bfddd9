//! `latchkey user …`: accounts.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use secrecy::SecretString;

use crate::auth::password::{owasp_params, PasswordHasher};
use crate::config::UserCommand;
use crate::rng::OsSecretSource;
use crate::store::{OwnerKey, RevokeReason, EMAIL_UNIQUE};

use super::{open_store, Target, LISTED_TIME};

pub(super) async fn user(target: &Target, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(target, 2).await?;
    match cmd {
        UserCommand::Add { email, .. } => {
            let hash = password_from_stdin().await?;
            match store.insert_user(&email, &hash).await {
                Ok(id) => {
                    println!("{}", OwnerKey::User(id));
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) if e.is_conflict_on(EMAIL_UNIQUE) => {
                    bail!("an account with this email already exists")
                }
                Err(e) => Err(e).context("creating the account"),
            }
        }
        UserCommand::Disable { email } => match store.disable_user(&email).await? {
            Some(n) => {
                println!("disabled {email}; revoked {n} session(s)");
                Ok(ExitCode::SUCCESS)
            }
            None => bail!("no account with this email"),
        },
        UserCommand::Enable { email } => {
            if !store.enable_user(&email).await? {
                bail!("no account with this email");
            }
            println!("enabled {email}");
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Passwd { email, .. } => {
            let hash = password_from_stdin().await?;
            match store
                .set_password(&email, &hash, RevokeReason::Admin)
                .await?
            {
                Some(n) => {
                    println!("password of {email} changed; revoked {n} session(s)");
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!("no account with this email"),
            }
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if json {
                for u in &users {
                    println!("{}", serde_json::to_string(u)?);
                }
            } else {
                println!(
                    "{:<36}  {:<8}  {:>8}  {:<20}  EMAIL",
                    "ID", "STATE", "SESSIONS", "CREATED"
                );
                for u in &users {
                    println!(
                        "{:<36}  {:<8}  {:>8}  {:<20}  {}",
                        u.id,
                        if u.disabled { "disabled" } else { "enabled" },
                        u.live_sessions,
                        u.created_at.format(LISTED_TIME).unwrap_or_default(),
                        u.email
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A password read from standard input (one line, 1 to 1024 bytes), hashed with argon2id.
async fn password_from_stdin() -> anyhow::Result<String> {
    let mut line = String::new();
    if std::io::stdin().is_terminal() {
        eprint!("password: ");
    }
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() || password.len() > 1024 {
        bail!("the password must be 1 to 1024 bytes");
    }
    let hasher = PasswordHasher::new(owasp_params(), 1, Arc::new(OsSecretSource))?;
    Ok(hasher.hash(SecretString::from(password)).await?)
}
