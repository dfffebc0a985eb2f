//! Real podman, rootful and rootless, with ts4nsnet as its network command
//! (`--network slirp4netns --network-cmd-path=ts4nsnet`), against a lab tailnet on loopback.
//!
//! Needs root, podman and runc; skips, saying why, otherwise. Knobs this kind of machine needs
//! (see `shared/box/README.md`): runc rather than crun and explicit ulimits (crun cannot set
//! RLIMIT_NOFILE in a nested container), and `/dev/net/tun` at 0666 (its usual mode, which
//! rootless podman needs: ts4nsnet runs as root of podman's user namespace, not of the host).
//! No registry: containers run from a busybox root filesystem (`--rootfs`).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod support;
use support::{Internet, Lab, SERVER_V4};

const TEST_USER: &str = "ts4nsnet-podman";

fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let found =
        |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    let (podman, runc) = (found("podman"), found("runc"));
    if !(root && podman && runc) {
        tailnet_lab::skip(&format!(
            "needs root, podman and runc (root: {root}, podman: {podman}, runc: {runc})"
        ));
    }
    root && podman && runc
}

/// A directory the test user can read: busybox's root filesystem and a copy of ts4nsnet.
struct Workspace(PathBuf);

impl Workspace {
    /// Owned by `user`, when given: podman writes into a `--rootfs` directory (`/etc/mtab`).
    fn new(name: &str, user: Option<&str>) -> Workspace {
        let dir = std::env::temp_dir().join(format!("ts4nsnet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::create_dir_all(rootfs.join("www")).unwrap();
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        let busybox =
            ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists());
        std::fs::copy(busybox.expect("busybox-static is installed"), rootfs.join("bin/busybox"))
            .unwrap();
        for applet in ["sh", "nc", "httpd", "nslookup", "ping", "sleep", "cat", "echo", "printf"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("www/hello"), "served from inside the container\n").unwrap();
        std::fs::copy(env!("CARGO_BIN_EXE_ts4nsnet"), dir.join("ts4nsnet")).unwrap();
        for path in [&dir, &rootfs] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        if let Some(user) = user {
            let owner = format!("{user}:");
            let chown = Command::new("chown").args(["-R", &owner]).arg(&rootfs).status().unwrap();
            assert!(chown.success());
        }
        Workspace(dir)
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs podman (as `user`, when given) with ts4nsnet as its network command.
fn podman(ws: &Workspace, user: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Output {
    let network_cmd = format!("--network-cmd-path={}", ws.0.join("ts4nsnet").display());
    let mut command = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", "podman"]);
            let uid = nix::unistd::User::from_name(user).unwrap().unwrap().uid;
            c.env("XDG_RUNTIME_DIR", format!("/run/user/{uid}")).current_dir("/");
            c
        }
        None => Command::new("podman"),
    };
    command.args(["--runtime", "runc", &network_cmd]).args(args).envs(env.iter().copied());
    command.output().unwrap()
}

/// `podman run` options every container here uses; the command follows.
fn run_args<'a>(ws: &'a Workspace, extra: &[&'a str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--ulimit=nofile=1024:1024",
        "--ulimit=nproc=4096:4096",
        "--network=slirp4netns",
        "--dns=100.100.100.100",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    args.extend(["--rootfs".to_owned(), ws.0.join("rootfs").display().to_string()]);
    args
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A user for rootless podman, with subordinate IDs, made once and kept (like the box's users).
fn rootless_user() -> &'static str {
    if nix::unistd::User::from_name(TEST_USER).unwrap().is_none() {
        let made = Command::new("useradd")
            .args(["--create-home", "--shell", "/usr/sbin/nologin", TEST_USER])
            .status()
            .unwrap();
        assert!(made.success());
    }
    let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !subuid.lines().any(|l| l.starts_with(&format!("{TEST_USER}:"))) {
        let added = Command::new("usermod")
            .args(["--add-subuids", "300000-365535", "--add-subgids", "300000-365535", TEST_USER])
            .status()
            .unwrap();
        assert!(added.success());
    }
    let uid = nix::unistd::User::from_name(TEST_USER).unwrap().unwrap().uid;
    let runtime_dir = PathBuf::from(format!("/run/user/{uid}"));
    std::fs::create_dir_all(&runtime_dir).unwrap();
    nix::unistd::chown(&runtime_dir, Some(uid), None).unwrap();
    std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tun = std::fs::metadata("/dev/net/tun").unwrap();
    if tun.permissions().mode() & 0o777 != 0o666 {
        std::fs::set_permissions("/dev/net/tun", std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    TEST_USER
}

/// What [`internet_server`] answers.
const INTERNET_PAGE: &str = "served from the internet";

/// An HTTP server in the internet's namespace, answering every request with [`INTERNET_PAGE`]
/// while the test runs.
fn internet_server(internet: &Internet) -> SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = internet.netns.run(|| std::net::TcpListener::bind((SERVER_V4, 0)).unwrap());
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read(&mut [0u8; 4096]);
            let page = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{INTERNET_PAGE}",
                INTERNET_PAGE.len()
            );
            let _ = stream.write_all(page.as_bytes());
        }
    });
    addr
}

/// One container through its whole life: out to the peer by name over TCP, ping and DNS, and to
/// the internet through the host; the peer in to its HTTP server; gone from the tailnet once
/// stopped.
fn container_on_the_tailnet(user: Option<&str>, hostname: &str) {
    let Lab { rt, net, key, url, peer } = Lab::start();
    let ws = Workspace::new(hostname, user);
    let env = [("TS_AUTHKEY", key.as_str()), ("TS_HOSTNAME", hostname), ("TS_CONTROL_URL", &url)];

    let internet = Internet::start();
    let public = internet_server(&internet);

    // ping -4: the lab peer answers ICMP echo over IPv4 only. nc's input stays open a second:
    // busybox nc stops reading once its input ends, and may miss an echo still on its way.
    // Then the internet, through the host (egress), from the same container (busybox's static
    // wget crashes in NSS without the libraries, so nc speaks HTTP).
    let script = format!(
        "(echo hello; sleep 1) | nc -w 5 peer 7 && ping -4 -c 1 -W 5 peer && nslookup peer.lab.ts.net && (printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1) | nc -w 5 {} {}",
        public.ip(),
        public.port()
    );
    let script = script.as_str();
    let mut args = run_args(&ws, &["--rm", "--cap-add=NET_RAW"]);
    args.extend(["/bin/sh", "-c", script].map(String::from));
    let out = podman(&ws, user, &env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("hello"), "TCP echo by name: {said}");
    assert!(said.contains("1 packets received"), "ping: {said}");
    assert!(said.contains(&format!("Address: {}", peer.ipv4)), "DNS: {said}");
    assert!(said.contains(INTERNET_PAGE), "the internet through the host: {said}");

    // A server inside the container, reached from the peer with no port declared anywhere.
    // Under its own name: the first container's node may not have left yet.
    let name = format!("{hostname}-server");
    let env = [env[0], ("TS_HOSTNAME", &name), env[2]];
    let mut args = run_args(&ws, &["-d", "--replace", "--name", &name]);
    args.extend(["/bin/httpd", "-f", "-p", "8080", "-h", "/www"].map(String::from));
    let out = podman(&ws, user, &env, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out));
    let ours = net.control.nodes().into_iter().find(|n| n.hostname == name).expect("joined");
    let page = rt.block_on(async {
        let stream = peer.tcp_connect(SocketAddr::new(ours.ipv4.into(), 8080)).await?;
        stream.send(b"GET /hello HTTP/1.0\r\n\r\n").await.map_err(|e| e.to_string())?;
        let mut page = Vec::new();
        while let Ok(Ok(data)) =
            tokio::time::timeout(Duration::from_secs(10), stream.recv_bytes()).await
        {
            if data.is_empty() {
                break;
            }
            page.extend_from_slice(&data);
        }
        Ok::<_, String>(String::from_utf8_lossy(&page).into_owned())
    });
    let stopped = podman(&ws, user, &[], &["rm", "-f", "-t", "2", &name]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    let page = page.unwrap();
    assert!(page.contains("served from inside the container"), "{page}");

    // Stopping the container ends ts4nsnet, and the ephemeral node leaves.
    let gone = rt.block_on(
        net.control.wait_for(Duration::from_secs(20), |n| n.iter().all(|n| n.hostname == "peer")),
    );
    assert!(gone.is_ok(), "the container's node stayed: {gone:?}");
    rt.block_on(peer.shutdown());
}

#[test]
fn rootful_podman_puts_a_container_on_the_tailnet() {
    if can_run() {
        container_on_the_tailnet(None, "rootful");
    }
}

#[test]
fn rootless_podman_puts_a_container_on_the_tailnet() {
    if can_run() {
        container_on_the_tailnet(Some(rootless_user()), "rootless");
    }
}
