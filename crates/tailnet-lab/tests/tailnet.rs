//! Two real tailscale-rs nodes form a tailnet through the lab control server and DERP relay.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tailnet_lab::node::LabPeer;
use tailnet_lab::{AuthKey, Tailnet};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_reach_each_other_and_ephemeral_nodes_leave() {
    let _ = env_logger::builder().is_test(true).try_init();
    let net = Tailnet::start(LOOPBACK).await.unwrap();
    let key = net.control.new_auth_key(AuthKey { reusable: true, ephemeral: true, tags: vec![] });
    let url = net.control.url().to_owned();

    let mut alpha = LabPeer::join(&url, &key, "alpha", true).await.unwrap();
    alpha.serve_echo(7).await.unwrap();
    let beta = LabPeer::join(&url, &key, "beta", true).await.unwrap();
    assert_eq!((alpha.hostname.as_str(), beta.hostname.as_str()), ("alpha", "beta"));
    assert_ne!(alpha.ipv4, beta.ipv4);

    let stream = within("TCP connect", beta.tcp_connect(SocketAddr::new(alpha.ipv4.into(), 7)))
        .await
        .unwrap();
    stream.send(b"over the tailnet").await.unwrap();
    let echoed = within("TCP echo", stream.recv_bytes()).await.unwrap();
    assert_eq!(&echoed[..], b"over the tailnet");

    let udp = beta.udp_bind(4000).await.unwrap();
    udp.send_to(SocketAddr::new(alpha.ipv4.into(), 7), b"datagram").await.unwrap();
    let (from, data) = within("UDP echo", udp.recv_from_bytes()).await.unwrap();
    assert_eq!((from, &data[..]), (SocketAddr::new(alpha.ipv4.into(), 7), &b"datagram"[..]));

    // A second node asking for a taken name is renamed, as Tailscale does.
    let twin = LabPeer::join(&url, &key, "alpha", true).await.unwrap();
    assert_eq!(twin.hostname, "alpha-1");

    twin.shutdown().await;
    beta.shutdown().await;
    let left = net
        .control
        .wait_for(Duration::from_secs(20), |nodes| nodes.iter().all(|n| n.hostname == "alpha"))
        .await;
    let nodes = left.unwrap_or_else(|nodes| panic!("ephemeral nodes stayed: {nodes:?}"));
    assert_eq!(nodes.len(), 1);
    alpha.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_auth_key_is_refused() {
    let net = Tailnet::start(LOOPBACK).await.unwrap();
    let error = LabPeer::join(net.control.url(), "tskey-auth-wrong", "intruder", true).await;
    assert!(error.is_err(), "joined with a wrong key");
    assert!(net.control.nodes().is_empty());
}
