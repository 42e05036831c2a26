//! Blobs: content-addressed bytes (modules, job inputs, job outputs), kept
//! in the database so that a result and its bytes commit together and
//! every coordinator sharing the database sees the same blobs.

use super::{Result, Store};
use protocol::BlobHash;
use sqlx::SqliteConnection;

/// Stores `bytes` under their hash, inside the caller's transaction.
pub(super) async fn put(conn: &mut SqliteConnection, bytes: &[u8], now: i64) -> Result<BlobHash> {
    let h = BlobHash::of(bytes);
    sqlx::query(
        "INSERT INTO blobs (hash, size, bytes, created_ms) VALUES (?, ?, ?, ?)
         ON CONFLICT (hash) DO NOTHING",
    )
    .bind(h.to_string())
    .bind(bytes.len() as i64)
    .bind(bytes)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(h)
}

/// The bytes stored under `h`, inside the caller's transaction.
pub(super) async fn get(conn: &mut SqliteConnection, h: &str) -> Result<Option<Vec<u8>>> {
    Ok(sqlx::query_scalar("SELECT bytes FROM blobs WHERE hash = ?")
        .bind(h)
        .fetch_optional(&mut *conn)
        .await?)
}

impl Store {
    pub async fn put_blob(&self, bytes: &[u8], now: i64) -> Result<BlobHash> {
        let mut conn = self.write.acquire().await?;
        put(&mut conn, bytes, now).await
    }

    pub async fn blob(&self, h: &BlobHash) -> Result<Option<Vec<u8>>> {
        let mut conn = self.read.acquire().await?;
        get(&mut conn, &h.to_string()).await
    }

    pub async fn blob_exists(&self, h: &BlobHash) -> Result<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE hash = ?")
            .bind(h.to_string())
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }
}
