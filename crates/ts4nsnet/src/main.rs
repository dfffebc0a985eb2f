//! The `ts4nsnet` command; the work is done in the library.

use std::process::ExitCode;

use ts4nsnet::cli::SlirpArgs;
use ts4nsnet::config::NodeConfig;

fn main() -> ExitCode {
    // Take the auth key out of the environment before any thread exists, so nothing this
    // process starts can inherit it unasked.
    let auth_key = std::env::var("TS_AUTHKEY").ok();
    ts4nsnet::sys::remove_env_before_threads("TS_AUTHKEY");
    let env = move |key: &str| match key {
        "TS_AUTHKEY" => auth_key.clone(),
        _ => std::env::var(key).ok(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(verb) = args.first().filter(|a| ts4nsnet::plugin::VERBS.contains(&a.as_str())) {
        init_logging();
        let mut stdin = String::new();
        if verb != "info"
            && let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin)
        {
            return ts4nsnet::plugin::respond(Err(format!("reading stdin: {e}")));
        }
        return ts4nsnet::plugin::respond(ts4nsnet::plugin::main(verb, &args[1..], &stdin, &env));
    }
    let config = NodeConfig::from_env(env);
    // `--help` must work (podman probes it); parse errors exit 2.
    let args = SlirpArgs::try_parse_checked(std::env::args_os()).unwrap_or_else(|e| e.exit());
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
            // Once, and not through the logger: the plugin's `setup` looks for this prefix.
            eprintln!("ts4nsnet: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line per event for the journal; tailscale-rs's own events only from warnings up.
fn init_logging() {
    let default = tailnode::DEFAULT_LOG_FILTER;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_timestamp(None)
        .init();
    if tailnode::INSECURE_FOR_TESTS {
        log::warn!("built for tests: {} (never run this build for real)", ts4nsnet::cli::VERSION);
    }
}
