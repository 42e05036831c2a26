//! OpenAPI schemas of the types that serialize by hand (ids, hashes,
//! base64 bytes), for the coordinator's `/api/v1/openapi.json`. Only with
//! the `openapi` feature; the worker builds without it.

use crate::{BlobHash, Bytes, JobId, ReplicaId, UnitId, WorkerId};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

fn uuid(what: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
        .description(Some(format!("The id of a {what} (a UUID).")))
        .into()
}

fn positive(what: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .description(Some(format!("The id of a {what} (a positive integer).")))
        .into()
}

macro_rules! schema {
    ($ty:ty, $body:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $body
            }
        }
        impl ToSchema for $ty {}
    };
}

schema!(JobId, uuid("job"));
schema!(WorkerId, uuid("worker"));
schema!(UnitId, positive("unit"));
schema!(ReplicaId, positive("replica"));
schema!(
    BlobHash,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9a-f]{64}$"))
        .description(Some("A blob's sha256, as 64 lowercase hex digits."))
        .into()
);
schema!(
    Bytes,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Byte)))
        .content_encoding("base64")
        .description(Some("Bytes as a standard base64 string."))
        .into()
);
