//! The task SDK: the wasm@home task ABI (version 1) behind one trait.
//!
//! A task is a WASI command whose first argument names the mode:
//!
//! | mode      | stdin                               | stdout                  |
//! |-----------|-------------------------------------|-------------------------|
//! | `split`   | the job input                       | the unit inputs, framed |
//! | `run`     | one unit input                      | that unit's output      |
//! | `reduce`  | the accepted unit outputs, framed   | the job output          |
//! | `compare` | two unit outputs, framed            | nothing; exit 0 = same  |
//!
//! A frame is a u32 little-endian length and that many bytes. A task that
//! does not implement an optional mode exits with status 64
//! ([`UNSUPPORTED`]), and the coordinator uses the default for it.
//!
//! ```no_run
//! struct Double;
//! impl task_sdk::Task for Double {
//!     fn run(&self, input: &[u8]) -> Result<Vec<u8>, String> {
//!         Ok(input.iter().map(|b| b.wrapping_mul(2)).collect())
//!     }
//! }
//! fn main() { task_sdk::main(Double) }
//! ```

use std::io::{Read, Write};

/// The exit status of a mode the task does not implement.
pub const UNSUPPORTED: i32 = 64;

/// A task's modes. Only `run` is required.
pub trait Task {
    /// Cuts the job input into unit inputs, calling `emit` once per unit.
    fn split(&self, input: &[u8], emit: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let _ = (input, emit);
        Err(unsupported())
    }

    /// Computes one unit's output from its input.
    fn run(&self, input: &[u8]) -> Result<Vec<u8>, String>;

    /// Combines the accepted unit outputs, in unit order, into the job output.
    fn reduce(&self, outputs: Vec<&[u8]>) -> Result<Vec<u8>, String> {
        let _ = outputs;
        Err(unsupported())
    }

    /// Whether two unit outputs mean the same result.
    fn compare(&self, a: &[u8], b: &[u8]) -> Result<bool, String> {
        let _ = (a, b);
        Err(unsupported())
    }
}

const UNSUPPORTED_MESSAGE: &str = "mode not supported by this task";

fn unsupported() -> String {
    UNSUPPORTED_MESSAGE.to_string()
}

/// Appends one frame holding `item` to `out`.
pub fn push_frame(out: &mut Vec<u8>, item: &[u8]) {
    out.extend_from_slice(&(item.len() as u32).to_le_bytes());
    out.extend_from_slice(item);
}

/// Splits framed data into its items.
pub fn frames(mut data: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut items = Vec::new();
    while !data.is_empty() {
        if data.len() < 4 {
            return Err("framed input ends inside a length prefix".into());
        }
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let rest = &data[4..];
        if rest.len() < len {
            return Err("framed input ends inside a frame".into());
        }
        items.push(&rest[..len]);
        data = &rest[len..];
    }
    Ok(items)
}

/// Reads the mode from the arguments, runs it over stdin and writes stdout.
/// Exits 0 on success, 1 on failure (or "different" in `compare`), 64 for a
/// mode the task does not implement, 2 for a bad command line.
pub fn main(task: impl Task) -> ! {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        fail(&format!("cannot read stdin: {e}"), 1);
    }
    let result = match mode.as_str() {
        "split" => {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let mut io_error = None;
            let result = task.split(&input, &mut |unit| {
                if io_error.is_none() {
                    let len = (unit.len() as u32).to_le_bytes();
                    if let Err(e) = out.write_all(&len).and_then(|_| out.write_all(unit)) {
                        io_error = Some(e);
                    }
                }
            });
            if let Some(e) = io_error.or_else(|| out.flush().err()) {
                fail(&format!("cannot write stdout: {e}"), 1);
            }
            result.map(|()| Vec::new())
        }
        "run" => task.run(&input),
        "reduce" => frames(&input).and_then(|items| task.reduce(items)),
        "compare" => frames(&input).and_then(|items| match items.as_slice() {
            [a, b] => task.compare(a, b).map(|same| {
                if !same {
                    std::process::exit(1)
                }
                Vec::new()
            }),
            _ => Err(format!(
                "compare takes 2 framed outputs, got {}",
                items.len()
            )),
        }),
        other => fail(
            &format!("unknown mode {other:?}: expected split, run, reduce or compare"),
            2,
        ),
    };
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&output).and_then(|_| stdout.flush()) {
                fail(&format!("cannot write stdout: {e}"), 1);
            }
            std::process::exit(0)
        }
        Err(message) if message == UNSUPPORTED_MESSAGE => fail(&message, UNSUPPORTED),
        Err(message) => fail(&message, 1),
    }
}

fn fail(message: &str, status: i32) -> ! {
    let _ = writeln!(std::io::stderr(), "{message}");
    std::process::exit(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut data = Vec::new();
        push_frame(&mut data, b"ab");
        push_frame(&mut data, b"");
        assert_eq!(frames(&data).unwrap(), vec![&b"ab"[..], b""]);
        assert!(frames(&data[..3]).is_err());
    }
}
