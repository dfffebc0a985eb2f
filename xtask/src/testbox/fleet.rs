//! Two hosts, one repo: a fleet. After the main scenario, a second box boots from the same
//! checkout (`build-ign --host`), the same repo and the same lab tailnet.
//!
//! * `fleet/common/` is in both hosts' `QUADSYNC_PATHS`: its tailnet container runs on both,
//!   its node named per host (`TS_HOSTNAME=beacon-{{.Host}}`, through tailmint's sudo rule), and
//!   says which host it is on (`{{.Host}}` in its command).
//! * `fleet/hosts/NAME/` is one host's own: a container on the tailnet that moves from the first
//!   host to the second by a `git mv`, and keeps its name; a plain one on the second only.
//! * `quadsync check --all-hosts` passes the repo first, as a fleet's CI would.
//!
//! The move is synced on the new host first, the hard order: its node meets the old one still
//! online, is refused as a collision by ts4nsnet, and restarts until the old host has removed
//! the container and tailmint replaces the offline node. The time from the push to the
//! container answering from the second host is printed.

use std::time::{Duration, Instant};

use super::machine::{self, Machine};
use super::scenario::{
    active, check, container, git, ignition, push, quadsync_binary, serves, sync_now, user_exists,
    wait_for, write,
};
use super::serve::serve;
use super::tailnet::{self, FLEET_CONTAINERS, Lab};
use super::{Layout, rootfs, run};

/// The second host deploys only its fleet share.
const SECOND_HOST_PATHS: &str = "fleet/common,fleet/hosts/%H";

/// A busybox web server on the tailnet that answers with `NAME on HOST` (from a tmpfs: the
/// image's files are not the container's to write).
fn on_tailnet(name: &str, extra: &str) -> String {
    container(name, 0)
        .replace("PublishPort=127.0.0.1:0:8080\n", "")
        .replace(
            "Exec=/bin/httpd -f -p 8080 -h /www\n",
            &format!(
                "Tmpfs=/srv\nExec=/bin/sh -c 'echo {name} on {{{{.Host}}}} > /srv/index.html && exec /bin/httpd -f -p 8080 -h /srv'\n"
            ),
        )
        + extra
}

/// What `NAME:8080` on the tailnet answers, seen from a fresh node on the lab's side.
fn answer(lab: &Lab, node: &str) -> Result<String, String> {
    lab.probe(&format!("{node}:8080"), "GET / HTTP/1.0\r\n\r\n")
}

fn answers(lab: &Lab, node: &str, wanted: &str, limit: Duration) -> Result<Duration, String> {
    wait_for(&format!("{node} to answer {wanted:?}"), limit, || {
        Ok(answer(lab, node)?.contains(wanted))
    })
}

/// Boots the second host: a fresh rootfs, its own Ignition config from the same checkout.
fn boot_second(second: &Layout, lab: &Lab) -> Result<Machine, String> {
    let release_url = serve(second.work.join("dist"))?;
    let config = ignition(second, &release_url, lab, SECOND_HOST_PATHS)?;
    rootfs::fresh(second)?;
    rootfs::tweak(second)?;
    rootfs::apply_ignition(second, &config)?;
    let network = tailnet::connect_while_booting(second);
    let machine = machine::boot(second, &[])?;
    network.join().map_err(|_| "the network thread panicked")??;
    Ok(machine)
}

/// The fleet test; returns how long the move took, from the push to the container answering
/// from the second host.
pub fn test(first: &Layout, a: &Machine, lab: &Lab) -> Result<Duration, String> {
    let second = first.second_host();
    let (a_name, b_name) = (first.name, second.name);
    let [beacon, mover] = FLEET_CONTAINERS;
    let defs = first.work.join("defs");
    let per_host_name = "\n[Service]\nEnvironment=TS_HOSTNAME={{.Name}}-{{.Host}}\n";
    let files = [
        (format!("fleet/common/tailscale/{beacon}.container"), on_tailnet(beacon, per_host_name)),
        (format!("fleet/hosts/{a_name}/tailscale/{mover}.container"), on_tailnet(mover, "")),
        (
            format!("fleet/hosts/{b_name}/solo.container"),
            container("solo, on the second host", 18090),
        ),
    ];
    for (path, text) in &files {
        let path = defs.join(path);
        std::fs::create_dir_all(path.parent().unwrap_or(&defs)).map_err(|e| e.to_string())?;
        write(&path, text)?;
    }
    // The fleet's CI: every host's share passes, and no two nodes share a name.
    let quadsync = quadsync_binary(first)?;
    let transforms = crate::root().join("butane/transforms");
    let checked = run(
        &quadsync.to_string_lossy(),
        &[
            "check",
            "--no-generator",
            "--transforms",
            &transforms.to_string_lossy(),
            "--paths",
            SECOND_HOST_PATHS,
            "--all-hosts",
            &defs.to_string_lossy(),
        ],
    )?;
    check(
        checked.starts_with("All checks passed: 2 host(s)"),
        &format!("check --all-hosts: {checked}"),
    )?;
    push(&defs, "a fleet: a container on every host, one per host")?;

    eprintln!("box: fleet: booting {b_name}");
    let b = boot_second(&second, lab)?;
    sync_now(a)?;
    for host in [a_name, b_name] {
        answers(
            lab,
            &format!("{beacon}-{host}"),
            &format!("{beacon} on {host}"),
            Duration::from_secs(180),
        )?;
    }
    answers(lab, mover, &format!("{mover} on {a_name}"), Duration::from_secs(120))?;
    wait_for("solo to run on the second host", Duration::from_secs(60), || Ok(active(&b, "solo")))?;
    check(serves(&b, 18090)?.contains("hello from the box"), "solo does not serve")?;
    check(!user_exists(a, "solo"), "the first host deployed the second's container")?;
    check(!user_exists(&b, "hello"), "the second host deployed the first host's root")?;
    check(!user_exists(&b, mover), "the second host deployed the first's container")?;
    eprintln!(
        "box: fleet: {beacon} on both hosts as {beacon}-{a_name} and {beacon}-{b_name}; {mover} on {a_name}"
    );

    // The move: one git mv, synced on the new host first.
    std::fs::create_dir_all(defs.join(format!("fleet/hosts/{b_name}/tailscale")))
        .map_err(|e| e.to_string())?;
    git(
        &defs,
        &[
            "mv",
            &format!("fleet/hosts/{a_name}/tailscale/{mover}.container"),
            &format!("fleet/hosts/{b_name}/tailscale/{mover}.container"),
        ],
    )?;
    push(&defs, &format!("move {mover} to {b_name}"))?;
    let pushed = Instant::now();
    // A start refused as a collision is the container's, not the sync's: it must not fail.
    sync_now(&b)?;
    sync_now(a)?;
    answers(lab, mover, &format!("{mover} on {b_name}"), Duration::from_secs(180))?;
    let moved = pushed.elapsed();
    check(!user_exists(a, mover), "the old host kept the moved container's user")?;
    check(active(&b, mover), "the moved container is not active on the new host")?;
    eprintln!(
        "box: fleet: {mover} moved to {b_name}: answering there as {mover} {:.1}s after the push",
        moved.as_secs_f64()
    );
    machine::stop(&second);
    Ok(moved)
}
