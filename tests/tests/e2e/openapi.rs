//! The OpenAPI document against the real router: every path the router
//! serves under /api/v1 is documented and every documented path is served,
//! with exactly the documented methods (any other is 405), and the
//! documented security matches who is refused without a secret.

use std::collections::{BTreeMap, BTreeSet};
use wasm_at_home_tests::*;

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// `path` with each `{param}` filled by a value of the right shape.
fn concrete(path: &str) -> String {
    path.replace("{hash}", &"0".repeat(64))
        .replace("/jobs/{id}", &format!("/jobs/{}", uuid::Uuid::new_v4()))
        .replace("{id}", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_names_exactly_the_routes_the_router_serves() {
    let c = TestCoordinator::start().await;
    let http = reqwest::Client::new();
    let doc: serde_json::Value = http
        .get(format!("{}/api/v1/openapi.json", c.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["worker_token", "api_key"] {
        assert_eq!(schemes[scheme]["scheme"], "bearer", "{scheme}");
    }

    let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_string())
                .collect();
            (path.clone(), methods)
        })
        .collect();
    let served: BTreeSet<String> = coordinator::api::api_paths().into_iter().collect();
    assert_eq!(
        documented.keys().cloned().collect::<BTreeSet<_>>(),
        served,
        "documented paths vs the router's"
    );

    for (path, methods) in &documented {
        let url = format!("{}{}", c.url, concrete(path));
        for method in METHODS {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = http.request(m, &url).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            if methods.contains(method) {
                assert_ne!(status, 405, "{method} {path} is documented, not served");
                // The router's own 404 (no route) has no body; a
                // handler's says what is missing.
                assert!(
                    status != 404 || body.contains("not_found"),
                    "{method} {path}: {status}"
                );
                let op = &doc["paths"][path][method];
                // Secured: some scheme needed. An empty requirement
                // (`{}`) among them makes the secret optional (a public
                // read that checks a key when one is given).
                let secured = op["security"].as_array().is_some_and(|s| {
                    !s.is_empty()
                        && s.iter()
                            .all(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                });
                assert_eq!(
                    status == 401,
                    secured,
                    "{method} {path}: {status} without a secret, documented security {}",
                    op["security"]
                );
                // Every documented answer carries its status in the document.
                assert!(
                    op["responses"].get(status.to_string()).is_some()
                        || (400..500).contains(&status) && op["responses"].get("400").is_some(),
                    "{method} {path}: {status} is not documented"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            }
        }
    }
    // A path that is not in the table is not served.
    let r = http
        .get(format!("{}/api/v1/nothing-here", c.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
