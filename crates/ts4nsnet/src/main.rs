//! The `ts4nsnet` command; the work is done in the library.

use std::process::ExitCode;

use clap::Parser;
use ts4nsnet::cli::SlirpArgs;
use ts4nsnet::config::NodeConfig;

fn main() -> ExitCode {
    // Read the auth key and drop it from the environment before any thread exists, so nothing
    // this process starts can inherit it.
    let config = NodeConfig::from_env(|key| std::env::var(key).ok());
    ts4nsnet::sys::remove_env_before_threads("TS_AUTHKEY");
    // `--help` must work (podman probes it); parse errors exit 2.
    let args = SlirpArgs::parse();
    init_logging();
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ts4nsnet: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("ts4nsnet: starting the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    let outcome = runtime.block_on(ts4nsnet::run::run(args, config));
    // The library keeps blocking helpers (its network monitor) that never return by
    // themselves; do not wait on them forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("ts4nsnet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line per event for the journal; tailscale-rs's own events only from warnings up.
fn init_logging() {
    let default = "info,tracing=off,kameo=warn,ts_=warn,rustls=warn,hyper=warn,h2=warn";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp(None)
        .init();
}
