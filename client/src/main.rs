//! `loopctl`: the command line client of loopd. See `loopctl --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
