//! Invite tokens (table `invites`): created by the operator, spent one use
//! per registration by a conditional update, so that no two registrations
//! share a token's last use, whoever writes.

use super::{Result, Store};

impl Store {
    /// Keeps a new invite (its token's sha256) good for `uses`
    /// registrations.
    pub async fn create_invite(&self, token_hash: &str, uses: u32, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO invites (hash, uses_left, created_ms) VALUES (?, ?, ?)")
            .bind(token_hash)
            .bind(i64::from(uses))
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Spends one use of the invite with this hash: `false` when there is
    /// no such invite or it has none left (and nothing changed). The
    /// condition is in the `UPDATE`, not in a read before it, so two
    /// registrations racing for the last use cannot both get it.
    pub async fn spend_invite(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE invites SET uses_left = uses_left - 1 WHERE hash = ? AND uses_left > 0",
        )
        .bind(token_hash)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back a use spent by a registration that then failed.
    pub async fn refund_invite(&self, token_hash: &str) -> Result<()> {
        sqlx::query("UPDATE invites SET uses_left = uses_left + 1 WHERE hash = ?")
            .bind(token_hash)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The uses an invite has left (`None`: no such invite).
    pub async fn invite_uses_left(&self, token_hash: &str) -> Result<Option<u64>> {
        let n: Option<i64> = sqlx::query_scalar("SELECT uses_left FROM invites WHERE hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(n.map(|n| n.max(0) as u64))
    }
}
