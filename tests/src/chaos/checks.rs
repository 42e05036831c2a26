//! The chaos run's checks, from the database: output, acceptances, credit
//! and every acknowledged result.

use super::*;

/// A replica of the job, as the checks read it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct ReplicaRow {
    pub(super) id: i64,
    pub(super) idx: i64,
    pub(super) worker: String,
    pub(super) state: String,
    pub(super) output: Option<Vec<u8>>,
    pub(super) fuel: Option<i64>,
    pub(super) leased_ms: i64,
    pub(super) deadline_ms: i64,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn check_database(
    data_dir: &Path,
    job: JobId,
    plan: &Plan,
    reference: &Reference,
    workers: &[Worker],
    answered: &[Answered],
    restarts: &[Restart],
    worker_restarts: &[WorkerRestart],
) -> anyhow::Result<serde_json::Value> {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let db = data_dir.join("coordinator.sqlite");
    let store =
        coordinator::store::Store::open_sqlite(&db, coordinator::trust::Trust::default()).await?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(SqliteConnectOptions::new().filename(&db).read_only(true))
        .await?;
    let job_id = job.to_string();

    // The job: done once, every unit accepted, aggregates as recounted.
    let status = store
        .job_status(job)
        .await?
        .ok_or_else(|| anyhow!("no job"))?;
    ensure!(
        (
            status.state,
            status.units_total,
            status.units_accepted,
            status.units_failed
        ) == (JobState::Done, plan.units, plan.units, 0),
        "job counts: {status:?}"
    );
    ensure!(
        status.output_version == 1,
        "the job's output was produced {} times",
        status.output_version
    );
    let wrong = store.verify_job_aggregates(&job_id).await?;
    ensure!(
        wrong.is_empty(),
        "the job's kept aggregates differ from a recount: {wrong:?}"
    );

    // Every unit accepted exactly once, by a valid replica of its own
    // whose output and fuel are the clean run's.
    let units: Vec<UnitRow> = sqlx::query_as(
        "SELECT u.idx, u.id, u.state, u.accepted_replica, r.unit_id, r.state
             FROM units u LEFT JOIN replicas r ON r.id = u.accepted_replica
             WHERE u.job_id = ? ORDER BY u.idx",
    )
    .bind(&job_id)
    .fetch_all(&pool)
    .await?;
    ensure!(units.len() as u64 == plan.units, "{} units", units.len());
    for (idx, id, state, accepted, of_unit, replica_state) in &units {
        ensure!(
            state == "accepted"
                && accepted.is_some()
                && *of_unit == Some(*id)
                && replica_state.as_deref() == Some("valid"),
            "unit {idx}: {state}, accepted replica {accepted:?} of unit {of_unit:?} in state {replica_state:?}"
        );
    }
    let accepted_outputs = store.accepted_outputs(job).await?;
    ensure!(
        accepted_outputs == reference.outputs,
        "the accepted outputs differ from the clean run's"
    );

    // Every replica, for the remaining checks.
    let replicas: Vec<ReplicaRow> =
        sqlx::query_as(
            "SELECT r.id, u.idx, r.worker_id AS worker, r.state, r.output, r.fuel_used AS fuel, r.leased_ms, r.deadline_ms
             FROM replicas r JOIN units u ON u.id = r.unit_id WHERE u.job_id = ?",
        )
        .bind(&job_id)
        .fetch_all(&pool)
        .await?;
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut valid_per_unit: HashMap<i64, u32> = HashMap::new();
    let mut by_worker: HashMap<String, (u64, u64, u64)> = HashMap::new(); // valid, invalid, fuel
    let mut by_id: HashMap<i64, (String, String)> = HashMap::new();
    for ReplicaRow {
        id,
        idx,
        worker,
        state,
        output,
        fuel,
        ..
    } in &replicas
    {
        *states.entry(state.clone()).or_default() += 1;
        by_id.insert(*id, (worker.clone(), state.clone()));
        let tally = by_worker.entry(worker.clone()).or_default();
        match state.as_str() {
            "valid" => {
                let i = *idx as usize;
                ensure!(
                    output.as_deref() == Some(&reference.outputs[i][..])
                        && *fuel == Some(reference.fuel[i] as i64),
                    "replica {id} of unit {idx} is valid with output {output:?} and fuel {fuel:?}; the clean run gives {:?} and {}",
                    reference.outputs[i],
                    reference.fuel[i]
                );
                *valid_per_unit.entry(*idx).or_default() += 1;
                tally.0 += 1;
                tally.2 += reference.fuel[i];
            }
            "invalid" => tally.1 += 1,
            _ => {}
        }
    }
    for idx in 0..plan.units as i64 {
        let n = valid_per_unit.get(&idx).copied().unwrap_or(0);
        // Adaptive: a unit a trusted worker took alone may stand on one.
        let quorum = if plan.adaptive { 1 } else { 2 };
        ensure!(
            n >= quorum,
            "unit {idx} has {n} valid replicas, below quorum {quorum}"
        );
    }

    // Counters and credit of every worker and account.
    let now = wall_ms();
    let records = store.workers(1000, now).await?;
    let mut account_fuel: HashMap<String, u64> = HashMap::new();
    for record in &records {
        let (valid, invalid, fuel) = by_worker
            .get(&record.id.to_string())
            .copied()
            .unwrap_or_default();
        ensure!(
            (record.valid, record.invalid) == (valid, invalid),
            "worker {}: counters valid {} invalid {}, its replicas say {valid} and {invalid}",
            record.name,
            record.valid,
            record.invalid
        );
        ensure!(
            record.credit_fuel == fuel,
            "worker {}: credit {} fuel, its valid replicas' fuel is {fuel}",
            record.name,
            record.credit_fuel
        );
        if let Some(account) = &record.account_id {
            *account_fuel.entry(account.clone()).or_default() += fuel;
        }
    }
    for account in store.accounts(1000, now).await? {
        let fuel = account_fuel.get(&account.id).copied().unwrap_or(0);
        ensure!(
            account.credit_fuel == fuel,
            "account {}: credit {} fuel, its workers' valid replicas' fuel is {fuel}",
            account.id,
            account.credit_fuel
        );
    }

    // No acknowledged result lost.
    let mut acknowledged = 0;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut removed_total = 0;
    for (w, seen) in workers.iter().zip(answered) {
        let identity = worker::state::StateDir::open(&w.state_dir)?
            .identity()?
            .ok_or_else(|| anyhow!("{} has no identity", w.name))?;
        let me = identity.worker_id.to_string();
        let log = w.log.lock().unwrap();
        let left = worker::state::StateDir::open(&w.state_dir)?.pending_results()?;
        ensure!(
            left.is_empty(),
            "{} stopped with {} results not uploaded, the coordinator being up",
            w.name,
            left.len()
        );
        ensure!(
            seen.saved.is_superset(&seen.removed),
            "{}: results removed that were never written",
            w.name
        );
        removed_total += seen.removed.len();
        for replica in &seen.removed {
            if let Some(code) = log.refused.get(replica) {
                *refused.entry(code.clone()).or_default() += 1;
                continue;
            }
            acknowledged += 1;
            let (owner, state) = by_id.get(replica).cloned().ok_or_else(|| {
                anyhow!(
                    "{}: the coordinator acknowledged replica {replica}, which is not in its database",
                    w.name
                )
            })?;
            ensure!(
                owner == me
                    && ["returned", "valid", "invalid", "errored"].contains(&state.as_str()),
                "{}: the coordinator acknowledged replica {replica}, which is now {state} (of worker {owner}, this one is {me})",
                w.name
            );
        }
    }
    ensure!(acknowledged > 0, "no acknowledgement seen at all");

    // Figures from the leases' times: how long until each worker was given
    // work after a coordinator restart, and after its own restart.
    let worker_ids: Vec<String> = workers
        .iter()
        .map(|w| {
            worker::state::StateDir::open(&w.state_dir)
                .ok()
                .and_then(|s| s.identity().ok().flatten())
                .map(|i| i.worker_id.to_string())
                .unwrap_or_default()
        })
        .collect();
    let first_lease_after = |worker: &str, after: i64| {
        replicas
            .iter()
            .filter(|r| r.worker == worker && r.leased_ms >= after)
            .map(|r| r.leased_ms)
            .min()
            .map(|t| (t - after) as f64)
    };
    let per_restart: Vec<Vec<Option<f64>>> = restarts
        .iter()
        .map(|r| {
            worker_ids
                .iter()
                .map(|w| first_lease_after(w, r.ready_wall_ms))
                .collect()
        })
        .collect();
    let after_coordinator: Vec<f64> = restarts
        .iter()
        .zip(&per_restart)
        .filter(|(r, _)| r.mid_job(plan))
        .flat_map(|(_, gaps)| gaps.iter().flatten().copied())
        .collect();
    let restart_details: Vec<serde_json::Value> = restarts
        .iter()
        .zip(&per_restart)
        .map(|(r, gaps)| {
            serde_json::json!({
                "at_accepted": r.at_accepted,
                "kill_to_ready_ms": ms(r.ready),
                "kept_down": r.long,
                "ready_to_next_accepted_ms": r.resumed.map(ms),
                "first_lease_per_worker_ms": gaps,
            })
        })
        .collect();
    let after_worker: Vec<f64> = worker_restarts
        .iter()
        .filter(|r| !r.coordinator_away)
        .filter_map(|r| first_lease_after(&worker_ids[r.worker], r.spawned_wall_ms))
        .collect();
    // The leases a killed worker's process held and nobody answered
    // (timed out later): they count against the restarted worker's room
    // until their deadlines.
    let refused_ids: HashSet<i64> = workers
        .iter()
        .flat_map(|w| {
            let log = w.log.lock().unwrap();
            log.refused.keys().copied().collect::<Vec<_>>()
        })
        .collect();
    let mut orphaned = Vec::new();
    let mut blocked = Vec::new();
    for (n, r) in worker_restarts.iter().enumerate() {
        let since = worker_restarts[..n]
            .iter()
            .filter(|e| e.worker == r.worker)
            .map(|e| e.spawned_wall_ms)
            .max()
            .unwrap_or(0);
        let held: Vec<&ReplicaRow> = replicas
            .iter()
            .filter(|x| {
                x.worker == worker_ids[r.worker]
                    && x.state == "timed_out"
                    && !refused_ids.contains(&x.id)
                    && x.leased_ms >= since
                    && x.leased_ms <= r.killed_wall_ms
            })
            .collect();
        orphaned.push(held.len() as f64);
        if let Some(last) = held.iter().map(|x| x.deadline_ms).max() {
            blocked.push((last - r.spawned_wall_ms).max(0) as f64);
        }
    }
    // A restarted worker may get a lease at once, if its old process held
    // fewer than it may hold; a full queue (two leases per slot) waits
    // until its old leases are timed out.
    let full = 2 * plan.slots;
    let full_after_worker: Vec<f64> = worker_restarts
        .iter()
        .filter(|r| !r.coordinator_away)
        .filter_map(|r| {
            let mut times: Vec<i64> = replicas
                .iter()
                .filter(|x| x.worker == worker_ids[r.worker] && x.leased_ms >= r.spawned_wall_ms)
                .map(|x| x.leased_ms)
                .collect();
            times.sort_unstable();
            times.get(full - 1).map(|t| (t - r.spawned_wall_ms) as f64)
        })
        .collect();
    // Why leases ran out: the result came back after the deadline (the
    // coordinator was away) and was refused; lost with a killed worker
    // (its process held them); or granted in a transaction that committed
    // less than a second before the coordinator was killed and never
    // started by the worker: the answer carrying it never reached the
    // worker, which is charged a timeout for a lease it never had.
    let lease_ms = plan.lease_secs as i64 * 1000;
    let dropped: HashSet<i64> = workers
        .iter()
        .flat_map(|w| w.log.lock().unwrap().dropped.clone())
        .collect();
    let started: HashSet<i64> = workers
        .iter()
        .flat_map(|w| w.log.lock().unwrap().started.clone())
        .collect();
    let came_back_late: HashSet<i64> = workers
        .iter()
        .flat_map(|w| {
            w.log
                .lock()
                .unwrap()
                .refused
                .keys()
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut timeouts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in replicas.iter().filter(|r| r.state == "timed_out") {
        let owner = worker_ids.iter().position(|w| *w == r.worker);
        let with_worker = worker_restarts.iter().any(|k| {
            Some(k.worker) == owner
                && k.killed_wall_ms >= r.leased_ms
                && k.killed_wall_ms < r.leased_ms + lease_ms
        });
        let with_coordinator = restarts
            .iter()
            .any(|k| k.killed_wall_ms >= r.leased_ms && k.killed_wall_ms < r.leased_ms + 1000);
        let cause = if came_back_late.contains(&r.id) {
            "result_refused_as_too_late"
        } else if dropped.contains(&r.id) {
            "dropped_unstarted_by_the_worker"
        } else if with_worker {
            "worker_killed_holding_it"
        } else if with_coordinator && !started.contains(&r.id) {
            "answer_lost_with_the_coordinator"
        } else {
            "other"
        };
        *timeouts.entry(cause).or_default() += 1;
    }
    let charged: u64 = records.iter().map(|w| w.timeouts).sum();

    Ok(serde_json::json!({
        "timeouts": timeouts,
        "timeouts_charged_to_workers": charged,
        "replicas": replicas.len(),
        "replicas_per_unit": ((replicas.len() as f64 / plan.units as f64) * 1000.0).round() / 1000.0,
        "valid_per_unit": ((valid_per_unit.values().map(|n| u64::from(*n)).sum::<u64>() as f64 / plan.units as f64) * 1000.0).round() / 1000.0,
        "replica_states": states,
        "results_answered": removed_total,
        "acknowledged_checked": acknowledged,
        "refused": refused,
        "first_lease_after_coordinator_ready_ms": spread(after_coordinator),
        "coordinator_restarts": restart_details,
        "first_lease_after_worker_restart_ms": spread(after_worker),
        "full_leases_after_worker_restart_ms": spread(full_after_worker),
        "orphaned_leases_per_worker_kill": spread(orphaned),
        "orphaned_leases_count_until_ms_after_worker_restart": spread(blocked),
    }))
}
