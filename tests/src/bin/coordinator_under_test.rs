//! The `coordinator` command, built by this crate so the chaos tests can
//! run the coordinator as a real process and end it with a real SIGKILL.
//! The same command as the `coordinator` binary's (`coordinator::cli`),
//! with one addition: once `serve` listens, it prints `listening on
//! http://ADDR` on stdout, so a test that asked for port 0 learns the port.

use std::io::Write as _;

fn main() -> std::process::ExitCode {
    coordinator::cli::main_reporting(|addr| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()
    })
}
