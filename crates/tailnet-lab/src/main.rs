//! Run the lab tailnet, or a peer on it, by hand.

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use tailnet_lab::node::LabPeer;
use tailnet_lab::{AuthKey, Tailnet};

#[derive(Debug, Parser)]
#[command(about = "A loopback Tailscale control server, DERP relay and peer, for tests only")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve control on --listen and DERP on the next port; print the control URL and an auth key.
    Serve {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Where DERP listens (default: same address, any port).
        #[arg(long)]
        derp_listen: Option<SocketAddr>,
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
    let default = ts4nsnet::DEFAULT_LOG_FILTER;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { listen, derp_listen } => serve(listen, derp_listen).await,
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

async fn serve(listen: SocketAddr, derp_listen: Option<SocketAddr>) -> Result<(), String> {
    let derp_listen = derp_listen.unwrap_or(SocketAddr::new(listen.ip(), 0));
    let tailnet = Tailnet::start_on(listen, derp_listen).await.map_err(|e| e.to_string())?;
    let key = tailnet.control.new_auth_key(AuthKey { reusable: true, ..AuthKey::default() });
    println!("control URL: {}", tailnet.control.url());
    println!("DERP: {}", tailnet.derp.addr());
    println!("auth key: {key}");
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())
}

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
