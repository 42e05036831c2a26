//! Registration: the worker's identity with its coordinator. It is read
//! from the state directory, or on a first start obtained by registering
//! (retried with backoff while the coordinator is away) and saved there.

use crate::Config;
use crate::backoff::{self, Backoff};
use crate::client::{Client, ClientError};
use crate::state::{Identity, StateDir};
use anyhow::{Context as _, bail};
use tokio::sync::watch;

/// This worker's identity with `config.coordinator`: the one in the state
/// directory, or a new one. A state directory registered with another
/// coordinator is an error.
pub(crate) async fn identity(
    config: &Config,
    state: &StateDir,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Identity> {
    match state.identity()? {
        Some(id) if id.coordinator == config.coordinator => Ok(id),
        Some(id) => bail!(
            "the state directory {} belongs to a worker of {}, not {}: use another --state-dir",
            config.state_dir.display(),
            id.coordinator,
            config.coordinator
        ),
        None => register(config, state, stop).await,
    }
}

/// Registers until the coordinator answers (or the worker is stopped), and
/// saves the identity.
async fn register(
    config: &Config,
    state: &StateDir,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Identity> {
    let client = Client::for_config(config)?;
    let mut backoff = Backoff::new(config.max_backoff);
    let registered = loop {
        match client
            .register_invited(
                &config.name,
                config.slots as u32,
                config.account.as_deref(),
                config.invite.as_deref(),
            )
            .await
        {
            Ok(r) => break r,
            Err(ClientError::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot register yet; retrying");
                if backoff::wait(backoff.step(), stop).await {
                    bail!("stopped before registering");
                }
            }
            Err(e) => return Err(e).context("registration refused"),
        }
    };
    let id = Identity {
        coordinator: config.coordinator.clone(),
        worker_id: registered.worker_id,
        token: registered.token,
        account_id: Some(registered.account_id),
        account_key: registered.account_key,
    };
    state.save_identity(&id)?;
    tracing::info!(worker = %id.worker_id, coordinator = %config.coordinator, account = ?id.account_id, "registered");
    if let Some(key) = &id.account_key {
        tracing::info!(
            "a new volunteer account was created; to add your other machines to it, run them with --account {key} (also kept in {})",
            config.state_dir.join("worker.json").display()
        );
    }
    Ok(id)
}
