//! `cargo bench -p tailmint`: the end-to-end time of one mint (process start, token, key, file,
//! stale-device check) against the loopback API server, and the size of the binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use tailnet_lab::api::{ApiConfig, ApiServer};

const RUNS: usize = 30;

fn main() {
    let api = ApiServer::start(ApiConfig::default()).expect("API server starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("oauth.env");
    let defaults = ApiConfig::default();
    std::fs::write(
        &config,
        format!(
            "TS_API_CLIENT_ID={}\nTS_API_CLIENT_SECRET={}\n",
            defaults.client_id, defaults.client_secret
        ),
    )
    .expect("config written");
    // As the config must be: tailmint refuses one others may write, and warns if they may read.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))
        .expect("config made private");
    let output = dir.path().join("web.env");
    let binary = env!("CARGO_BIN_EXE_tailmint");

    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let status = Command::new(binary)
                .args(["--config", config.to_str().expect("UTF-8 path"), "--tag", "tag:tailpod"])
                .args(["--hostname", "web", "--output", output.to_str().expect("UTF-8 path")])
                .args(["--api-url", api.url()])
                .env_clear()
                .env("RUST_LOG", "warn")
                .status()
                .expect("tailmint runs");
            assert!(status.success(), "tailmint failed");
            started.elapsed()
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "tailmint mint, end to end against loopback ({RUNS} runs): min {:.2} ms, median {:.2} ms, max {:.2} ms",
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1])
    );
    let size = std::fs::metadata(binary).expect("binary exists").len();
    println!("tailmint binary ({binary}): {size} bytes ({:.2} MiB)", size as f64 / 1048576.0);
}
