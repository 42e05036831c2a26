//! The worker's side of the HTTP protocol.

use protocol::{
    BlobHash, ErrorBody, Platform, RegisterRequest, RegisterResponse, ReplicaId, ResultUpload,
    UploadResponse, WorkRequest, WorkResponse,
};
use std::time::Duration;

/// What went wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator could not be reached or failed (network, 5xx, 429):
    /// try again later. Told apart by status, not code: a proxy in front of
    /// the coordinator answers these without the coordinator's body.
    #[error("the coordinator is unavailable: {0}")]
    Unavailable(String),
    /// The coordinator refused the request (4xx): trying again will not
    /// help. `code` says why; `status` is kept for messages and tests.
    #[error("the coordinator refused: {message} ({code}, {status})")]
    Refused {
        code: ErrorCode,
        status: u16,
        message: String,
    },
    /// The coordinator's TLS certificate is not trusted: trying again will
    /// not help until the worker is told which CA to trust.
    #[error(
        "the coordinator's TLS certificate is not trusted ({0}); if the project signs its own, run the worker with --ca-cert FILE (the project's CA certificate, PEM)"
    )]
    UntrustedCertificate(String),
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            ClientError::Unavailable(_) | ClientError::UntrustedCertificate(_) => None,
        }
    }

    /// The coordinator's code for a refusal.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            ClientError::Unavailable(_) | ClientError::UntrustedCertificate(_) => None,
        }
    }

    /// The error for an answer that is not a success: its status and body.
    fn from_answer(status: reqwest::StatusCode, body: String) -> ClientError {
        let (code, message) = match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => (ErrorCode::parse(&e.error), e.message),
            Err(_) => (ErrorCode::for_status(status.as_u16()), body),
        };
        // 408: the request was too slow for the coordinator; another try
        // may well go through.
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            ClientError::Unavailable(format!("{status}: {message}"))
        } else {
            ClientError::Refused {
                code,
                status: status.as_u16(),
                message,
            }
        }
    }
}

/// Why the coordinator refused: the stable code of its error body
/// (`ErrorBody::error`; the codes are listed in the coordinator's
/// `error.rs`). The worker acts on two of them; any other is kept as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// `unauthorized`: the coordinator does not know this worker's token.
    Unauthorized,
    /// `upgrade_required`: the coordinator runs another engine or protocol
    /// version than this worker.
    UpgradeRequired,
    /// Any other code (`not_found`, `gone`, `conflict`, ...).
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "unauthorized" => ErrorCode::Unauthorized,
            "upgrade_required" => ErrorCode::UpgradeRequired,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::Other(code) => code,
        }
    }

    /// The code of an answer without the coordinator's error body (from a
    /// proxy, or the HTTP framework's own answers such as an unknown
    /// route): the one the coordinator gives that status, else `http_<status>`.
    fn for_status(status: u16) -> ErrorCode {
        let code = match status {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            409 => "conflict",
            410 => "gone",
            413 => "too_large",
            422 => "invalid",
            426 => "upgrade_required",
            other => return ErrorCode::Other(format!("http_{other}")),
        };
        ErrorCode::parse(code)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client for one coordinator, with or without a worker token.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// This machine and sandbox, as the coordinator needs to know them.
pub fn platform() -> Platform {
    Platform {
        arch: std::env::consts::ARCH.to_string(),
        os: std::env::consts::OS.to_string(),
        engine: sandbox::ENGINE.to_string(),
        protocol: protocol::PROTOCOL_VERSION,
    }
}

/// The CA certificates in a PEM file, to trust besides the public ones.
pub fn load_ca(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("--ca-cert: cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
        anyhow::anyhow!("--ca-cert: {} is not PEM certificates: {e}", path.display())
    })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "--ca-cert: {} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(certs)
}

/// Whether a request failed because the server's certificate is not
/// trusted (rustls refused it), as opposed to the network or the server.
fn untrusted_certificate(e: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(why)) = err.downcast_ref::<rustls::Error>() {
            return Some(format!("{why:?}"));
        }
        // An io::Error hides what it wraps from `source()`.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

impl Client {
    /// A client trusting the public CAs only.
    pub fn new(base: &str) -> Client {
        Self::with_roots(base, &[])
    }

    /// The client of a worker run with `config`: its coordinator, trusting
    /// `--ca-cert` besides the public CAs.
    pub fn for_config(config: &crate::Config) -> anyhow::Result<Client> {
        let roots = match &config.ca_cert {
            Some(path) => load_ca(path)?,
            None => Vec::new(),
        };
        Ok(Self::with_roots(&config.coordinator, &roots))
    }

    /// A client trusting `roots` besides the public CAs.
    pub fn with_roots(base: &str, roots: &[reqwest::Certificate]) -> Client {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300));
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        let http = builder.build().expect("a TLS backend is compiled in");
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            http,
        }
    }

    pub fn with_token(mut self, token: String) -> Client {
        self.token = Some(token);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, protocol::API_PREFIX)
    }

    async fn send(
        &self,
        mut req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| match untrusted_certificate(&e) {
                Some(why) => ClientError::UntrustedCertificate(why),
                None => ClientError::Unavailable(format!("{e:#}")),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        Err(ClientError::from_answer(status, body))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| ClientError::Unavailable(format!("bad answer: {e}")))
    }

    /// Registers a worker in a new volunteer account.
    pub async fn register(&self, name: &str, slots: u32) -> Result<RegisterResponse, ClientError> {
        self.register_in(name, slots, None).await
    }

    /// Registers a worker, in the account with `account_key` if given.
    pub async fn register_in(
        &self,
        name: &str,
        slots: u32,
        account_key: Option<&str>,
    ) -> Result<RegisterResponse, ClientError> {
        self.register_invited(name, slots, account_key, None).await
    }

    /// Registers a worker, spending a use of `invite` if given.
    pub async fn register_invited(
        &self,
        name: &str,
        slots: u32,
        account_key: Option<&str>,
        invite: Option<&str>,
    ) -> Result<RegisterResponse, ClientError> {
        let req = RegisterRequest {
            name: name.to_string(),
            platform: platform(),
            slots,
            account_key: account_key.map(str::to_string),
            invite: invite.map(str::to_string),
        };
        self.json(self.http.post(self.url("/workers")).json(&req))
            .await
    }

    /// Asks for up to `max_units` leases; with `held`, naming every replica
    /// this worker holds (the coordinator gives back its others).
    pub async fn work(
        &self,
        max_units: u32,
        held: Option<Vec<ReplicaId>>,
    ) -> Result<WorkResponse, ClientError> {
        let req = WorkRequest {
            max_units,
            platform: platform(),
            held,
        };
        self.json(self.http.post(self.url("/work")).json(&req))
            .await
    }

    /// Downloads a blob and checks that its bytes hash to `hash`.
    pub async fn blob(&self, hash: BlobHash) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .send(self.http.get(self.url(&format!("/blobs/{hash}"))))
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        if BlobHash::of(&bytes) != hash {
            return Err(ClientError::Unavailable(format!(
                "the blob downloaded as {hash} has another hash: refusing it"
            )));
        }
        Ok(bytes.to_vec())
    }

    pub async fn upload(
        &self,
        replica: ReplicaId,
        result: &ResultUpload,
    ) -> Result<UploadResponse, ClientError> {
        self.json(
            self.http
                .put(self.url(&format!("/replicas/{replica}/result")))
                .json(result),
        )
        .await
    }

    /// Uploads several results in one request; each gets its own answer.
    pub async fn upload_many(
        &self,
        results: &protocol::ResultBatch,
    ) -> Result<protocol::ResultBatchResponse, ClientError> {
        self.json(self.http.post(self.url("/results")).json(results))
            .await
    }

    /// Gives back a lease this worker will not run.
    pub async fn release(&self, replica: ReplicaId) -> Result<(), ClientError> {
        self.send(
            self.http
                .post(self.url(&format!("/replicas/{replica}/release"))),
        )
        .await
        .map(|_| ())
    }

    pub async fn heartbeat(
        &self,
        beat: &protocol::Heartbeat,
    ) -> Result<protocol::HeartbeatResponse, ClientError> {
        self.json(self.http.post(self.url("/heartbeat")).json(beat))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn body(code: &str, message: &str) -> String {
        serde_json::to_string(&ErrorBody {
            error: code.into(),
            message: message.into(),
        })
        .unwrap()
    }

    #[test]
    fn a_refusal_carries_the_code_of_the_coordinators_body() {
        let e = ClientError::from_answer(
            StatusCode::UPGRADE_REQUIRED,
            body("upgrade_required", "engine differs"),
        );
        assert_eq!(e.code(), Some(&ErrorCode::UpgradeRequired));
        assert_eq!(e.status(), Some(426));
        assert_eq!(
            e.to_string(),
            "the coordinator refused: engine differs (upgrade_required, 426)"
        );
        let e = ClientError::from_answer(StatusCode::GONE, body("gone", "the lease ran out"));
        assert_eq!(e.code(), Some(&ErrorCode::Other("gone".into())));
        // The code decides, whatever the status.
        let e = ClientError::from_answer(StatusCode::BAD_REQUEST, body("unauthorized", "who?"));
        assert_eq!(e.code(), Some(&ErrorCode::Unauthorized));
    }

    #[test]
    fn an_answer_without_a_body_gets_the_code_the_coordinator_gives_its_status() {
        let e = ClientError::from_answer(StatusCode::UNAUTHORIZED, String::new());
        assert_eq!(e.code(), Some(&ErrorCode::Unauthorized));
        let e = ClientError::from_answer(StatusCode::NOT_FOUND, "no route".into());
        assert_eq!(e.code(), Some(&ErrorCode::Other("not_found".into())));
        assert!(e.to_string().contains("no route"), "{e}");
        let e = ClientError::from_answer(StatusCode::IM_A_TEAPOT, String::new());
        assert_eq!(e.code(), Some(&ErrorCode::Other("http_418".into())));
        for code in ["unauthorized", "upgrade_required", "conflict"] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
    }

    #[test]
    fn server_errors_and_too_many_requests_are_worth_retrying() {
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::REQUEST_TIMEOUT,
        ] {
            let e = ClientError::from_answer(status, body("internal", "oops"));
            assert!(matches!(e, ClientError::Unavailable(_)), "{status}: {e:?}");
        }
    }
}
