//! `butane`: the library's translator behind the real butane's command line.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "butane", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    args: butane::cli::Args,
}

fn main() -> ExitCode {
    match butane::cli::run(&Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
