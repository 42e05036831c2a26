//! `uploads`: the coordinator's memory under oversized result uploads.
//! Sixteen uploads of 21 MB at once, each to a replica of its own of a job
//! whose output limit is 1 KiB: once declared (`Content-Length`, refused
//! before a byte of the body is read), once chunked (no length: read up to
//! the job's limit, then refused). The clients stream their bodies from a
//! small buffer, so the process's resident memory is the coordinator's.
//! Prints idle RSS, peak RSS during the uploads, and the CPU.

use std::time::Instant;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasm_at_home_tests::{ManualWorker, TestCoordinator, declared_leases, default_limits, quorum};

const UPLOADS: usize = 16;
const BODY_BYTES: usize = 21_000_000;

fn status_kb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// One upload of `BODY_BYTES` to `replica`, declared or chunked; the
/// answer's status line.
async fn upload(addr: String, token: String, replica: String, chunked: bool) -> String {
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let length = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {BODY_BYTES}")
    };
    let head = format!(
        "PUT /api/v1/replicas/{replica}/result HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n{length}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let piece = vec![b'7'; 64 << 10];
        let mut sent = 0;
        while sent < BODY_BYTES {
            let n = piece.len().min(BODY_BYTES - sent);
            if chunked {
                write.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                write.write_all(&piece[..n]).await?;
                write.write_all(b"\r\n").await?;
            } else {
                write.write_all(&piece[..n]).await?;
            }
            sent += n;
        }
        if chunked {
            write.write_all(b"0\r\n\r\n").await?;
        }
        std::io::Result::Ok(sent)
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    // The coordinator answered: the rest of the body is not wanted.
    writer.abort();
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("no answer")
        .to_string()
}

pub fn run(_smoke: bool) -> serde_json::Value {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = TestCoordinator::start_with(declared_leases).await;
        let units = (0..UPLOADS as u64)
            .map(|i| {
                let mut unit = [0u8; 16];
                unit[..8].copy_from_slice(&(i * 100).to_le_bytes());
                unit[8..].copy_from_slice(&(i * 100 + 100).to_le_bytes());
                unit.to_vec()
            })
            .collect();
        let limits = protocol::Limits {
            output_bytes: 1024,
            ..default_limits()
        };
        c.submit_units(wasm_at_home_tests::primes_wasm(), units, quorum(1, 1), limits)
            .await;
        let w = ManualWorker::register(&c.url, "bench").await;
        let mut leases = Vec::new();
        for _ in 0..2 {
            leases.extend(w.take(UPLOADS as u32).await);
        }
        assert!(leases.len() >= UPLOADS, "{} leases", leases.len());
        let addr = c.url.trim_start_matches("http://").to_string();
        let mut figures = serde_json::Map::new();
        // Settle, then what the coordinator holds at rest.
        let idle_kb = status_kb("VmRSS:");
        let mut peak_kb: f64 = idle_kb;
        for chunked in [false, true] {
            // Resets VmHWM to the current RSS: the peak below is this
            // round's.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let started = Instant::now();
            let answers = futures_join(
                leases[..UPLOADS]
                    .iter()
                    .map(|l| {
                        tokio::spawn(upload(
                            addr.clone(),
                            w.token().to_string(),
                            l.replica_id.to_string(),
                            chunked,
                        ))
                    })
                    .collect(),
            )
            .await;
            let secs = started.elapsed().as_secs_f64();
            let refused = answers.iter().filter(|a| a.contains(" 413 ")).count();
            let round_peak = status_kb("VmHWM:");
            peak_kb = peak_kb.max(round_peak);
            let mode = if chunked { "chunked" } else { "declared" };
            eprintln!(
                "{UPLOADS} uploads of {BODY_BYTES} bytes, {mode}: {refused} refused (413) in {secs:.2} s; peak RSS {:.1} MiB (idle {:.1} MiB)",
                round_peak / 1024.0,
                idle_kb / 1024.0
            );
            assert_eq!(refused, UPLOADS, "{answers:?}");
            figures.insert(
                format!("{mode}_peak_rss_mb"),
                serde_json::json!((round_peak / 1024.0 * 10.0).round() / 10.0),
            );
        }
        let growth_mb = (peak_kb - idle_kb) / 1024.0;
        eprintln!(
            "peak RSS {:.1} MiB over idle {:.1} MiB (+{growth_mb:.1} MiB; the bound is +64 MiB)",
            peak_kb / 1024.0,
            idle_kb / 1024.0
        );
        let mut out = serde_json::json!({
            "bench": "uploads",
            "uploads": UPLOADS,
            "body_bytes": BODY_BYTES,
            "job_output_bytes": 1024,
            "idle_rss_mb": (idle_kb / 1024.0 * 10.0).round() / 10.0,
            "peak_rss_mb": (peak_kb / 1024.0 * 10.0).round() / 10.0,
            "growth_mb": (growth_mb * 10.0).round() / 10.0,
            "cpu": wasm_at_home_tests::cpu_name(),
        });
        out.as_object_mut().unwrap().extend(figures);
        assert!(growth_mb < 64.0, "the coordinator grew by {growth_mb:.1} MiB");
        out
    })
}

/// Waits for every task, in order.
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
