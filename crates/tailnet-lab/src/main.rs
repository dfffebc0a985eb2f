//! Run the lab tailnet, or a peer on it, by hand.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use tailnet_lab::api::{ApiConfig, ApiServer, Route, Scripted};
use tailnet_lab::node::LabPeer;
use tailnet_lab::{AuthKey, Tailnet};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "A loopback Tailscale control server, DERP relay and peer, for tests only")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve control on --listen and DERP on the next port; print the control URL and an auth key.
    ///
    /// SIGUSR1 starts an API outage: the next token and key requests fail with 500 and 429.
    /// SIGHUP takes control and DERP down for --outage-secs, cutting every connection, then
    /// brings them back on the same ports with the same state.
    Serve {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where DERP listens (default: same address, any port).
        #[arg(long)]
        derp_listen: Option<SocketAddr>,
        /// Also serve Tailscale's API here (for tailmint); the keys it mints join this tailnet.
        #[arg(long)]
        api_listen: Option<SocketAddr>,
        /// Tags the API's OAuth client owns (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "tag:tailpod")]
        api_tags: Vec<String>,
        /// How long a SIGHUP outage of control and DERP lasts, in seconds.
        #[arg(long, default_value_t = 5)]
        outage_secs: u64,
    },
    /// Join a tailnet, send a request to a peer over TCP and print the answer, then leave.
    Probe {
        #[arg(long)]
        control_url: String,
        /// The auth key (or set TS_AUTHKEY).
        #[arg(long, env = "TS_AUTHKEY", hide_env_values = true)]
        auth_key: String,
        #[arg(long, default_value = "lab-probe")]
        hostname: String,
        /// NAME:PORT (a tailnet name, resolved from the netmap) or IP:PORT.
        #[arg(long)]
        to: String,
        /// What to send once connected.
        #[arg(long, default_value = "GET / HTTP/1.0\r\n\r\n")]
        send: String,
    },
    /// Join a tailnet and answer TCP echo, UDP echo and ping until interrupted.
    Node {
        #[arg(long)]
        control_url: String,
        /// The auth key (or set TS_AUTHKEY).
        #[arg(long, env = "TS_AUTHKEY", hide_env_values = true)]
        auth_key: String,
        #[arg(long, default_value = "lab-peer")]
        hostname: String,
        /// Port for TCP and UDP echo; bulk transfers (see `LabPeer::serve_bulk`) use the one two
        /// above it.
        #[arg(long, default_value_t = 7)]
        port: u16,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let default = tailnode::DEFAULT_LOG_FILTER;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { listen, derp_listen, api_listen, api_tags, outage_secs } => {
            let outage = std::time::Duration::from_secs(outage_secs);
            serve(listen, derp_listen, api_listen, api_tags, outage).await
        }
        Command::Probe { control_url, auth_key, hostname, to, send } => {
            probe(&control_url, &auth_key, &hostname, &to, &send).await
        }
        Command::Node { control_url, auth_key, hostname, port } => {
            node(&control_url, &auth_key, &hostname, port).await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tailnet-lab: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(
    listen: SocketAddr,
    derp_listen: Option<SocketAddr>,
    api_listen: Option<SocketAddr>,
    api_tags: Vec<String>,
    outage: std::time::Duration,
) -> Result<(), String> {
    let derp_listen = derp_listen.unwrap_or(SocketAddr::new(listen.ip(), 0));
    let tailnet = Tailnet::start_on(listen, derp_listen).await.map_err(|e| e.to_string())?;
    // Handled from before the addresses are printed: whoever read them may signal at once.
    // SIGUSR1: an API outage, as the box's fault test needs it. The next requests for a token
    // and for a key fail with 500 and 429 in turn, and then the API behaves again.
    let mut api_outage = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    // SIGHUP: control and DERP go away under the running nodes, as a restarted server does.
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    let key = tailnet.control.new_auth_key(AuthKey { reusable: true, ..AuthKey::default() });
    println!("control URL: {}", tailnet.control.url());
    println!("DERP: {}", tailnet.derp.addr());
    println!("STUN: {}", tailnet.derp.stun_addr());
    println!("auth key: {key}");
    let _api = match api_listen {
        Some(addr) => {
            let config = ApiConfig { client_tags: api_tags, ..ApiConfig::default() };
            let api = ApiServer::start_on(addr, config.clone()).map_err(|e| format!("API: {e}"))?;
            let api = std::sync::Arc::new(api);
            tailnet.control.accept_keys_from(api.clone());
            println!("API URL: {}", api.url());
            println!("API client: {} {}", config.client_id, config.client_secret);
            println!(
                "Headscale API key: {} (user {})",
                config.headscale_api_key, config.headscale_user
            );
            Some(api)
        }
        None => None,
    };
    // One Ctrl-C listener for the whole run, so that one pressed during an outage counts too.
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            stopped = &mut stop => return stopped.map_err(|e| e.to_string()),
            _ = hangup.recv() => {
                tailnet.suspend().await;
                println!("control and DERP outage: down for {}s", outage.as_secs());
                tokio::select! {
                    stopped = &mut stop => return stopped.map_err(|e| e.to_string()),
                    () = tokio::time::sleep(outage) => {}
                }
                tailnet.resume().await.map_err(|e| format!("after the outage: {e}"))?;
                println!("control and DERP outage: back up");
            }
            _ = api_outage.recv() => {
                if let Some(api) = &_api {
                    let failures = || {
                        (0..API_OUTAGE_FAILURES).map(|n| match n % 2 {
                            0 => Scripted::status(500, "lab outage: internal error"),
                            _ => Scripted::status(429, "lab outage: rate limited"),
                        })
                    };
                    api.script(Route::Token, failures());
                    api.script(Route::CreateKey, failures());
                    println!("API outage: the next {API_OUTAGE_FAILURES} token and key requests fail");
                }
            }
        }
    }
}

/// How many token (and key) requests an outage fails.
const API_OUTAGE_FAILURES: usize = 6;

async fn node(control_url: &str, auth_key: &str, hostname: &str, port: u16) -> Result<(), String> {
    let mut peer = LabPeer::join(control_url, auth_key, hostname, true).await?;
    peer.serve_echo(port).await?;
    let bulk = port.checked_add(2).ok_or("--port must leave room for the bulk port")?;
    peer.serve_bulk(bulk).await?;
    println!(
        "{} is {} ({}); echo on port {port}, bulk transfers on port {bulk}",
        peer.hostname, peer.ipv4, peer.ipv6
    );
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    peer.shutdown().await;
    Ok(())
}

async fn probe(
    control_url: &str,
    auth_key: &str,
    hostname: &str,
    to: &str,
    send: &str,
) -> Result<(), String> {
    let (host, port) = to.rsplit_once(':').ok_or("--to is NAME:PORT or IP:PORT")?;
    let port: u16 = port.parse().map_err(|_| format!("--to {to}: bad port"))?;
    let peer = LabPeer::join(control_url, auth_key, hostname, true).await?;
    let answer = async {
        let ip = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(_) => peer.lookup(host).await.ok_or(format!("{host} is not in the netmap"))?,
        };
        let stream = peer.tcp_connect(SocketAddr::new(ip, port)).await?;
        let request = send.replace("\\r", "\r").replace("\\n", "\n");
        tailnet_lab::node::send_all(&stream, request.as_bytes()).await?;
        let mut answer = Vec::new();
        while let Ok(Ok(data)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.recv_bytes()).await
        {
            if data.is_empty() {
                break;
            }
            answer.extend_from_slice(&data);
        }
        Ok::<_, String>(String::from_utf8_lossy(&answer).into_owned())
    }
    .await;
    peer.shutdown().await;
    let answer = answer?;
    if answer.is_empty() {
        return Err(format!("{to} answered nothing"));
    }
    print!("{answer}");
    Ok(())
}
