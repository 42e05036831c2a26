//! Opening a store for a test, and the few steps every scenario takes:
//! workers in accounts, a job of units, leases and uploads.

use coordinator::store::{
    LeaseRow, NewJob, NewSubmitter, Store, Trust, Upload, UploadAnswer, WorkerRow,
};
use protocol::{BlobHash, JobId, Limits, Outcome, Platform, UploadStatus, Validation, WorkerId};

/// The coordinator clock's start in every scenario.
pub const T0: i64 = 1_800_000_000_000;

pub struct Fixture {
    pub store: Store,
    /// Jobs made by [`Fixture::job`] so far.
    jobs: std::sync::atomic::AtomicI32,
    _dir: tempfile::TempDir,
}

/// A fresh store on the backend the environment names.
pub async fn open(trust: Trust) -> Fixture {
    let backend = std::env::var("WASM_AT_HOME_TEST_DATABASE").unwrap_or_else(|_| "sqlite".into());
    assert_eq!(
        backend, "sqlite",
        "this build's store has the SQLite backend only"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("store.sqlite"), trust)
        .await
        .unwrap();
    Fixture {
        store,
        jobs: 0.into(),
        _dir: dir,
    }
}

/// Spot checks off and a fixed seed: scenarios decide what is checked.
pub fn trust() -> Trust {
    Trust {
        seed: Some(1),
        spot_check: 0.0,
        ..Trust::default()
    }
}

pub fn platform() -> Platform {
    Platform {
        arch: "x86_64".into(),
        os: "linux".into(),
        engine: "test-engine".into(),
        protocol: protocol::PROTOCOL_VERSION,
    }
}

impl Fixture {
    /// The same database opened again under `trust`, as by a coordinator
    /// restarted with other settings: this store is dropped first.
    pub async fn reopen(self, trust: Trust) -> Fixture {
        let Fixture { store, jobs, _dir } = self;
        let path = store.path().to_path_buf();
        drop(store);
        let store = Store::open_sqlite(&path, trust).await.unwrap();
        Fixture { store, jobs, _dir }
    }

    /// A worker with `slots` slots in account `account` (created if new).
    pub async fn worker(&self, name: &str, account: &str, slots: u32) -> WorkerRow {
        self.worker_since(name, account, slots, T0).await
    }

    /// [`Fixture::worker`], registered at `created` (and its account
    /// created then, if new).
    pub async fn worker_since(
        &self,
        name: &str,
        account: &str,
        slots: u32,
        created: i64,
    ) -> WorkerRow {
        if self
            .store
            .account_by_key(&format!("key-{account}"))
            .await
            .unwrap()
            .is_none()
        {
            self.store
                .create_account(account, account, &format!("key-{account}"), created)
                .await
                .unwrap();
        }
        let id = WorkerId::random();
        let token = format!("token-{name}-{id}");
        self.store
            .register_worker(id, name, &token, &platform(), slots, account, created)
            .await
            .unwrap();
        self.store.worker_by_token(&token).await.unwrap().unwrap()
    }

    /// A submitter named `who` (key hash "hash-of-WHO") with `share` and
    /// its own limits (`None`: the coordinator's).
    pub async fn submitter(
        &self,
        who: &str,
        share: u32,
        max_units: Option<u64>,
        max_stored_bytes: Option<u64>,
    ) -> i64 {
        let name = who.parse().unwrap();
        let hash = format!("hash-of-{who}");
        let new = NewSubmitter {
            name: &name,
            key_hash: &hash,
            admin: false,
            share,
            max_units,
            max_stored_bytes,
        };
        let id = self.store.create_submitter(&new, T0).await.unwrap();
        id.expect("a new name")
    }

    /// A running job of `units` units (inputs "0", "1", ...), leased after
    /// the jobs made before it: each has a lower priority than the last,
    /// as scenarios are scripted in the order their jobs are made (jobs of
    /// equal priority would share).
    pub async fn job(&self, units: usize, validation: Validation) -> JobId {
        let n = self.jobs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.job_of(units, validation, None, -n).await
    }

    /// A running job of `units` units of `submitter` at `priority`.
    pub async fn job_of(
        &self,
        units: usize,
        validation: Validation,
        submitter: Option<i64>,
        priority: i32,
    ) -> JobId {
        let module = self.store.put_blob(b"\0asm test module", T0).await.unwrap();
        let job = JobId::random();
        let inputs: Vec<Vec<u8>> = (0..units).map(|i| i.to_string().into_bytes()).collect();
        let new = NewJob {
            id: job,
            name: "conformance".into(),
            module,
            input: None::<BlobHash>,
            limits: Limits {
                fuel: 1_000_000,
                memory_bytes: 1 << 20,
                output_bytes: 1 << 10,
            },
            lease_secs: 60,
            validation,
            submitter,
            priority,
        };
        self.store
            .create_job(&new, Some(&inputs), T0)
            .await
            .unwrap();
        job
    }

    pub async fn lease(&self, worker: &WorkerRow, max: u32, now: i64) -> Vec<LeaseRow> {
        self.store.lease(worker, max, now).await.unwrap()
    }

    /// Uploads `output` with `fuel` for `lease`.
    pub async fn upload(
        &self,
        worker: &WorkerRow,
        lease: &LeaseRow,
        output: &[u8],
        fuel: u64,
        now: i64,
    ) -> UploadAnswer {
        let upload = Upload {
            worker: worker.id,
            replica: lease.replica_id,
            outcome: Outcome::Success {
                output: output.to_vec().into(),
            },
            fuel_used: fuel,
        };
        self.store.record_result(upload, now).await.unwrap()
    }

    /// Uploads the honest answer for `lease`: its input, echoed.
    pub async fn honest(&self, worker: &WorkerRow, lease: &LeaseRow, now: i64) -> UploadStatus {
        let answer = self.upload(worker, lease, &lease.input, 100, now).await;
        answer.expect("an honest upload is admitted").0
    }

    /// Gives `worker` a proven speed of `fuel` per `ms`: a valid result of
    /// a job of its own (quorum 1), leased at `now` and returned `ms` later.
    /// Before any other job's units are wanted, or it leases those.
    pub async fn prove(&self, worker: &WorkerRow, fuel: u64, ms: i64, now: i64) {
        let job = self.job(1, Validation::quorum(1, 2)).await;
        let lease = self.lease(worker, 1, now).await.remove(0);
        let answer = self
            .upload(worker, &lease, &lease.input, fuel, now + ms)
            .await;
        assert_eq!(answer.expect("admitted").0, UploadStatus::Accepted);
        let s = self.store.job_status(job).await.unwrap().unwrap();
        assert_eq!(s.units_accepted, 1, "the proving unit is accepted: {s:?}");
    }

    /// Asserts the dashboard's kept aggregates match a recount.
    pub async fn aggregates_agree(&self, job: JobId) {
        let wrong = self
            .store
            .verify_job_aggregates(&job.to_string())
            .await
            .unwrap();
        assert!(wrong.is_empty(), "aggregates disagree: {wrong:?}");
    }

    pub async fn credit_of(&self, worker: &WorkerRow) -> u64 {
        let all = self.store.workers(1000, T0).await.unwrap();
        all.iter().find(|w| w.id == worker.id).unwrap().credit_fuel
    }

    pub async fn status_of(&self, worker: &WorkerRow) -> protocol::WorkerStatus {
        let all = self.store.workers(1000, T0).await.unwrap();
        all.into_iter().find(|w| w.id == worker.id).unwrap()
    }
}
