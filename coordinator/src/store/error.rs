//! The store's errors: what a caller can act on (a claim lost to another
//! coordinator, the writer gone) apart from the database's own failures.

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database refused or failed a statement (including a schema
    /// invariant: a unique index, a counter guard).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds a value no version of this code writes.
    #[error("bad {what} in the database: {value:?}")]
    Corrupt { what: &'static str, value: String },
    /// The group-commit task has stopped (the process is going down).
    #[error("the store's writer has stopped")]
    WriterGone,
    /// Another coordinator took over this duty (our claim ran out).
    #[error("the {duty} of job {job} was taken over by another coordinator")]
    ClaimLost { job: String, duty: &'static str },
    #[error("cannot start the store's writer: {0}")]
    Io(#[from] std::io::Error),
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
