//! The `worker` command, built by this crate so its end-to-end tests can
//! run it as a real process (signals, CPU use, the control socket). The
//! same function as the `worker` binary's `main`.

fn main() -> std::process::ExitCode {
    worker::cli::main()
}
