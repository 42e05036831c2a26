//! The OpenAPI 3.1 document of `/api/v1`, served at
//! `/api/v1/openapi.json`: each route's operation comes from the
//! `#[utoipa::path]` on its handler, its schemas from the `protocol`
//! types themselves, so the document follows the code. A test compares it
//! with the routes the router serves ([`super::api_paths`]).

use axum::Json;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasm@home coordinator",
        description = "Volunteer computing on WebAssembly: submitters store modules, submit jobs and cancel their own with their API key (an admin's cancels any); workers register, ask for work and upload results with their token. Reads are public; a read that carries an API key has it checked.",
    ),
    paths(
        super::blobs::post_blob,
        super::blobs::get_blob,
        super::jobs::post_job,
        super::jobs::list_jobs,
        super::jobs::get_job,
        super::jobs::job_output,
        super::jobs::job_units,
        super::jobs::cancel_job,
        super::workers::register,
        super::workers::list_workers,
        super::workers::list_accounts,
        super::leases::work,
        super::leases::heartbeat,
        super::leases::release_replica,
        super::results::put_result,
        super::results::post_results,
        openapi_json,
    ),
    modifiers(&BearerSchemes, &DashboardPaths),
)]
struct Document;

/// The dashboard's JSON (`crate::dashboard`): public, read-only, shaped
/// for its page and not a stable interface, so its bodies are documented
/// as plain JSON objects.
struct DashboardPaths;

impl Modify for DashboardPaths {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use crate::dashboard::{JOB, LEADERBOARD, OVERVIEW, WORKERS};
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ContentBuilder, ObjectBuilder, Required, ResponseBuilder, Type};
        let json = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                        .build(),
                )
                .build()
        };
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, summary) in [
            (
                OVERVIEW,
                "The dashboard's overview: jobs, workers online, throughput",
            ),
            (JOB, "The dashboard's page of one job"),
            (WORKERS, "The dashboard's workers and the units they run"),
            (
                LEADERBOARD,
                "The dashboard's leaderboard of accounts and workers",
            ),
        ] {
            let mut op = OperationBuilder::new()
                .summary(Some(summary))
                .tag("dashboard")
                .response("200", json(summary))
                .response("400", error("a bad parameter"));
            if path == JOB {
                op = op
                    .parameter(
                        ParameterBuilder::new()
                            .name("id")
                            .parameter_in(ParameterIn::Path)
                            .required(Required::True)
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(
                                Some(utoipa::openapi::SchemaFormat::Custom("uuid".into())),
                            ))),
                    )
                    .response("404", error("no such job"));
            }
            if path == LEADERBOARD {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name("limit")
                        .parameter_in(ParameterIn::Query)
                        .required(Required::False)
                        .schema(Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(0)),
                        )),
                );
            }
            openapi
                .paths
                .add_path_operation(path, vec![HttpMethod::Get], op.build());
        }
    }
}

/// The two secrets, both `Authorization: Bearer <secret>`.
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        components.add_security_scheme(
            "worker_token",
            bearer("A worker's token, from its registration (POST /api/v1/workers)."),
        );
        components.add_security_scheme(
            "api_key",
            bearer(
                "A submitter's API key (`coordinator keys create NAME`; the coordinator's data_dir/api-key is the key of the admin `admin`). \
                 Jobs belong to the submitter that submitted them: it cancels its own, an admin any. \
                 An unknown or revoked key is 401 on every endpoint that takes a key.",
            ),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(Document::openapi)
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI document of /api/v1", content_type = "application/json")))]
pub(super) async fn openapi_json() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}
