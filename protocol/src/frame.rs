//! The framing of the task ABI: each item is a u32 little-endian length
//! followed by that many bytes. Split output, reduce input and compare input
//! are sequences of frames.

/// Appends one frame holding `item` to `out`.
pub fn push(out: &mut Vec<u8>, item: &[u8]) {
    let len = u32::try_from(item.len()).expect("a frame holds at most 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(item);
}

/// Frames every item into one buffer.
pub fn encode<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        push(&mut out, item);
    }
    out
}

/// A byte stream that does not end on a frame boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedFrame {
    /// Bytes left over after the last whole frame.
    pub trailing: usize,
}

impl std::fmt::Display for TruncatedFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the framed data ends in the middle of a frame ({} stray bytes)",
            self.trailing
        )
    }
}

impl std::error::Error for TruncatedFrame {}

/// Splits a whole buffer into its frames.
pub fn decode(mut data: &[u8]) -> Result<Vec<&[u8]>, TruncatedFrame> {
    let mut items = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err(TruncatedFrame {
                trailing: data.len(),
            });
        }
        let len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        if data.len() - 4 < len {
            return Err(TruncatedFrame {
                trailing: data.len(),
            });
        }
        items.push(&data[4..4 + len]);
        data = &data[4 + len..];
    }
    Ok(items)
}

/// Cuts frames out of a stream that arrives in pieces of any size, holding
/// only the one unfinished frame in memory.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk`, calling `item` for every frame it completes.
    pub fn feed(&mut self, mut chunk: &[u8], mut item: impl FnMut(&[u8])) {
        // Fast path: whole frames straight from the chunk, no copying.
        if self.buf.is_empty() {
            while chunk.len() >= 4 {
                let len = u32::from_le_bytes(chunk[..4].try_into().expect("4 bytes")) as usize;
                if chunk.len() - 4 < len {
                    break;
                }
                item(&chunk[4..4 + len]);
                chunk = &chunk[4 + len..];
            }
        }
        self.buf.extend_from_slice(chunk);
        loop {
            if self.buf.len() < 4 {
                return;
            }
            let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
            if self.buf.len() - 4 < len {
                return;
            }
            item(&self.buf[4..4 + len]);
            self.buf.drain(..4 + len);
        }
    }

    /// Ends the stream: an error if it stopped inside a frame.
    pub fn finish(self) -> Result<(), TruncatedFrame> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TruncatedFrame {
                trailing: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let items: Vec<&[u8]> = vec![b"a", b"", b"hello"];
        let data = encode(items.iter().copied());
        assert_eq!(decode(&data).unwrap(), items);
        assert!(decode(&data[..data.len() - 1]).is_err());
    }

    #[test]
    fn decoder_reassembles_frames_split_across_chunks() {
        let data = encode([&b"first"[..], b"second", b"", b"third"]);
        for step in 1..data.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in data.chunks(step) {
                d.feed(chunk, |i| got.push(i.to_vec()));
            }
            d.finish().unwrap();
            assert_eq!(
                got,
                vec![
                    b"first".to_vec(),
                    b"second".to_vec(),
                    b"".to_vec(),
                    b"third".to_vec()
                ]
            );
        }
        let mut d = Decoder::new();
        d.feed(&data[..3], |_| {});
        assert!(d.finish().is_err());
    }
}
