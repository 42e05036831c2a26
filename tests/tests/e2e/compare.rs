//! Jobs validated with the module's `compare` mode: equivalent outputs
//! agree, others do not.

use protocol::{Outcome, ResultUpload, Validation};
use wasm_at_home_tests::*;

/// `lease`'s honest n-body output with its value scaled by `factor`.
fn scaled(module: &[u8], lease: &protocol::Lease, factor: f64) -> ResultUpload {
    let mut r = honest_result(module, lease);
    if let Outcome::Success { output } = &mut r.outcome {
        let x: f64 = std::str::from_utf8(output).unwrap().parse().unwrap();
        *output = format!("{:.12}", x * factor).into_bytes().into();
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_mode_accepts_outputs_within_the_tolerance_and_rejects_others() {
    let c = TestCoordinator::start().await;
    let module = kernels_wasm();
    let validation = Validation {
        compare: true,
        ..Validation::quorum(2, 3)
    };
    let job = c
        .submit_units(
            module.clone(),
            vec![b"nbody 1000".to_vec(), b"nbody 2000".to_vec()],
            validation,
            default_limits(),
        )
        .await;
    let a = ManualWorker::register(&c.url, "a").await;
    let b = ManualWorker::register(&c.url, "b").await;
    let d = ManualWorker::register(&c.url, "d").await;
    let first = a.take(2).await;
    assert_eq!(first.len(), 2);
    for lease in &first {
        a.compute_and_upload(lease).await;
    }
    // b: the first unit off by a relative 1e-9 (equivalent: the task
    // allows 1e-6), the second off by 1% (not).
    let second = b.take(2).await;
    assert_eq!(second.len(), 2);
    let (near, far) = if second[0].unit_id == first[0].unit_id {
        (&second[0], &second[1])
    } else {
        (&second[1], &second[0])
    };
    b.client
        .upload(near.replica_id, &scaled(&module, near, 1.0 + 1e-9))
        .await
        .unwrap();
    b.client
        .upload(far.replica_id, &scaled(&module, far, 1.01))
        .await
        .unwrap();
    let status = c.status(job).await;
    assert_eq!(
        status.units_accepted, 1,
        "the equivalent pair agrees: {status:?}"
    );

    // The far one needs a third opinion; an honest one settles it.
    let third = d.take(2).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].unit_id, far.unit_id);
    d.compute_and_upload(&third[0]).await;
    // Caught with a wrong result, b is no longer believed on the unit it
    // agreed on: that unit is reopened and confirmed by d.
    let again = d.take(2).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].unit_id, near.unit_id);
    d.compute_and_upload(&again[0]).await;
    let status = c.wait_for_job(job).await;
    assert_eq!(status.units_accepted, 2);
    let b_record = c.worker(b.id).await;
    assert_eq!((b_record.valid, b_record.invalid), (0, 1), "{b_record:?}");
    assert_eq!(c.worker(a.id).await.valid, 2);
    assert_eq!(c.worker(d.id).await.valid, 2);
}
