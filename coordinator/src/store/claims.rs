//! Claims: a coordinator's right, held in the database with an expiry, to
//! run one job's split or reduce. Any number of coordinators may look for
//! work at once; one claim per job and duty exists (its primary key), a
//! claim that ran out may be taken over, and every write of the duty is
//! fenced by the claim in its own transaction, so a coordinator that lost
//! its claim (paused, partitioned) cannot write over its successor.

use super::{Error, Result, Store};
use protocol::JobId;
use sqlx::SqliteConnection;

/// How long a claim lasts unless renewed, in milliseconds of the
/// coordinator's clock. The duty renews it as it goes (every batch of
/// units, and on a timer).
pub const CLAIM_TTL_MS: i64 = 60_000;

/// A duty of a job's life that one coordinator at a time performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Duty {
    Split,
    Reduce,
}

impl Duty {
    pub fn as_str(self) -> &'static str {
        match self {
            Duty::Split => "split",
            Duty::Reduce => "reduce",
        }
    }
}

/// A claim this coordinator holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub job: JobId,
    pub duty: Duty,
    /// `NODE/RANDOM`: the claiming coordinator's node and a fresh value
    /// per claim, so a new claim of the same duty, by anyone, is another
    /// owner, and a restarted node can take back what it held.
    owner: String,
}

impl Store {
    /// Claims `duty` of `job` for coordinator `node` if nobody holds it, or
    /// its holder let it run out. `None`: someone holds it.
    pub async fn claim(
        &self,
        job: JobId,
        duty: Duty,
        node: &str,
        now: i64,
    ) -> Result<Option<Claim>> {
        let owner = format!("{node}/{}", uuid::Uuid::new_v4());
        let won: Option<String> = sqlx::query_scalar(
            "INSERT INTO claims (job_id, duty, owner, expires_ms) VALUES (?, ?, ?, ?)
             ON CONFLICT (job_id, duty) DO UPDATE
                 SET owner = excluded.owner, expires_ms = excluded.expires_ms
                 WHERE claims.expires_ms < ?
             RETURNING owner",
        )
        .bind(job.to_string())
        .bind(duty.as_str())
        .bind(&owner)
        .bind(now + CLAIM_TTL_MS)
        .bind(now)
        .fetch_optional(&self.write)
        .await?;
        Ok(won.map(|owner| Claim { job, duty, owner }))
    }

    /// Extends `claim` by [`CLAIM_TTL_MS`] from `now`; [`Error::ClaimLost`]
    /// if another coordinator took it over.
    pub async fn renew(&self, claim: &Claim, now: i64) -> Result<()> {
        let mut conn = self.write.acquire().await?;
        fence(&mut conn, claim, now).await
    }

    /// Gives `claim` up (its duty is done, or failed and recorded).
    pub async fn release_claim(&self, claim: &Claim) -> Result<()> {
        sqlx::query("DELETE FROM claims WHERE job_id = ? AND duty = ? AND owner = ?")
            .bind(claim.job.to_string())
            .bind(claim.duty.as_str())
            .bind(&claim.owner)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Gives up every claim of coordinator `node`: at its start (what a
    /// previous run of it held is not being performed any more) and at a
    /// clean stop, so its duties resume at once instead of after
    /// [`CLAIM_TTL_MS`].
    pub async fn release_claims_of(&self, node: &str) -> Result<u64> {
        let prefix = format!("{node}/");
        let done = sqlx::query("DELETE FROM claims WHERE substr(owner, 1, length(?)) = ?")
            .bind(&prefix)
            .bind(&prefix)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }
}

/// Ends the reduce claims of `jobs` inside the caller's transaction: their
/// accepted outputs changed (backtracking reopened a unit), so a reduce
/// under way reads stale outputs and must not publish them; its fenced
/// write fails with [`Error::ClaimLost`].
pub(super) async fn end_reduces(conn: &mut SqliteConnection, jobs: &[String]) -> Result<()> {
    for job in jobs {
        sqlx::query("DELETE FROM claims WHERE job_id = ? AND duty = 'reduce'")
            .bind(job)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Renews `claim` inside the caller's transaction, or fails it with
/// [`Error::ClaimLost`]: the fence every write of a duty goes through.
pub(super) async fn fence(conn: &mut SqliteConnection, claim: &Claim, now: i64) -> Result<()> {
    let held =
        sqlx::query("UPDATE claims SET expires_ms = ? WHERE job_id = ? AND duty = ? AND owner = ?")
            .bind(now + CLAIM_TTL_MS)
            .bind(claim.job.to_string())
            .bind(claim.duty.as_str())
            .bind(&claim.owner)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    if held == 1 {
        Ok(())
    } else {
        Err(Error::ClaimLost {
            job: claim.job.to_string(),
            duty: claim.duty.as_str(),
        })
    }
}
