//! `latchkey apikey …`: API keys of machine clients.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use base64::Engine as _;
use secrecy::SecretString;

use crate::auth::password::{owasp_params, PasswordHasher};
use crate::auth::AuthConfig;
use crate::config::ApiKeyCommand;
use crate::rng::{random_array, OsSecretSource};
use crate::store::Store;

use super::{open_store, Target};

pub(super) async fn apikey(target: &Target, cmd: ApiKeyCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(target, 2).await?;
    match cmd {
        ApiKeyCommand::Create { owner, name } => {
            let auth = offline_auth(store)?;
            match auth.create_api_key(&owner, name.as_deref()).await {
                Ok((id, key)) => {
                    eprintln!(
                        "api key {id} created for {owner}; store it now, it is not shown again:"
                    );
                    println!("{key}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(crate::auth::AuthError::InvalidCredentials) => {
                    bail!("--owner must be user:<uuid> of an existing user")
                }
                Err(e) => Err(e.into()),
            }
        }
        ApiKeyCommand::List { owner, json } => {
            for k in store.list_api_keys(owner.as_ref()).await? {
                if json {
                    println!("{}", serde_json::to_string(&k)?);
                } else {
                    let state = if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}  {:<7}  {}  {}",
                        k.id,
                        state,
                        k.owner_key,
                        k.name.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ApiKeyCommand::Revoke { id } => match store.revoke_api_key(id).await? {
            Some(n) => {
                println!("revoked key {id}; revoked={n}");
                Ok(ExitCode::SUCCESS)
            }
            None => bail!("no API key with this id"),
        },
    }
}

/// An [`crate::auth::Auth`] for commands that issue credentials without serving.
fn offline_auth(store: Store) -> anyhow::Result<crate::auth::Auth> {
    let rng: Arc<dyn crate::rng::SecretSource> = Arc::new(OsSecretSource);
    let hasher = PasswordHasher::new(owasp_params(), 1, rng.clone())?;
    let jwt_key: [u8; 32] = random_array(rng.as_ref())?;
    let jwt = crate::auth::jwt::JwtKeys::hs256(
        &SecretString::from(base64::engine::general_purpose::STANDARD.encode(jwt_key)),
        300,
    );
    Ok(crate::auth::Auth::new(
        store,
        Arc::new(hasher),
        jwt,
        rng,
        AuthConfig::default(),
    ))
}
