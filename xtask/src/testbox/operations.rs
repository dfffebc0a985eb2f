//! Operations on the first host, after the rest: an image update with health-gated rollback,
//! and the failures the host tells about.
//!
//! A container opts in with `AutoUpdate=local` and has a `HealthCmd=`; its image is made in its
//! user's store from the box's busybox tree (`podman import`: no registry here). Before the
//! image exists the container fails, which a webhook receiver on the host hears about, and then
//! its recovery. A newer healthy image is updated to (`quadsync update`); a newer broken one
//! (its health check fails) is rolled back, heard about, and recovered from by the next good
//! update. The metrics file counts both.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tailpod_core::located::at;

use super::machine::Machine;
use super::scenario::{check, container, podman_as, push, serves, sync_now, wait_for, write};
use super::{Layout, tailnet};

const APP: &str = "boxapp";
const PORT: u16 = 18095;
const METRICS: &str = "/var/lib/quadsync/metrics.prom";

/// The request bodies a receiver got.
type Bodies = Arc<Mutex<Vec<String>>>;

/// A webhook receiver on the lab's address: every request body it gets, answered 200.
fn receiver() -> Result<(String, Bodies), String> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind((tailnet::LAB_IP, 0))
        .map_err(|e| format!("a webhook receiver on {}: {e}", tailnet::LAB_IP))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    let length = head.lines().find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok()
                    });
                    body.len() >= length.unwrap_or(0)
                });
                if n == 0 || complete {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            if let Some((_, body)) = text.split_once("\r\n\r\n") {
                received.lock().unwrap_or_else(|e| e.into_inner()).push(body.to_owned());
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Ok((format!("http://{address}/hook/box-token"), bodies))
}

/// The events received so far, as (event, kind, subject).
fn events(bodies: &Mutex<Vec<String>>) -> Vec<(String, String, String)> {
    let bodies = bodies.lock().unwrap_or_else(|e| e.into_inner());
    bodies
        .iter()
        .filter_map(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .map(|v| {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (field("event"), field("kind"), field("subject"))
        })
        .collect()
}

fn heard(bodies: &Mutex<Vec<String>>, event: &str, kind: &str) -> bool {
    events(bodies).iter().any(|(e, k, s)| e == event && k == kind && s == APP)
}

/// Makes the image `localhost/boxapp:latest` in the app user's store: the busybox tree with
/// an index saying `version`, and the file its health check reads unless `healthy` is false.
fn image(layout: &Layout, machine: &Machine, version: &str, healthy: bool) -> Result<(), String> {
    let tree = layout.rootfs.join(format!("opt/box/{APP}-{version}"));
    let _ = std::fs::remove_dir_all(&tree);
    super::run(
        "cp",
        &["-a", &layout.rootfs.join("opt/box/busybox").to_string_lossy(), &tree.to_string_lossy()],
    )?;
    write(&tree.join("www/index.html"), &format!("{APP} {version}\n"))?;
    if healthy {
        write(&tree.join("healthy"), "ok\n")?;
    }
    let tarball = format!("/opt/box/{APP}-{version}.tar");
    machine.exec(&["tar", "-C", &format!("/opt/box/{APP}-{version}"), "-cf", &tarball, "."])?;
    machine.exec(&["chmod", "644", &tarball])?;
    podman_as(machine, APP, &["import", "-q", &tarball, &format!("localhost/{APP}:latest")])
        .map(drop)
}

/// Makes image `version` and runs `quadsync update boxapp`: its one line of outcome must end
/// with `outcome`, and `serving` be what the container serves after.
fn update_to(
    layout: &Layout,
    machine: &Machine,
    (version, healthy): (&str, bool),
    outcome: &str,
    serving: &str,
) -> Result<String, String> {
    image(layout, machine, version, healthy)?;
    let said = machine.exec(&["quadsync", "update", APP])?.trim().to_owned();
    check(
        said.ends_with(&format!(": {outcome}")),
        &format!("quadsync update to {version}: {said:?}, not {outcome}"),
    )?;
    let served = serves(machine, PORT)?;
    check(served.contains(&format!("{APP} {serving}")), &format!("after {version}: {served:?}"))?;
    Ok(said)
}

/// Reads the metrics file the last sync or update wrote.
fn metric(layout: &Layout, line_start: &str) -> Result<String, String> {
    let path = layout.rootfs.join(METRICS.trim_start_matches('/'));
    let text = std::fs::read_to_string(&path).map_err(at(&path))?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(str::to_owned)
        .ok_or_else(|| format!("no {line_start} in the metrics:\n{text}"))
}

pub fn test(layout: &Layout, machine: &Machine) -> Result<(), String> {
    let (url, bodies) = receiver()?;
    // config.env is root's: appended in place, as an admin would.
    let config = layout.rootfs.join("etc/quadsync/config.env");
    let mut text = std::fs::read_to_string(&config).map_err(|e| format!("config.env: {e}"))?;
    text.push_str(&format!("QUADSYNC_NOTIFY_URL={url}\nQUADSYNC_METRICS_FILE={METRICS}\n"));
    write(&config, &text)?;

    let defs = layout.work.join("defs");
    let spec = container(APP, PORT)
        .replace("Rootfs=/opt/box/busybox:O\n", &format!("Image=localhost/{APP}:latest\nAutoUpdate=local\n"))
        .replace(
            "RunInit=true\n",
            "RunInit=true\nHealthCmd=/bin/cat /healthy\nHealthInterval=2s\nHealthRetries=2\nHealthTimeout=2s\nHealthOnFailure=kill\n",
        );
    write(&defs.join(format!("{APP}.container")), &spec)?;
    push(&defs, "an auto-updated container with a health check")?;
    // Its image does not exist yet: it fails, and the host says so.
    let _ = sync_now(machine);
    let enabled = machine.exec(&[
        "systemctl",
        "--user",
        "-M",
        &format!("{APP}@"),
        "is-enabled",
        "podman-auto-update.timer",
    ])?;
    check(
        enabled.trim() == "enabled",
        &format!("podman-auto-update.timer is {enabled:?} for {APP}"),
    )?;
    let unit = machine
        .exec(&["cat", &format!("/home/{APP}/.config/containers/systemd/{APP}.container")])?;
    check(
        unit.contains("Notify=healthy"),
        "the health-checked container did not get Notify=healthy",
    )?;
    wait_for("the failing container to be reported", Duration::from_secs(90), || {
        let _ = sync_now(machine);
        Ok(heard(&bodies, "problem", "container_failing"))
    })?;
    eprintln!("box: operations: {APP} without its image: the webhook heard container_failing");
    image(layout, machine, "v1", true)?;
    wait_for(&format!("{APP} v1 to serve"), Duration::from_secs(60), || {
        Ok(serves(machine, PORT).is_ok_and(|s| s.contains(&format!("{APP} v1"))))
    })?;
    wait_for("the recovery to be reported", Duration::from_secs(60), || {
        let _ = sync_now(machine);
        Ok(heard(&bodies, "recovered", "container_failing"))
    })?;

    let outcome = update_to(layout, machine, ("v2", true), "updated", "v2")?;
    eprintln!("box: operations: {outcome}");
    // v3 fails its health check: rolled back, v2 serves on.
    let outcome = update_to(layout, machine, ("v3", false), "rolled back", "v2")?;
    check(
        heard(&bodies, "problem", "update_rolled_back"),
        "the webhook did not hear of the rollback",
    )?;
    let status = machine.exec(&["quadsync", "status"])?;
    check(
        status.contains("rolled back"),
        &format!("status does not show the rollback:\n{status}"),
    )?;
    eprintln!("box: operations: {outcome}; the webhook heard it");
    let outcome = update_to(layout, machine, ("v4", true), "updated", "v4")?;
    check(
        heard(&bodies, "recovered", "update_rolled_back"),
        "the webhook did not hear the recovery",
    )?;
    check(
        metric(layout, &format!("quadsync_image_rollbacks_total{{container=\"{APP}\"}}"))?
            .ends_with(" 1"),
        "the metrics do not count the rollback",
    )?;
    check(
        metric(layout, &format!("quadsync_image_updates_total{{container=\"{APP}\"}}"))?
            .ends_with(" 2"),
        "the metrics do not count the two updates",
    )?;
    let prometheus = machine.exec(&["quadsync", "status", "--format", "prometheus"])?;
    check(
        prometheus.contains(&format!(
            "quadsync_container_state{{container=\"{APP}\",state=\"active\"}} 1"
        )),
        &format!("status --format prometheus:\n{prometheus}"),
    )?;
    // Containers stopped on request (restarts, the reboot before) are not failures.
    let others: Vec<_> = events(&bodies)
        .into_iter()
        .filter(|(_, kind, subject)| kind == "container_failing" && subject != APP)
        .collect();
    check(
        others.is_empty(),
        &format!("containers stopped on request were told as failing: {others:?}"),
    )?;
    let sent = bodies.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
    check(!sent.contains("box-token"), "a notification carried the webhook's URL")?;
    eprintln!(
        "box: operations: {outcome}; {} notification(s) received; the metrics count 2 updates and 1 rollback",
        events(&bodies).len()
    );
    Ok(())
}
