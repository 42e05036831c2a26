//! The `worker` command: what a volunteer runs (see [`worker::cli`]).

fn main() -> std::process::ExitCode {
    worker::cli::main()
}
