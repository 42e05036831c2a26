//! Wire types shared by the coordinator and the worker, and content hashes.
//!
//! Everything that crosses the network between a coordinator and a worker (or
//! a submitting client) is defined here, so both sides agree by construction.
//! The crate depends on serde, sha2, base64 and uuid only: nothing heavy.
//!
//! Binary payloads travel as base64 strings inside JSON ([`Bytes`]); ids are
//! validated newtypes ([`JobId`], [`WorkerId`], [`UnitId`], [`ReplicaId`]);
//! blobs are named by the sha256 of their bytes ([`BlobHash`]).

mod bytes;
pub mod frame;
mod hash;
mod ids;
#[cfg(feature = "openapi")]
mod openapi;

pub use bytes::Bytes;
pub use hash::{BlobHash, ParseHashError};
pub use ids::{JobId, ParseIdError, ReplicaId, UnitId, WorkerId};

use serde::{Deserialize, Serialize};

/// The version of the coordinator–worker protocol. It changes whenever the
/// meaning of a field changes, including how fuel is counted.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every HTTP route lives below this prefix.
pub const API_PREFIX: &str = "/api/v1";

/// The HTTP header that carries a worker's token or a submitter's API key.
pub const AUTHORIZATION: &str = "authorization";

/// What a worker tells the coordinator about where it runs. Replicas of one
/// unit are only compared between workers of one `arch` (see ARCHITECTURE.md,
/// "Determinism"), and a worker whose `engine` differs from the coordinator's
/// counts fuel differently, so it gets no work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Platform {
    /// CPU architecture, as `std::env::consts::ARCH` names it.
    pub arch: String,
    /// Operating system, as `std::env::consts::OS` names it.
    pub os: String,
    /// The sandbox's engine and settings, e.g. `wasmtime-48.0.8/fuel-v1`.
    pub engine: String,
    /// [`PROTOCOL_VERSION`] of the worker.
    pub protocol: u32,
}

/// `POST /api/v1/workers`: a new worker introduces itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// A human name for the dashboard, e.g. the host name.
    #[serde(default)]
    pub name: String,
    pub platform: Platform,
    /// How many units this worker runs at once.
    pub slots: u32,
    /// The key of the volunteer account this worker joins; without it a new
    /// account is created and its key returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<String>,
    /// An invite token, for a coordinator that registers only invited
    /// workers (each registration spends one of its uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// The answer to [`RegisterRequest`]. The token is shown once; the
/// coordinator keeps only its hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    pub worker_id: WorkerId,
    pub token: String,
    /// The volunteer account the worker belongs to.
    pub account_id: String,
    /// The new account's key (shown once): give it to the other machines
    /// of the same volunteer (`worker run --account KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<String>,
}

/// `POST /api/v1/work`: a worker asks for up to `max_units` leases.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkRequest {
    pub max_units: u32,
    pub platform: Platform,
    /// Every replica the worker holds: leased and queued, running, or with
    /// a result not yet answered. The coordinator gives the worker's other
    /// leases back at once (lost in a crash, or held by the process before
    /// a restart), so their units go to other workers now instead of at
    /// their deadline. Absent: nothing is reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Vec<ReplicaId>>,
}

/// The answer to [`WorkRequest`]: zero or more leases. With none, the worker
/// should ask again after `retry_after_ms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkResponse {
    pub leases: Vec<Lease>,
    pub retry_after_ms: u64,
    /// The coordinator's clock when it answered: a worker measures what is
    /// left of each lease as `deadline_ms - now_ms`, whatever its own clock
    /// says.
    #[serde(default)]
    pub now_ms: i64,
}

/// One replica of one unit, leased to one worker until `deadline_ms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    pub replica_id: ReplicaId,
    pub unit_id: UnitId,
    pub job_id: JobId,
    /// The module to run, fetched from `GET /api/v1/blobs/{hash}` and checked
    /// against this hash before use.
    pub module: BlobHash,
    /// The unit's input, given to the module's `run` mode on stdin.
    pub input: Bytes,
    pub limits: Limits,
    /// Milliseconds since the Unix epoch after which the lease is void
    /// (heartbeats that report progress push it back).
    pub deadline_ms: i64,
    /// The fuel a unit of this job has taken so far on average: the
    /// denominator of a running unit's progress. None until a unit of the
    /// job has been accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_estimate: Option<u64>,
}

/// The hard limits of one sandboxed run. Every replica of a unit runs under
/// the same limits, so a unit that exceeds them fails the same way everywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Limits {
    /// Fuel: the deterministic instruction budget.
    pub fuel: u64,
    /// The most linear memory the module may grow to, in bytes.
    pub memory_bytes: u64,
    /// The most the module may write to stdout, in bytes.
    pub output_bytes: u64,
}

/// Why a sandboxed run produced no output. Every kind but `WorkerError` is
/// deterministic: replicas that agree on it (and on the fuel used) agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The module trapped (unreachable, out-of-bounds access, stack overflow...).
    Trap,
    /// The module used all its fuel.
    OutOfFuel,
    /// The module tried to grow its memory past the limit.
    OutOfMemory,
    /// The module wrote more to stdout than the limit allows.
    OutputTooLarge,
    /// The module exited with a non-zero status.
    ExitCode,
    /// The worker could not run the unit at all (download failed, bad
    /// module...). Not a property of the unit: never compared.
    WorkerError,
}

impl FailureKind {
    /// Whether every honest worker hits this failure the same way.
    pub fn is_deterministic(self) -> bool {
        !matches!(self, FailureKind::WorkerError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::OutOfFuel => "out_of_fuel",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::OutputTooLarge => "output_too_large",
            FailureKind::ExitCode => "exit_code",
            FailureKind::WorkerError => "worker_error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            FailureKind::Trap,
            FailureKind::OutOfFuel,
            FailureKind::OutOfMemory,
            FailureKind::OutputTooLarge,
            FailureKind::ExitCode,
            FailureKind::WorkerError,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What came of running one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The module exited 0; `output` is everything it wrote to stdout.
    Success { output: Bytes },
    /// The module failed; `message` is for people, `kind` is compared.
    Failure { kind: FailureKind, message: String },
}

/// `PUT /api/v1/replicas/{id}/result`: a worker reports one replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultUpload {
    pub outcome: Outcome,
    /// Fuel the run consumed: part of what replicas must agree on.
    pub fuel_used: u64,
}

/// The answer to a [`ResultUpload`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    /// The result was stored now.
    Accepted,
    /// The same result had been stored before; nothing changed.
    AlreadyReceived,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadResponse {
    pub status: UploadStatus,
}

/// `POST /api/v1/results`: several results in one request (at most
/// [`MAX_RESULTS_PER_REQUEST`]), each answered on its own, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultBatch {
    pub results: Vec<ReplicaResult>,
}

/// The most results one [`ResultBatch`] may carry.
pub const MAX_RESULTS_PER_REQUEST: usize = 256;

/// The most result bytes (outputs, messages) a worker puts in one
/// [`ResultBatch`]; a larger result goes alone. The coordinator sizes a
/// batch's body limit by it.
pub const BATCH_RESULT_BYTES: usize = 4 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaResult {
    pub replica_id: ReplicaId,
    pub result: ResultUpload,
}

/// `POST /api/v1/heartbeat`: what a worker is running, sent every
/// [`HEARTBEAT_INTERVAL_MS`] or so while it runs anything.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    /// The units running now, with the fuel each has used so far.
    pub running: Vec<UnitProgress>,
    /// Whether the volunteer (or the machine's load) has paused the worker.
    #[serde(default)]
    pub paused: bool,
}

/// How far one running unit has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitProgress {
    pub replica_id: ReplicaId,
    pub fuel_used: u64,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// The coordinator's clock (see [`WorkResponse::now_ms`]).
    pub now_ms: i64,
    /// The deadline of every reported replica this worker still holds:
    /// later than before for each that made progress since the last beat.
    pub leases: Vec<LeaseDeadline>,
    /// Reported replicas the worker no longer holds (the lease ran out, was
    /// given back, or the job ended): computing them is in vain.
    pub gone: Vec<ReplicaId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseDeadline {
    pub replica_id: ReplicaId,
    pub deadline_ms: i64,
}

/// How often a worker that runs units sends a heartbeat.
pub const HEARTBEAT_INTERVAL_MS: u64 = 15_000;

/// A lease extended by heartbeats ends at the latest this many lease
/// periods after it was granted: progress buys time, not a unit forever.
pub const MAX_LEASE_PERIODS: i64 = 8;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultBatchResponse {
    pub results: Vec<ReplicaAnswer>,
}

/// The answer for one result of a batch: a status, or the error the
/// single-result endpoint would have answered (same codes).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaAnswer {
    pub replica_id: ReplicaId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UploadStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The validation policy of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    /// How many replicas must agree before a unit's output is accepted.
    pub quorum: u32,
    /// How many replicas a unit may use in all before it fails.
    pub max_replicas: u32,
    /// Adaptive replication: a unit leased to a trusted worker may be
    /// accepted on its result alone, except for the secret spot checks.
    #[serde(default)]
    pub adaptive: bool,
    /// Replicas agree when the module's `compare` mode says their outputs
    /// are equivalent, instead of when the bytes are equal.
    #[serde(default)]
    pub compare: bool,
    /// Opts out of the coordinator's account-age rule
    /// (`trust.min_account_age_secs`): a unit may then be accepted on the
    /// votes of young accounts alone. False (the default): a quorum of
    /// agreeing replicas settles a unit only if one of them came from an
    /// account at least that old when it returned it; otherwise the unit
    /// waits for one more replica from such an account.
    #[serde(default)]
    pub young_accounts: bool,
}

impl Validation {
    /// Plain voting: `quorum` agreeing replicas, at most `max_replicas`.
    pub fn quorum(quorum: u32, max_replicas: u32) -> Validation {
        Validation {
            quorum,
            max_replicas,
            adaptive: false,
            compare: false,
            young_accounts: false,
        }
    }
}

/// Credit is fuel: one credit is 10^9 units of fuel, roughly a second of
/// one core of a current machine.
pub const FUEL_PER_CREDIT: f64 = 1e9;

/// `POST /api/v1/jobs`: what a scientist submits, once the module (and the
/// job input, if any) are stored as blobs with `POST /api/v1/blobs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSpec {
    #[serde(default)]
    pub name: String,
    pub module: BlobHash,
    /// The job input, handed to the module's `split` mode.
    #[serde(default)]
    pub input: Option<BlobHash>,
    /// Unit inputs given directly, instead of `input` and `split`.
    #[serde(default)]
    pub units: Option<Vec<Bytes>>,
    pub limits: Limits,
    /// How long a worker may hold a replica before it is given to another.
    pub lease_secs: u64,
    pub validation: Validation,
    /// Among its submitter's jobs, higher priorities are leased first;
    /// equal priorities share. Other submitters' jobs are not affected:
    /// submitters share by their configured shares.
    #[serde(default)]
    pub priority: i32,
}

/// `POST /api/v1/blobs` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlobRef {
    pub hash: BlobHash,
    pub size: u64,
}

/// `POST /api/v1/jobs` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCreated {
    pub job_id: JobId,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Splitting,
    Running,
    Reducing,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Splitting => "splitting",
            JobState::Running => "running",
            JobState::Reducing => "reducing",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            JobState::Splitting,
            JobState::Running,
            JobState::Reducing,
            JobState::Done,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether the job will never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

/// `GET /api/v1/jobs/{id}`: a job's progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    pub id: JobId,
    pub name: String,
    pub state: JobState,
    pub module: BlobHash,
    /// The job's units; while it is splitting, those its split wrote so far.
    pub units_total: u64,
    pub units_accepted: u64,
    pub units_failed: u64,
    /// Replicas leased and not yet returned.
    pub replicas_in_progress: u64,
    pub validation: Validation,
    pub limits: Limits,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    /// The job output's blob, once the job is done.
    pub output: Option<BlobHash>,
    /// Why the job failed, or why units failed (an example).
    pub error: Option<String>,
    /// How often the output was produced: above 1 when backtracking
    /// reopened units of a finished job and it was reduced again.
    #[serde(default)]
    pub output_version: u64,
    /// Open units whose agreeing replicas all came from young accounts
    /// (the account-age rule, `trust.min_account_age_secs`), waiting for a
    /// worker of an account old enough to take one more replica. They
    /// wait while no such worker is active, instead of failing as starved:
    /// accounts age.
    #[serde(default)]
    pub units_waiting_for_seasoned: u64,
    /// Who submitted it (the name of its key).
    #[serde(default)]
    pub submitter: Option<String>,
    /// Its priority among its submitter's jobs.
    #[serde(default)]
    pub priority: i32,
    /// Units accepted per second lately, while the job runs (see
    /// `time_left_ms`).
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// The estimated milliseconds until every unit is settled, while the
    /// job runs: the units not yet settled over the rate at which units
    /// were accepted in the last two minutes (or since the job's first
    /// acceptance, if later). None while there is no such rate. The
    /// dashboard shows the same estimate.
    #[serde(default)]
    pub time_left_ms: Option<i64>,
}

/// `GET /api/v1/jobs/{id}/units?state=failed`: one unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitStatus {
    pub id: UnitId,
    pub index: u64,
    pub state: String,
    /// Replicas issued for the unit, all of them.
    pub replicas: u32,
    pub error: Option<String>,
    /// Of a failed or open unit: its replicas, the first 16
    /// ([`UNIT_REPLICAS_SHOWN`]) by id, each with what came of it and how
    /// it failed. Empty for accepted units.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_detail: Vec<ReplicaDetail>,
}

/// The most replicas of one unit that [`UnitStatus::replica_detail`] lists.
pub const UNIT_REPLICAS_SHOWN: usize = 16;

/// The most characters of a replica's failure message that
/// [`ReplicaDetail::message`] carries (an exit status with the tail of
/// stderr that the sandbox keeps fits).
pub const FAILURE_MESSAGE_SHOWN: usize = 500;

/// One replica of a unit, and how it failed if it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaDetail {
    pub id: ReplicaId,
    pub worker_id: WorkerId,
    /// `in_progress`, `returned` (awaiting quorum), `valid`, `invalid`,
    /// `errored`, `timed_out`, `discarded` or `released`.
    pub state: String,
    /// How the run failed; None for an output (and for a lease that
    /// ended without an answer).
    #[serde(default)]
    pub failure_kind: Option<FailureKind>,
    /// The failure's message as the worker's sandbox wrote it (the trap,
    /// the exit status and the end of stderr, the limit), at most
    /// [`FAILURE_MESSAGE_SHOWN`] characters.
    #[serde(default)]
    pub message: Option<String>,
    /// The exit status of a module that exited non-zero.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// The job's limit that the run hit, with its value.
    #[serde(default)]
    pub limit: Option<LimitHit>,
    #[serde(default)]
    pub fuel_used: Option<u64>,
    #[serde(default)]
    pub returned_ms: Option<i64>,
}

/// A job limit a run hit (out of fuel, of memory, of output room).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitHit {
    /// `fuel`, `memory_bytes` or `output_bytes`, as in [`Limits`].
    pub limit: LimitKind,
    /// The job's value of it.
    pub value: u64,
}

/// One of a job's [`Limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Fuel,
    MemoryBytes,
    OutputBytes,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Fuel => "fuel",
            LimitKind::MemoryBytes => "memory_bytes",
            LimitKind::OutputBytes => "output_bytes",
        }
    }
}

/// `GET /api/v1/jobs/{id}/output?partial=true`: the response header that
/// says how many units' outputs the stream holds (its frames).
pub const PARTIAL_UNITS_HEADER: &str = "units-streamed";

/// ... and the header with the job's number of units.
pub const PARTIAL_TOTAL_HEADER: &str = "units-total";

/// `GET /api/v1/workers`: one worker and its record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub name: String,
    pub arch: String,
    pub os: String,
    pub slots: u32,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// Replicas judged valid (they agreed with the accepted result).
    pub valid: u64,
    /// Replicas judged invalid (they disagreed with it).
    pub invalid: u64,
    /// Replicas the worker could not run.
    pub errors: u64,
    /// Leases that ran out.
    pub timeouts: u64,
    pub consecutive_valid: u64,
    /// Whether it may get units alone (adaptive replication).
    #[serde(default)]
    pub trusted: bool,
    /// The agreed fuel of every valid replica.
    pub credit_fuel: u64,
    /// `credit_fuel` in credits ([`FUEL_PER_CREDIT`]).
    pub credit: f64,
    /// Credits per day, averaged with a half-life of 7 days.
    #[serde(default)]
    pub recent_credit: f64,
    /// Replicas leased now.
    pub running: u64,
    #[serde(default)]
    pub account_id: Option<String>,
    /// Leases it may still take today (a worker with errors gets fewer).
    #[serde(default)]
    pub quota_left: u64,
    /// Whether its last heartbeat said it was paused.
    #[serde(default)]
    pub paused: bool,
    /// Whether the coordinator's operator banned it (`coordinator workers
    /// ban`): its token is refused and its pending results were discarded.
    #[serde(default)]
    pub banned: bool,
}

/// `GET /api/v1/accounts`: a volunteer account, for the leaderboard.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountStatus {
    pub id: String,
    pub name: String,
    pub workers: u64,
    pub credit_fuel: u64,
    pub credit: f64,
    /// Credits per day, averaged with a half-life of 7 days.
    pub recent_credit: f64,
}

/// The body of every error answer: a stable code and a sentence for people.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}
