//! The `ipns-registry` binary: parses the command line and runs the chosen command.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
