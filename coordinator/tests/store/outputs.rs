//! A job's accepted outputs so far (`Store::accepted_outputs_so_far`, the
//! partial output): counted once, then read in pages by unit index, all
//! from one snapshot: what is accepted after the count is not in the
//! pages, and every page follows the one before in unit order.

use crate::fixture::{self, Fixture, T0};
use coordinator::store::NewJob;
use protocol::{JobId, Limits, UploadStatus, Validation};

/// A running job of `units` units (inputs "0", "1", ...) whose outputs
/// may be 1 MiB, so a page holds four of them.
async fn job_of_large_outputs(f: &Fixture, units: usize) -> JobId {
    let module = f.store.put_blob(b"\0asm test module", T0).await.unwrap();
    let job = JobId::random();
    let inputs: Vec<Vec<u8>> = (0..units).map(|i| i.to_string().into_bytes()).collect();
    let new = NewJob {
        id: job,
        name: "large outputs".into(),
        module,
        input: None,
        limits: Limits {
            fuel: 1_000_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 20,
        },
        lease_secs: 60,
        validation: Validation::quorum(1, 1),
        submitter: None,
        priority: 0,
    };
    f.store.create_job(&new, Some(&inputs), T0).await.unwrap();
    job
}

/// Unit `i`'s output: its index, repeated `i + 1` times.
fn output(i: usize) -> Vec<u8> {
    vec![i as u8; i + 1]
}

#[tokio::test]
async fn accepted_outputs_so_far_are_one_snapshot_read_in_unit_order_across_pages() {
    let f = fixture::open(fixture::trust()).await;
    let job = job_of_large_outputs(&f, 10).await;
    // Three workers of their own accounts take four units each at most.
    let mut leases = Vec::new();
    for name in ["a", "b", "c"] {
        let w = f.worker(name, name, 2).await;
        for l in f.lease(&w, 4, T0).await {
            leases.push((w.clone(), l));
        }
    }
    assert_eq!(leases.len(), 10);
    let index = |input: &[u8]| -> usize { std::str::from_utf8(input).unwrap().parse().unwrap() };
    leases.sort_by_key(|(_, l)| index(&l.input));
    let accept = async |i: usize| {
        let (w, l) = &leases[i];
        let answer = f.upload(w, l, &output(i), 100, T0 + 1_000).await;
        assert_eq!(answer.expect("admitted").0, UploadStatus::Accepted);
    };
    // Every unit but 0 and 7, out of order.
    for i in [9, 1, 2, 5, 3, 8, 4, 6] {
        accept(i).await;
    }

    let mut snapshot = f
        .store
        .accepted_outputs_so_far(job)
        .await
        .unwrap()
        .expect("the job");
    assert_eq!((snapshot.units, snapshot.units_total), (8, 10));
    // Accepted after the count: not in its pages.
    accept(0).await;
    accept(7).await;
    let mut pages = Vec::new();
    loop {
        let page = snapshot.next_page().await.unwrap();
        if page.is_empty() {
            break;
        }
        pages.push(page);
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![4, 4], "pages of four 1 MiB-limit outputs");
    let read: Vec<Vec<u8>> = pages.into_iter().flatten().collect();
    let want: Vec<Vec<u8>> = [1, 2, 3, 4, 5, 6, 8, 9].into_iter().map(output).collect();
    assert_eq!(read, want);
    drop(snapshot);

    // A new look sees all ten, in order.
    let mut now = f.store.accepted_outputs_so_far(job).await.unwrap().unwrap();
    assert_eq!(now.units, 10);
    let mut read = Vec::new();
    loop {
        let page = now.next_page().await.unwrap();
        if page.is_empty() {
            break;
        }
        read.extend(page);
    }
    assert_eq!(read, (0..10).map(output).collect::<Vec<_>>());
    assert!(
        f.store
            .accepted_outputs_so_far(JobId::random())
            .await
            .unwrap()
            .is_none(),
        "no such job"
    );
    f.aggregates_agree(job).await;
}
