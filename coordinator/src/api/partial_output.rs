//! `GET /api/v1/jobs/{id}/output?partial=true`: the accepted unit outputs
//! so far, in unit order, framed as the module's `reduce` mode receives
//! them (`protocol::frame`: a u32 little-endian length, then the bytes),
//! streamed before the job is done. How many outputs the stream holds
//! comes first, in the `units-streamed` header (the job's units in
//! `units-total`). The body is read page by page from one snapshot of the
//! database (`store::AcceptedOutputs`) by a task that hands each framed
//! page to the response through a channel of one: a slow reader keeps one
//! page in memory, never the job.
//!
//! A stream holds a read connection and the database's snapshot while it
//! lasts, so at most [`PARTIAL_OUTPUTS`] run at once (beyond: 503 with
//! `Retry-After`), and one not read to its end within the request timeout
//! is cut off (the client sees the body end early, with an error).

use super::ApiResult;
use crate::Coordinator;
use crate::error::ApiError;
use crate::store::{self, AcceptedOutputs};
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use hyper::body::Frame;
use protocol::{JobId, PARTIAL_TOTAL_HEADER, PARTIAL_UNITS_HEADER, frame};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// The most partial outputs streamed at once (each holds one of the
/// store's four read connections).
pub(super) const PARTIAL_OUTPUTS: usize = 2;

/// Starts streaming `job`'s accepted outputs so far.
pub(super) async fn stream(c: &Coordinator, job: JobId) -> ApiResult<Response> {
    let permit = c.inner.throttle.partial_output()?;
    let mut outputs = c
        .inner
        .store
        .accepted_outputs_so_far(job)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {job}")))?;
    let (units, total) = (outputs.units, outputs.units_total);
    let (tx, rx) = mpsc::channel(1);
    let limit = c.config().edge.request_timeout;
    tokio::spawn(async move {
        let _permit = permit;
        let why = match tokio::time::timeout(limit, pump(&mut outputs, &tx)).await {
            Ok(Ok(())) | Ok(Err(Stop::Gone)) => return,
            Ok(Err(Stop::Failed(why))) => why,
            Err(_) => format!("not read to its end within the request timeout ({limit:?})"),
        };
        tracing::warn!(%job, "partial output cut off: {why}");
        let _ = tx.send(Err(std::io::Error::other(why))).await;
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(PARTIAL_UNITS_HEADER, units)
        .header(PARTIAL_TOTAL_HEADER, total)
        .body(Body::new(Pages(rx)))
        .map_err(|e| ApiError::Internal(e.into()))
}

/// Why a stream stopped before its end.
enum Stop {
    /// The reader went away.
    Gone,
    /// It cannot go on; the reader is told.
    Failed(String),
}

impl From<store::Error> for Stop {
    fn from(e: store::Error) -> Stop {
        Stop::Failed(format!("reading the outputs failed: {e}"))
    }
}

/// Sends every page of `outputs`, framed, and exactly as many outputs as
/// it counted (a snapshot cannot hold others, but a body must never
/// disagree with its header).
async fn pump(
    outputs: &mut AcceptedOutputs,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), Stop> {
    let mut sent = 0u64;
    loop {
        let page = outputs.next_page().await?;
        if page.is_empty() {
            break;
        }
        sent += page.len() as u64;
        if sent > outputs.units {
            break;
        }
        let framed = frame::encode(page.iter().map(|o| &o[..]));
        tx.send(Ok(framed.into())).await.map_err(|_| Stop::Gone)?;
    }
    if sent != outputs.units {
        let held = match sent > outputs.units {
            true => "more".to_string(),
            false => sent.to_string(),
        };
        return Err(Stop::Failed(format!(
            "the snapshot counted {} accepted outputs but its pages hold {held}",
            outputs.units
        )));
    }
    Ok(())
}

/// The response body: the pages the task sends, as they come.
#[derive(Debug)]
struct Pages(mpsc::Receiver<std::io::Result<Bytes>>);

impl hyper::body::Body for Pages {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|page| page.map(|p| p.map(Frame::data)))
    }
}
