//! The worker's side of the HTTP protocol.

use protocol::{
    BlobHash, ErrorBody, Platform, RegisterRequest, RegisterResponse, ReplicaId, ResultUpload,
    UploadResponse, WorkRequest, WorkResponse,
};
use std::time::Duration;

/// What went wrong talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator could not be reached or failed (network, 5xx): try
    /// again later.
    #[error("the coordinator is unavailable: {0}")]
    Unavailable(String),
    /// The coordinator refused the request (4xx): trying again will not help.
    #[error("the coordinator refused: {message} ({status})")]
    Refused { status: u16, message: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            ClientError::Unavailable(_) => None,
        }
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

impl Client {
    pub fn new(base: &str) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .expect("a TLS backend is compiled in");
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
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or(body);
        if status.is_server_error() || status.as_u16() == 429 {
            Err(ClientError::Unavailable(format!("{status}: {message}")))
        } else {
            Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            })
        }
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
        let req = RegisterRequest {
            name: name.to_string(),
            platform: platform(),
            slots,
            account_key: account_key.map(str::to_string),
        };
        self.json(self.http.post(self.url("/workers")).json(&req))
            .await
    }

    pub async fn work(&self, max_units: u32) -> Result<WorkResponse, ClientError> {
        let req = WorkRequest {
            max_units,
            platform: platform(),
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
