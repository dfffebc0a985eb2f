//! The `ts4nsnet` command; the work is done in the library.

use std::process::ExitCode;

use clap::Parser;
use ts4nsnet::cli::SlirpArgs;

fn main() -> ExitCode {
    // `--help` must work (podman probes it); parse errors exit 2.
    let args = SlirpArgs::parse();
    eprintln!(
        "ts4nsnet: the tailnet packet path is not built yet; refusing to start for {} {}",
        args.target, args.tap_name
    );
    ExitCode::FAILURE
}
