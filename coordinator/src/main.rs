//! The `coordinator` command (see [`coordinator::cli`]).

fn main() -> std::process::ExitCode {
    coordinator::cli::main()
}
