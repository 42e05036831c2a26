//! Heartbeats: the task that tells the coordinator, while units run, how
//! far each has come (which extends its lease) and whether this worker is
//! paused, and abandons the units the coordinator answers it no longer
//! wants.

use crate::client::Client;
use crate::governor::{Governor, RunningUnit};
use protocol::{Heartbeat, HeartbeatResponse, UnitProgress};
use std::sync::Arc;
use std::time::Duration;

/// Sends a heartbeat every `every` while units run (and at once on a pause
/// or resume). Runs until aborted: beats go on while a stopping worker
/// drains, since its units' leases still need them.
pub(crate) async fn run(client: Client, governor: Arc<Governor>, every: Duration) {
    let mut paused = governor.watch_paused();
    let mut told_paused = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = paused.changed() => {}
        }
        let running = governor.running();
        let is_paused = governor.paused().any();
        if running.is_empty() && is_paused == told_paused {
            continue;
        }
        match client.heartbeat(&beat(&running, is_paused)).await {
            Ok(answer) => {
                told_paused = is_paused;
                apply(&governor, answer);
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat not delivered"),
        }
    }
}

fn beat(running: &[RunningUnit], paused: bool) -> Heartbeat {
    Heartbeat {
        running: running
            .iter()
            .map(|u| UnitProgress {
                replica_id: u.replica_id,
                fuel_used: u.fuel_used,
            })
            .collect(),
        paused,
    }
}

/// The coordinator's answer: new deadlines of the leases it extended, and
/// the units it no longer wants (lease ran out, job cancelled).
fn apply(governor: &Governor, answer: HeartbeatResponse) {
    for lease in answer.leases {
        governor.set_deadline(lease.replica_id, lease.deadline_ms);
    }
    for replica in answer.gone {
        tracing::info!(%replica, "the coordinator no longer wants this unit; abandoning it");
        governor.abandon(replica);
    }
}
