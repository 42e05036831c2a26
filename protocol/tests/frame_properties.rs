//! Property tests of the task ABI's framing: random bytes and mutated
//! valid streams never panic the decoders, whole and streamed decoding
//! agree, and every refusal says where the stream broke off. A fixed seed
//! keeps runs repeatable.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use protocol::frame::{self, Decoder};

fn config() -> Config {
    Config {
        cases: 512,
        rng_seed: RngSeed::Fixed(12),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Decodes `data` streamed in chunks of `sizes` (cycled): the items, and
/// the stray byte count if it ended inside a frame.
fn streamed(data: &[u8], sizes: &[usize]) -> (Vec<Vec<u8>>, Option<usize>) {
    let mut d = Decoder::new();
    let mut items = Vec::new();
    let mut rest = data;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
        d.feed(chunk, |i| items.push(i.to_vec()));
        rest = tail;
    }
    (items, d.finish().err().map(|e| e.trailing))
}

/// Checks whole decoding against streamed decoding and re-encoding.
fn consistent(data: &[u8], sizes: &[usize]) -> Result<(), TestCaseError> {
    let (items, stray) = streamed(data, sizes);
    match frame::decode(data) {
        Ok(whole) => {
            prop_assert_eq!(stray, None);
            prop_assert_eq!(&whole, &items);
            prop_assert_eq!(frame::encode(whole.iter().copied()), data);
        }
        Err(e) => {
            prop_assert!(e.trailing > 0 && e.trailing <= data.len());
            prop_assert_eq!(stray, Some(e.trailing));
            let said = e.to_string();
            let expected = format!("{} stray bytes", e.trailing);
            prop_assert!(said.contains(&expected), "{}", said);
            // What came before the break decodes alone.
            let whole = frame::decode(&data[..data.len() - e.trailing]).unwrap();
            prop_assert_eq!(&whole, &items);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes_never_panic_and_both_decoders_agree(
        data in proptest::collection::vec(any::<u8>(), 0..256),
        sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        consistent(&data, &sizes)?;
    }

    #[test]
    fn valid_streams_round_trip_and_mutated_ones_are_refused_cleanly(
        items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..48), 0..8),
        sizes in proptest::collection::vec(1usize..40, 1..8),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let data = frame::encode(items.iter().map(Vec::as_slice));
        let (got, stray) = streamed(&data, &sizes);
        prop_assert_eq!(&got, &items);
        prop_assert_eq!(stray, None);
        // Bytes changed (lengths included) and the stream cut short.
        let mut mutated = data.clone();
        if !mutated.is_empty() {
            for (at, byte) in &flips {
                let i = at.index(mutated.len());
                mutated[i] = *byte;
            }
            mutated.truncate(cut.index(mutated.len() + 1));
        }
        consistent(&mutated, &sizes)?;
    }
}
