//! The HTTP client behind `coordinator submit`, `status`, `jobs`, `output`
//! (whole or partial, streamed) and `cancel`.

use crate::manifest;
use anyhow::{Context as _, bail};
use protocol::{
    BlobHash, BlobRef, ErrorBody, JobCreated, JobId, JobSpec, JobStatus, PARTIAL_TOTAL_HEADER,
    PARTIAL_UNITS_HEADER, UnitStatus,
};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, api_key: Option<String>) -> Client {
        Self::with_roots(base, api_key, &[])
    }

    /// A client that trusts `roots` besides the public CAs (a coordinator
    /// whose certificate the project signs itself).
    pub fn with_roots(
        base: &str,
        api_key: Option<String>,
        roots: &[reqwest::Certificate],
    ) -> Client {
        let mut builder = reqwest::Client::builder();
        for root in roots {
            builder = builder.add_root_certificate(root.clone());
        }
        Client {
            base: base.trim_end_matches('/').to_string(),
            api_key,
            http: builder.build().expect("a TLS backend is compiled in"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, protocol::API_PREFIX)
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::RequestBuilder> {
        let key = self
            .api_key
            .as_ref()
            .context("this needs your API key: pass --api-key (or WASM_AT_HOME_API_KEY), or --data-dir for the admin's api-key file")?;
        Ok(req.bearer_auth(key))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&body) {
            Ok(e) => bail!("{} ({status})", e.message),
            Err(_) => bail!("the coordinator answered {status}: {body}"),
        }
    }

    pub async fn upload_blob(&self, bytes: Vec<u8>) -> anyhow::Result<BlobHash> {
        let req = self.authed(self.http.post(self.url("/blobs")).body(bytes))?;
        let r: BlobRef = self.send(req).await?.json().await?;
        Ok(r.hash)
    }

    pub async fn submit(&self, spec: &JobSpec) -> anyhow::Result<JobId> {
        let req = self.authed(self.http.post(self.url("/jobs")).json(spec))?;
        let r: JobCreated = self.send(req).await?.json().await?;
        Ok(r.job_id)
    }

    /// Uploads the manifest's module and input, then submits the job.
    pub async fn submit_manifest(&self, path: &Path) -> anyhow::Result<JobId> {
        let files = manifest::load(path)?;
        let module = self
            .upload_blob(files.module)
            .await
            .context("uploading the module")?;
        let input = match files.input {
            Some(bytes) => Some(
                self.upload_blob(bytes)
                    .await
                    .context("uploading the job input")?,
            ),
            None => None,
        };
        self.submit(&JobSpec {
            name: files.name,
            module,
            input,
            units: files.units.map(|u| u.into_iter().map(Into::into).collect()),
            limits: files.limits,
            lease_secs: files.lease_secs,
            validation: files.validation,
            priority: files.priority,
        })
        .await
    }

    pub async fn status(&self, job: JobId) -> anyhow::Result<JobStatus> {
        Ok(self
            .send(self.http.get(self.url(&format!("/jobs/{job}"))))
            .await?
            .json()
            .await?)
    }

    pub async fn jobs(&self) -> anyhow::Result<Vec<JobStatus>> {
        Ok(self
            .send(self.http.get(self.url("/jobs")))
            .await?
            .json()
            .await?)
    }

    /// Jobs, newest first, at most `limit`: with `mine`, only those of this
    /// client's API key (which is then needed).
    pub async fn job_list(&self, mine: bool, limit: u32) -> anyhow::Result<Vec<JobStatus>> {
        let mut req = self
            .http
            .get(self.url("/jobs"))
            .query(&[("limit", limit.to_string())]);
        if mine {
            req = self.authed(req.query(&[("mine", "true")]))?;
        } else if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn output(&self, job: JobId) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .send(self.http.get(self.url(&format!("/jobs/{job}/output"))))
            .await?;
        Ok(resp.bytes().await?.to_vec())
    }

    /// Job `job`'s accepted unit outputs so far, framed, written to `out`
    /// as they arrive; returns how many outputs the stream held and the
    /// job's units, as the coordinator's headers said.
    pub async fn partial_output(
        &self,
        job: JobId,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<(u64, u64)> {
        let url = self.url(&format!("/jobs/{job}/output?partial=true"));
        let mut resp = self.send(self.http.get(url)).await?;
        let header = |name: &str| -> anyhow::Result<u64> {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("the coordinator's answer has no {name} header"))
        };
        let (units, total) = (header(PARTIAL_UNITS_HEADER)?, header(PARTIAL_TOTAL_HEADER)?);
        while let Some(chunk) = resp
            .chunk()
            .await
            .context("the partial output ended early (the coordinator cut it off)")?
        {
            out.write_all(&chunk)?;
        }
        out.flush()?;
        Ok((units, total))
    }

    /// Up to `limit` units of `job` in `state` (all states: None), with
    /// their replicas' detail.
    pub async fn units(
        &self,
        job: JobId,
        state: Option<&str>,
        limit: u32,
    ) -> anyhow::Result<Vec<UnitStatus>> {
        let mut req = self
            .http
            .get(self.url(&format!("/jobs/{job}/units")))
            .query(&[("limit", limit.to_string())]);
        if let Some(state) = state {
            req = req.query(&[("state", state)]);
        }
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn cancel(&self, job: JobId) -> anyhow::Result<JobStatus> {
        let req = self.authed(self.http.post(self.url(&format!("/jobs/{job}/cancel"))))?;
        Ok(self.send(req).await?.json().await?)
    }

    /// Polls the job until it ends, showing a progress bar on a terminal.
    pub async fn wait(&self, job: JobId, show_progress: bool) -> anyhow::Result<JobStatus> {
        let bar = if show_progress {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg:10} [{bar:40}] {pos}/{len} units ({per_sec}, eta {eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        loop {
            let s = self.status(job).await?;
            bar.set_length(s.units_total);
            bar.set_position(s.units_accepted + s.units_failed);
            bar.set_message(s.state.as_str());
            if s.state.is_final() {
                bar.finish();
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
