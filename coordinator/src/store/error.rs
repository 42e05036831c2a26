//! The store's errors: what a caller can act on (a claim lost to another
//! coordinator, the writer gone) apart from the database's own failures.

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a statement.
    #[error(transparent)]
    Database(sqlx::Error),
    /// A write would have broken a schema invariant (a guard trigger,
    /// whose message starts with `invariant:`): a bug in the caller, never
    /// a client's mistake, and nothing was changed.
    #[error("refused by the schema: {0}")]
    Invariant(String),
    /// The schema could not be brought up to date.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store was opened with settings that make no sense.
    #[error("{0}")]
    Settings(String),
    /// A row holds a value no version of this code writes.
    #[error("bad {what} in the database: {value:?}")]
    Corrupt { what: &'static str, value: String },
    /// The group-commit task has stopped (the process is going down).
    #[error("the store's writer has stopped")]
    WriterGone,
    /// Another coordinator took over this duty (our claim ran out).
    #[error("the {duty} of job {job} was taken over by another coordinator")]
    ClaimLost { job: String, duty: &'static str },
    /// A submission (or a split's units) would pass its submitter's
    /// limit; nothing was stored.
    #[error("{0}")]
    OverLimit(crate::allowance::Exceeded),
    #[error("cannot start the store's writer")]
    WriterStart(#[source] std::io::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        match &e {
            sqlx::Error::Database(db) if db.message().contains("invariant:") => {
                Error::Invariant(db.message().to_string())
            }
            _ => Error::Database(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(super) fn corrupt(what: &'static str, value: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what,
            value: value.to_string(),
        }
    }
}
