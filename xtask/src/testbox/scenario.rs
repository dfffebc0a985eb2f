//! The end-to-end test: a host provisioned from our `tailpod.ign` deploys a definitions repo with
//! nobody touching it, puts a container on a tailnet, then follows pushes.
//!
//! 1. Builds the tools (ts4nsnet with its test-only knobs) and serves them; starts, on the host,
//!    `git daemon` with the definitions repo, the lab tailnet with Tailscale's API, and a peer.
//! 2. Builds `tailpod.ign` (Ignition 3.3.0) with a box overlay (the repo's URL, the API's client,
//!    the control server), makes the rootfs, applies the config with the real Ignition, boots it.
//! 3. Waits for `quadsync-sync.timer` to deploy the repo; checks the users (subuid ranges, linger),
//!    the rootless quadlets and what they serve.
//! 4. Checks that the container in `tailscale/` joined the lab tailnet through tailmint (the
//!    lab's Tailscale API) and ts4nsnet: the peer reaches its server by name and address, and it
//!    reaches the peer by name and a "public" server outside the box through the host's
//!    network (egress); that the pod in `tailscale/` is one node (the peer reaches it by the
//!    pod's name, its members talk over localhost) whose web server has its age-encrypted
//!    secrets; that the repo's `.volume` and `.network` are in their owners' stores; then that
//!    ts4nsnet as a netavark plugin does the same for a container of root's podman 5.
//! 5. Pushes a change (edit one, add one, delete one) and checks that only the edited one
//!    restarted, the new one runs and the deleted one's user is gone; rotates the pod's secrets
//!    (only the pod restarts) and removes the pod (its user and home go); pushes a broken
//!    commit and checks that nothing changed and `quadsync status` reports the error.
//! 6. Faults, each printing how long recovery took: the git server stops (nothing changes; the
//!    host catches up when it is back); the Tailscale API fails while a tailnet container
//!    starts (tailmint retries; nothing else restarts); quadsync is killed (-9) in the middle of
//!    a first deploy (the next sync finishes it); control and DERP restart under the tailnet
//!    container (its node reconnects, no restart); the box reboots during a deploy (it
//!    converges).

use std::path::Path;
use std::time::{Duration, Instant};

use tailpod_core::located::at;

use super::machine::{self, Machine};
use super::serve::serve;
use super::tailnet::{self, Lab, TAILNET_CONTAINER, TAILNET_POD};
use super::{Layout, rootfs, run};
use crate::build_ign::{Build, build};
use crate::dist;

/// The first host deploys the repo's root, as a host outside a fleet does, and its fleet share.
const FIRST_HOST_PATHS: &str = ".,fleet/common,?fleet/hosts/%H";

/// What the scenario measured.
#[derive(Debug, Default)]
pub struct Timings {
    pub boot: Duration,
    pub boot_to_deployed: Duration,
    /// Until the lab's peer reached the tailnet container (the peer's own join included).
    pub boot_to_tailnet: Duration,
    /// Until the tailnet container's service was up, which ts4nsnet holds back until its node
    /// is on the tailnet: by the box's own clock, from its systemd's start.
    pub boot_to_node: Duration,
    pub push_to_applied: Duration,
}

pub(super) fn container(description: &str, port: u16) -> String {
    format!(
        "[Unit]\nDescription={description}\n\n[Container]\n# No registry in the box: a busybox root filesystem, copy-on-write.\n\
         Rootfs=/opt/box/busybox:O\nExec=/bin/httpd -f -p 8080 -h /www\nPublishPort=127.0.0.1:{port}:8080\n\
         # httpd as PID 1 would ignore SIGTERM and every stop would wait 10 s.\nRunInit=true\n\n[Install]\nWantedBy=default.target\n"
    )
}

/// A container whose start takes a while, so that a fault lands while quadsync is still
/// deploying it (waiting for its restart), not after.
fn slow_container(description: &str, port: u16) -> String {
    container(description, port) + "\n[Service]\nExecStartPre=/bin/sleep 15\n"
}

/// Whether a sync is running right now.
fn syncing(machine: &Machine) -> bool {
    // `is-active` exits non-zero for "activating"; `show` answers whatever the state.
    machine
        .exec(&["systemctl", "show", "-p", "ActiveState", "--value", "quadsync-sync.service"])
        .is_ok_and(|s| s.trim() == "activating")
}

pub(super) fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut argv = vec![
        "-C",
        dir.to_str().unwrap_or_default(),
        "-c",
        "user.name=box",
        "-c",
        "user.email=box@tailpod.invalid",
    ];
    argv.extend(args);
    run("git", &argv)
}

/// Commits the working copy and pushes it to the bare repo the box fetches from.
pub(super) fn push(defs: &Path, message: &str) -> Result<(), String> {
    git(defs, &["add", "-A"])?;
    git(defs, &["commit", "-qm", message])?;
    git(defs, &["push", "-q", "origin", "main"]).map(drop)
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(at(path))
}

/// The host side: the definitions repo (bare, for the box) and a working copy.
fn repo(layout: &Layout) -> Result<(), String> {
    let bare = layout.work.join("defs.git");
    let defs = layout.work.join("defs");
    run("git", &["init", "-q", "--bare", "-b", "main", &bare.to_string_lossy()])?;
    run("git", &["init", "-q", "-b", "main", &defs.to_string_lossy()])?;
    git(&defs, &["remote", "add", "origin", &bare.to_string_lossy()])?;
    write(&defs.join("hello.container"), &with_volume(container("hello, first version", 18081)))?;
    // Companions from the repo: a volume and a network, each its owner's by name.
    write(&defs.join("hello-data.volume"), "[Volume]\nLabel=box=hello\n")?;
    write(&defs.join("keep.network"), "[Network]\nLabel=box=keep\n")?;
    write(
        &defs.join("keep.container"),
        &container("keep, never changes", 18082)
            .replace("RunInit=true\n", "RunInit=true\nNetwork=keep.network\n"),
    )?;
    write(&defs.join("web.container"), &container("web, to be deleted", 18083))?;
    // Its own node on the tailnet, through the tailscale transform: no published port.
    let on_tailnet =
        container("shop, on the tailnet", 0).replace("PublishPort=127.0.0.1:0:8080\n", "");
    std::fs::create_dir_all(defs.join("tailscale")).map_err(|e| e.to_string())?;
    write(&defs.join(format!("tailscale/{TAILNET_CONTAINER}.container")), &on_tailnet)?;
    // A sidecar timer of hello's, run by hello's own systemd.
    write(
        &defs.join("hello-tick.timer"),
        "[Unit]\nDescription=hello's tick\n\n[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=1h\n\n[Install]\nWantedBy=timers.target\n",
    )?;
    write(
        &defs.join("hello-tick.service"),
        "[Unit]\nDescription=hello's tick\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )?;
    pod_on_the_tailnet_repo(layout, &defs, "first")?;
    // The fleet's shared directory, in the first host's QUADSYNC_PATHS from the start (see
    // fleet.rs for what comes into it).
    std::fs::create_dir_all(defs.join("fleet/common")).map_err(|e| e.to_string())?;
    write(&defs.join("fleet/common/README.md"), "What every host of the fleet runs.\n")?;
    push(&defs, "three containers, a sidecar timer, companions and a pod on the tailnet")
}

/// hello's volume, named in its [Container].
fn with_volume(unit: String) -> String {
    unit.replace("RunInit=true\n", "RunInit=true\nVolume=hello-data.volume:/data\n")
}

/// The quadsync the box runs, on this side, for `secret keygen` and `encrypt`.
pub(super) fn quadsync_binary(layout: &Layout) -> Result<std::path::PathBuf, String> {
    let dist = layout.work.join("dist");
    let entries = std::fs::read_dir(&dist).map_err(at(&dist))?;
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("quadsync-")))
        .ok_or_else(|| format!("no quadsync binary in {}", dist.display()))
}

/// The age identity the box opens secrets with (made once, on this side).
fn age_key(layout: &Layout) -> Result<std::path::PathBuf, String> {
    let key = layout.work.join("age.key");
    if !key.exists() {
        let quadsync = quadsync_binary(layout)?;
        run(
            &quadsync.to_string_lossy(),
            &["secret", "keygen", "--output", &key.to_string_lossy()],
        )?;
    }
    Ok(key)
}

/// A `[Secrets]` line for `value`, encrypted as a user would with `quadsync secret encrypt`.
fn sealed(layout: &Layout, target: &[&str], value: &str) -> Result<String, String> {
    let quadsync = quadsync_binary(layout)?;
    let key = age_key(layout)?.to_string_lossy().into_owned();
    let mut args = vec!["secret", "encrypt", "--recipient", key.as_str()];
    args.extend(target);
    let mut child = std::process::Command::new(&quadsync)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(at(&quadsync))?;
    use std::io::Write as _;
    child.stdin.take().ok_or("no stdin")?.write_all(value.as_bytes()).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        false => Err(format!("quadsync secret encrypt failed: {}", out.status)),
    }
}

/// A pod in `tailscale/`, one node on the tailnet: a web server with an age secret in the
/// environment and one as a file, and a member that reaches it over localhost. `version` goes
/// into the secrets, so a new one rotates them.
fn pod_on_the_tailnet_repo(layout: &Layout, defs: &Path, version: &str) -> Result<(), String> {
    let pod = TAILNET_POD;
    write(&defs.join(format!("tailscale/{pod}.pod")), "[Pod]\n")?;
    let member =
        |description: &str| container(description, 0).replace("PublishPort=127.0.0.1:0:8080\n", "");
    let token = sealed(layout, &["TOKEN"], &format!("token-{version}"))?;
    let file = sealed(layout, &["--file", "/run/secrets/cafe.key"], &format!("key-{version}"))?;
    let web = format!("{}\n[Secrets]\n{token}\n{file}\n", member("the cafe's web server"));
    write(&defs.join(format!("tailscale/{pod}-web.container")), &web)?;
    let probe = member("reaches the web server over the pod's localhost")
        .replace("Exec=/bin/httpd -f -p 8080 -h /www\n", "Exec=/bin/sleep 1000000\n");
    write(&defs.join(format!("tailscale/{pod}-probe.container")), &probe)
}

/// `tailpod.ign` for a box: the shipped config, a secrets overlay with the lab's values, and the
/// host's own overlay (`build-ign --host`): its hostname, and a config.env that deploys `paths`
/// of the repo.
pub(super) fn ignition(
    layout: &Layout,
    release_url: &str,
    lab: &Lab,
    paths: &str,
) -> Result<std::path::PathBuf, String> {
    let dir = layout.own("butane");
    let _ = std::fs::remove_dir_all(&dir);
    run("cp", &["-r", &crate::root().join("butane").to_string_lossy(), &dir.to_string_lossy()])?;
    let _ = std::fs::remove_file(dir.join("tailpod.ign"));
    let sums_path = layout.work.join("dist/SHA256SUMS");
    let sums = dist::read_sums(&sums_path)?;
    write(&dir.join(dist::RELEASE_BU), &dist::release_butane(&sums, "x86_64", release_url)?)?;
    let file = |path: &str, mode: &str, lines: &[String]| {
        let body: String = lines.iter().map(|l| format!("          {l}\n")).collect();
        format!(
            "    - path: {path}\n      mode: {mode}\n      contents:\n        inline: |\n{body}"
        )
    };
    let identity: Vec<String> = std::fs::read_to_string(age_key(layout)?)
        .map_err(|e| format!("the age key: {e}"))?
        .lines()
        .map(str::to_owned)
        .collect();
    let overlay = [
        "# The box's overlay: the host's lab tailnet and API, and its age key.\n\
         variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: core\nstorage:\n  files:\n"
            .to_owned(),
        file("/etc/quadsync/age.key", "0600", &identity),
        file(
            "/etc/tailscale/oauth.env",
            "0600",
            &[
                format!("TS_API_CLIENT_ID={}", lab.client_id),
                format!("TS_API_CLIENT_SECRET={}", lab.client_secret),
                format!("TS_API_URL={}", lab.api_url),
            ],
        ),
        file("/etc/ts4nsnet.env", "0644", &[format!("TS_CONTROL_URL={}", lab.control_url)]),
    ];
    write(&dir.join("secrets.bu"), &overlay.concat())?;
    let host = [
        format!(
            "# {0}: its name and its share of the definitions repo.\nvariant: fcos\nversion: 1.5.0\nstorage:\n  files:\n",
            layout.name
        ),
        // The rootfs has one: replaced, as on a real host with a name of its own.
        file("/etc/hostname", "0644", &[layout.name.to_owned()])
            .replace("      contents:", "      overwrite: true\n      contents:"),
        // Lines added to tailpod.bu's config.env: an overlay's lines come after, and win.
        file(
            "/etc/quadsync/config.env",
            "0600",
            &[
                format!("QUADSYNC_GIT_URL={}", tailnet::repo_url()),
                "QUADSYNC_AGE_KEY=/etc/quadsync/age.key".to_owned(),
                format!("QUADSYNC_PATHS={paths}"),
            ],
        ),
    ];
    std::fs::create_dir_all(dir.join("hosts")).map_err(|e| e.to_string())?;
    write(&dir.join(format!("hosts/{}.bu", layout.name)), &host.concat())?;
    let output = layout.own("tailpod.ign");
    let built = build(&Build {
        dir: dir.clone(),
        output: output.clone(),
        throwaway_secrets: false,
        ignition_version: Some("3.3.0".into()),
        build_id: Some(crate::build_ign::git_build_id(&crate::root())),
        sums: Some(sums_path),
        host: Some(layout.name.to_owned()),
    })?;
    for note in built.notes {
        eprintln!("box: {note}");
    }
    Ok(output)
}

/// The binaries, built as `cargo xtask dist` builds them (but with ts4nsnet's test-only
/// knobs, to join the lab tailnet), and served on loopback.
fn release(layout: &Layout) -> Result<String, String> {
    let target = crate::root().join("target/dist");
    let artifacts = dist::dist(&[], &layout.work.join("dist"), &target, dist::Flavor::BoxTest)?;
    eprintln!(
        "box: built {}",
        artifacts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    serve(layout.work.join("dist"))
}

/// `scripts/install.sh` installs the real release, as served, verified.
fn install_script(layout: &Layout, release_url: &str) -> Result<(), String> {
    let prefix = layout.work.join("installed");
    let script = crate::root().join("scripts/install.sh");
    let mut args = vec![script.to_string_lossy().into_owned()];
    args.extend(["--url", release_url, "--prefix"].map(str::to_owned));
    args.push(prefix.to_string_lossy().into_owned());
    args.extend(dist::TOOLS.iter().map(|t| (*t).to_owned()));
    run("sh", &args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let sums = dist::read_sums(&layout.work.join("dist/SHA256SUMS"))?;
    for tool in dist::TOOLS {
        let installed = std::fs::read(prefix.join("bin").join(tool)).map_err(|e| e.to_string())?;
        let listed = sums.iter().any(|(name, hash)| {
            name.starts_with(&format!("{tool}-")) && *hash == dist::sha256_hex(&installed)
        });
        check(listed, &format!("install.sh installed a {tool} SHA256SUMS does not list"))?;
    }
    eprintln!("box: scripts/install.sh installed the release's {}", dist::TOOLS.join(", "));
    Ok(())
}

/// Ignition must refuse a binary whose hash is not the one the config gives.
fn wrong_hash_is_refused(layout: &Layout, config: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(config).map_err(|e| e.to_string())?;
    let mut tampered: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let files = tampered["storage"]["files"].as_array_mut().ok_or("no files in the config")?;
    let binary = files
        .iter_mut()
        .find(|f| f["path"] == "/usr/local/bin/quadsync")
        .ok_or("the config installs no quadsync")?;
    binary["contents"]["verification"]["hash"] =
        serde_json::json!(format!("sha256-{}", "0".repeat(64)));
    let wrong = layout.work.join("wrong-hash.ign");
    write(&wrong, &tampered.to_string())?;
    match rootfs::apply_ignition(layout, &wrong) {
        Err(e) if e.contains("hash verification failed") => Ok(()),
        Err(e) => Err(format!("box: Ignition failed, but not on the hash: {e}")),
        Ok(()) => Err("box: Ignition accepted a binary with the wrong hash".into()),
    }
}

/// Everything up to a booted box; returns it and how long the boot took.
pub fn up(layout: &Layout) -> Result<(Machine, Lab, Duration), String> {
    rootfs::host_tools()?;
    down(layout);
    let _ = std::fs::remove_dir_all(&layout.work);
    std::fs::create_dir_all(&layout.work).map_err(|e| e.to_string())?;
    let release_url = release(layout)?;
    install_script(layout, &release_url)?;
    repo(layout)?;
    let lab = tailnet::start(layout)?;
    let config = ignition(layout, &release_url, &lab, FIRST_HOST_PATHS)?;
    rootfs::fresh(layout)?;
    rootfs::tweak(layout)?;
    wrong_hash_is_refused(layout, &config)?;
    rootfs::fresh(layout)?;
    rootfs::tweak(layout)?;
    rootfs::apply_ignition(layout, &config)?;
    let started = Instant::now();
    let network = tailnet::connect_while_booting(layout);
    let machine = machine::boot(layout, &[])?;
    let boot = started.elapsed();
    network.join().map_err(|_| "the network thread panicked")??;
    Ok((machine, lab, boot))
}

/// Stops the boxes and the lab tailnet.
pub fn down(layout: &Layout) {
    machine::stop(&layout.second_host());
    machine::stop(layout);
    tailnet::stop(layout);
}

/// Polls `check` every half second until it holds or `limit` passes.
pub(super) fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<bool, String>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        match check() {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        if started.elapsed() > limit {
            return Err(format!("timed out after {}s waiting for {what} {last}", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub(super) fn active(machine: &Machine, user: &str) -> bool {
    machine
        .exec(&[
            "systemctl",
            "--user",
            "-M",
            &format!("{user}@"),
            "is-active",
            &format!("{user}.service"),
        ])
        .is_ok_and(|s| s.trim() == "active")
}

fn main_pid(machine: &Machine, user: &str) -> Result<String, String> {
    unit_main_pid(machine, user, &format!("{user}.service"))
}

fn unit_main_pid(machine: &Machine, user: &str, unit: &str) -> Result<String, String> {
    user_unit_property(machine, user, unit, "MainPID")
}

/// A property of a unit of `user`'s systemd (`systemctl --user show -p PROPERTY --value`).
fn user_unit_property(
    machine: &Machine,
    user: &str,
    unit: &str,
    property: &str,
) -> Result<String, String> {
    let machine_name = format!("{user}@");
    let argv =
        ["systemctl", "--user", "-M", &machine_name, "show", "-p", property, "--value", unit];
    Ok(machine.exec(&argv)?.trim().to_owned())
}

/// `podman ARGS` as `user`, in its rootless store.
pub(super) fn podman_as(machine: &Machine, user: &str, args: &[&str]) -> Result<String, String> {
    let uid = machine.exec(&["id", "-u", user])?;
    let runtime_dir = format!("XDG_RUNTIME_DIR=/run/user/{}", uid.trim());
    let mut argv = vec!["runuser", "-u", user, "--", "env", &runtime_dir, "podman"];
    argv.extend(args);
    machine.exec(&argv)
}

/// The pod in `tailscale/` is one tailnet node: the peer reaches its web server by the pod's
/// name, one member reaches the other over localhost, and the web server has its secrets.
fn pod_on_the_tailnet(machine: &Machine, lab: &Lab, version: &str) -> Result<(), String> {
    let pod = TAILNET_POD;
    let request = "GET / HTTP/1.0\r\n\r\n";
    wait_for(
        &format!("the peer to reach the pod {pod} by name"),
        Duration::from_secs(180),
        || Ok(lab.probe(&format!("{pod}:8080"), request)?.contains("hello from the box")),
    )?;
    let exec = |member: &str, command: &str| {
        let container = format!("systemd-{pod}-{member}");
        podman_as(machine, pod, &["exec", &container, "/bin/sh", "-c", command])
    };
    let local = exec("probe", "(echo 'GET / HTTP/1.0'; echo; sleep 1) | nc -w 5 127.0.0.1 8080")?;
    check(
        local.contains("hello from the box"),
        &format!("{pod}-probe to {pod}-web over localhost: {local:?}"),
    )?;
    let secrets = exec("web", "echo \"$TOKEN\"; cat /run/secrets/cafe.key")?;
    check(
        secrets.split_whitespace().collect::<Vec<_>>()
            == [format!("token-{version}"), format!("key-{version}")],
        &format!("{pod}-web's secrets are {secrets:?}, not version {version}"),
    )?;
    let listed = podman_as(machine, pod, &["secret", "ls", "--format", "{{.Name}}"])?;
    let mut names: Vec<&str> = listed.split_whitespace().collect();
    names.sort();
    check(
        names == ["cafe-web-run-secrets-cafe-key", "cafe-web-token"],
        &format!("{pod}'s podman secrets are {names:?}"),
    )
}

/// From the box's systemd starting to `user`'s service becoming active, both on the host's
/// monotonic clock, as systemd records them.
fn node_up_after_boot(machine: &Machine, user: &str) -> Result<Duration, String> {
    let micros = |answer: Result<String, String>| -> Result<u64, String> {
        let answer = answer?;
        answer.trim().parse::<u64>().map_err(|e| format!("a systemd timestamp {answer:?}: {e}"))
    };
    let booted = micros(machine.exec(&[
        "systemctl",
        "show",
        "-p",
        "UserspaceTimestampMonotonic",
        "--value",
    ]))?;
    let unit = format!("{user}.service");
    let up = micros(user_unit_property(machine, user, &unit, "ActiveEnterTimestampMonotonic"))?;
    Ok(Duration::from_micros(up.saturating_sub(booted)))
}

pub(super) fn serves(machine: &Machine, port: u16) -> Result<String, String> {
    machine.exec(&["curl", "-s", "-m", "2", &format!("http://127.0.0.1:{port}/")])
}

pub(super) fn user_exists(machine: &Machine, user: &str) -> bool {
    machine.exec(&["getent", "passwd", user]).is_ok()
}

pub(super) fn check(condition: bool, what: &str) -> Result<(), String> {
    if condition { Ok(()) } else { Err(format!("box: {what}")) }
}

pub(super) fn sync_now(machine: &Machine) -> Result<String, String> {
    machine.exec(&["systemctl", "start", "quadsync-sync.service"])
}

/// The container in `tailscale/` is its own tailnet node: rootless, with a key tailmint minted
/// from the lab's API, and ts4nsnet as its network; the peer reaches its server by name and by
/// address, and it reaches the peer by MagicDNS name.
fn on_the_tailnet(machine: &Machine, lab: &Lab) -> Result<(), String> {
    let user = TAILNET_CONTAINER;
    let request = "GET / HTTP/1.0\r\n\r\n";
    eprintln!("box: waiting for {user} to join the lab tailnet");
    wait_for(&format!("the peer to reach {user} by name"), Duration::from_secs(180), || {
        Ok(lab.probe(&format!("{user}:8080"), request)?.contains("hello from the box"))
    })?;
    let uid = machine.exec(&["id", "-u", user])?;
    let podman_exec = |command: &str| {
        let runtime_dir = format!("XDG_RUNTIME_DIR=/run/user/{}", uid.trim());
        let container = format!("systemd-{user}");
        machine.exec(&[
            "runuser",
            "-u",
            user,
            "--",
            "env",
            &runtime_dir,
            "podman",
            "exec",
            &container,
            "/bin/sh",
            "-c",
            command,
        ])
    };
    let address = podman_exec("ip -4 -o addr show tap0")?;
    let ipv4 = address
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.strip_suffix("/32"))
        .ok_or(format!("{user}'s tap0 has no tailnet /32: {address}"))?
        .to_owned();
    let by_address = lab.probe(&format!("{ipv4}:8080"), request)?;
    check(by_address.contains("hello from the box"), &format!("{user} by {ipv4}: {by_address}"))?;
    // nc's input stays open a second: busybox nc stops reading when its input ends, and the
    // echo may still be on its way.
    let echoed = podman_exec("(echo from-the-box; sleep 1) | nc -w 5 peer 7")?;
    check(echoed.contains("from-the-box"), &format!("{user} to the peer by name: {echoed:?}"))?;
    // Host egress: a "public" server outside the box, reached through the box's own network.
    let public = public_server()?;
    // nc rather than busybox's static wget, which crashes in NSS without the libraries.
    let request = format!(
        "(echo 'GET / HTTP/1.0'; echo; sleep 1) | nc -w 5 {} {}",
        public.ip(),
        public.port()
    );
    let fetched = podman_exec(&request)?;
    check(
        fetched.contains(PUBLIC_ANSWER),
        &format!("{user} to the internet at {public} through the host: {fetched:?}"),
    )?;
    let minted = machine.exec(&[
        "stat",
        "-c",
        "%U %a",
        &format!("/run/user/{}/tailmint/{user}.env", uid.trim()),
    ])?;
    check(minted.trim() == format!("{user} 600"), &format!("tailmint's key file is {minted}"))
}

/// The tailnet container's start once through Headscale's flavour of tailmint: oauth.env says
/// `TS_API_FLAVOR=headscale` with the lab's Headscale API key; after a restart the container's
/// key is a Headscale pre-auth key and the peer reaches it again. oauth.env is put back after.
fn through_headscale(layout: &Layout, machine: &Machine, lab: &Lab) -> Result<(), String> {
    let oauth = layout.rootfs.join("etc/tailscale/oauth.env");
    let original = std::fs::read_to_string(&oauth).map_err(|e| format!("oauth.env: {e}"))?;
    // Written in place: the file keeps its owner (root) and mode (0600).
    write(
        &oauth,
        &format!(
            "TS_API_FLAVOR=headscale\nTS_API_KEY={}\nTS_API_URL={}\nTS_HEADSCALE_USER={}\n",
            lab.headscale_key, lab.api_url, lab.headscale_user
        ),
    )?;
    let user = TAILNET_CONTAINER;
    let result = (|| {
        let unit = format!("{user}.service");
        machine.exec(&["systemctl", "--user", "-M", &format!("{user}@"), "restart", &unit])?;
        let request = "GET / HTTP/1.0\r\n\r\n";
        wait_for(&format!("the peer to reach {user} again"), Duration::from_secs(60), || {
            Ok(lab.probe(&format!("{user}:8080"), request)?.contains("hello from the box"))
        })?;
        let uid = machine.exec(&["id", "-u", user])?;
        let keys =
            machine.exec(&["cat", &format!("/run/user/{}/tailmint/{user}.env", uid.trim())])?;
        check(
            keys.starts_with("TS_AUTHKEY=hskey-auth-"),
            "the container's key is not a Headscale pre-auth key",
        )
    })();
    write(&oauth, &original)?;
    result
}

/// What [`public_server`] answers.
const PUBLIC_ANSWER: &str = "hello from the internet";

/// An HTTP server standing for the internet, on the lab's address outside the box; it answers
/// every request with [`PUBLIC_ANSWER`] for as long as xtask runs.
fn public_server() -> Result<std::net::SocketAddr, String> {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind((tailnet::LAB_IP, 0))
        .map_err(|e| format!("a public server on {}: {e}", tailnet::LAB_IP))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read(&mut [0u8; 4096]);
            let response = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{PUBLIC_ANSWER}",
                PUBLIC_ANSWER.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    Ok(addr)
}

/// ts4nsnet as a netavark plugin under the box's real podman 5 and netavark: a network with the
/// `ts4nsnet` driver puts a (rootful) container on the tailnet, where it reaches the peer.
fn netavark_plugin(layout: &Layout, machine: &Machine, lab: &Lab) -> Result<(), String> {
    // Written from the host into the running box's root: configuration, not a product file.
    let plugins = layout.rootfs.join("usr/local/libexec/netavark");
    let conf_dir = layout.rootfs.join("etc/containers/containers.conf.d");
    for dir in [&plugins, &conf_dir] {
        std::fs::create_dir_all(dir).map_err(at(dir))?;
    }
    let _ = std::fs::remove_file(plugins.join("ts4nsnet"));
    std::os::unix::fs::symlink("/usr/local/bin/ts4nsnet", plugins.join("ts4nsnet"))
        .map_err(|e| format!("the plugin link: {e}"))?;
    write(
        &conf_dir.join("box-ts4nsnet.conf"),
        "[network]\nnetavark_plugin_dirs = [\"/usr/local/libexec/netavark\"]\n",
    )?;
    let control = format!("control_url={}", lab.control_url);
    machine.exec(&[
        "podman", "network", "create", "--driver", "ts4nsnet", "-o", &control, "tailnet",
    ])?;
    let answer = machine.exec_env(
        &[("TS_AUTHKEY", lab.auth_key())],
        &[
            "podman",
            "run",
            "--rm",
            "--name",
            "plugged",
            "--network",
            "tailnet",
            "--rootfs",
            "/opt/box/busybox:O",
            "/bin/sh",
            "-c",
            "(echo through-the-plugin; sleep 1) | nc -w 5 peer 7",
        ],
    )?;
    check(
        answer.contains("through-the-plugin"),
        &format!("the plugin's container to the peer: {answer:?}"),
    )
}

/// The test itself, on a box that took `boot` to come up (its timings count from the boot's
/// start: the first sync runs during the boot).
pub fn test(
    layout: &Layout,
    machine: &Machine,
    lab: &Lab,
    boot: Duration,
) -> Result<Timings, String> {
    let started = Instant::now() - boot;
    let mut timings = Timings::default();
    let users = ["hello", "keep", "web"];
    eprintln!("box: waiting for quadsync-sync.timer to deploy the repo");
    wait_for("the three containers to run", Duration::from_secs(180), || {
        Ok(users.iter().all(|u| active(machine, u)))
    })?;
    timings.boot_to_deployed = started.elapsed();
    for (user, port) in [("hello", 18081), ("keep", 18082), ("web", 18083)] {
        check(
            serves(machine, port)?.contains("hello from the box"),
            &format!("{user} does not serve on {port}"),
        )?;
        let subuid =
            machine.exec(&["grep", &format!("^{user}:"), "/etc/subuid"]).unwrap_or_default();
        check(!subuid.is_empty(), &format!("{user} has no subuid range"))?;
        check(
            layout.rootfs.join("var/lib/systemd/linger").join(user).exists(),
            &format!("{user} does not linger"),
        )?;
        let groups = machine.exec(&["id", "-nG", user])?;
        check(
            groups.split_whitespace().any(|g| g == "cusers"),
            &format!("{user} is not in cusers: {groups}"),
        )?;
        let owner = machine.exec(&[
            "stat",
            "-c",
            "%U",
            &format!("/home/{user}/.config/containers/systemd/{user}.container"),
        ])?;
        check(owner.trim() == user, &format!("{user}'s quadlet is owned by {owner}"))?;
        let uid_map = machine.exec(&[
            "sh",
            "-c",
            &format!("cat /proc/$(pgrep -u {user} -f 'httpd -f' | head -1)/uid_map"),
        ])?;
        check(
            !uid_map.trim_start().starts_with("0 0"),
            &format!("{user}'s container is not rootless: {uid_map}"),
        )?;
    }
    eprintln!(
        "box: deployed {} in {:.1}s after boot",
        users.join(", "),
        timings.boot_to_deployed.as_secs_f64()
    );
    on_the_tailnet(machine, lab)?;
    timings.boot_to_tailnet = started.elapsed();
    timings.boot_to_node = node_up_after_boot(machine, TAILNET_CONTAINER)?;
    eprintln!(
        "box: {TAILNET_CONTAINER} on the tailnet {:.1}s after boot by the box's clock (its node up), \
         {:.1}s seen from the lab's peer",
        timings.boot_to_node.as_secs_f64(),
        timings.boot_to_tailnet.as_secs_f64()
    );
    through_headscale(layout, machine, lab)?;
    eprintln!("box: {TAILNET_CONTAINER} restarted with a key tailmint minted from Headscale's API");
    pod_on_the_tailnet(machine, lab, "first")?;
    eprintln!("box: the pod {TAILNET_POD} on the tailnet as one node, with its age secrets");
    // The repo's companions, in their owners' own stores.
    for (owner, kind, name) in
        [("hello", "volume", "systemd-hello-data"), ("keep", "network", "systemd-keep")]
    {
        let label =
            podman_as(machine, owner, &[kind, "inspect", "--format", "{{.Labels.box}}", name])?;
        check(label.trim() == owner, &format!("{owner}'s {kind} from the repo: {label:?}"))?;
    }
    netavark_plugin(layout, machine, lab)?;
    eprintln!("box: a container on the tailnet through the netavark plugin, as root");
    let hello = "hello@";
    let timer = machine
        .exec(&["systemctl", "--user", "-M", hello, "is-enabled", "hello-tick.timer"])
        .unwrap_or_default();
    check(timer.trim() == "enabled", &format!("hello-tick.timer is {timer:?}, not enabled"))?;
    wait_for("hello-tick.service to run once", Duration::from_secs(30), || {
        let started = user_unit_property(
            machine,
            "hello",
            "hello-tick.service",
            "ExecMainStartTimestampMonotonic",
        )?;
        Ok(started.trim() != "0" && !started.trim().is_empty())
    })?;
    // What Ignition installed: the release binaries, verified, and a sudo rule sudo accepts.
    let sums = dist::read_sums(&layout.work.join("dist/SHA256SUMS"))?;
    for tool in dist::TOOLS {
        let installed = std::fs::read(layout.rootfs.join("usr/local/bin").join(tool))
            .map_err(|e| format!("box: {tool}: {e}"))?;
        let expected =
            sums.iter().find(|(n, _)| n.starts_with(&format!("{tool}-"))).map(|(_, h)| h.as_str());
        check(
            Some(dist::sha256_hex(&installed).as_str()) == expected,
            &format!("{tool} is not the released binary"),
        )?;
    }
    machine
        .exec(&["visudo", "-cf", "/etc/sudoers.d/tailmint"])
        .map_err(|e| format!("box: the sudo rule: {e}"))?;

    let before: Vec<String> =
        users.iter().map(|u| main_pid(machine, u)).collect::<Result<_, _>>()?;
    let defs = layout.work.join("defs");
    write(&defs.join("hello.container"), &with_volume(container("hello, second version", 18081)))?;
    write(&defs.join("world.container"), &container("world, new", 18084))?;
    std::fs::remove_file(defs.join("web.container")).map_err(|e| e.to_string())?;
    push(&defs, "edit hello, add world, delete web")?;
    let pushed = Instant::now();
    sync_now(machine)?;
    wait_for("world to run", Duration::from_secs(60), || Ok(active(machine, "world")))?;
    timings.push_to_applied = pushed.elapsed();
    check(main_pid(machine, "hello")? != before[0], "hello was not restarted after its edit")?;
    check(
        main_pid(machine, "keep")? == before[1],
        "keep was restarted although it did not change",
    )?;
    check(
        !user_exists(machine, "web"),
        "web's user is still there after its definition was deleted",
    )?;
    check(!layout.rootfs.join("home/web").exists(), "web's home is still there")?;
    check(serves(machine, 18084)?.contains("hello from the box"), "world does not serve")?;
    let unit = machine.exec(&["cat", "/home/hello/.config/containers/systemd/hello.container"])?;
    check(unit.contains("second version"), "hello's quadlet was not rewritten")?;

    // A rotated secret restarts its pod and nothing else; a removed pod takes its user, home
    // and secrets with it.
    let steady: Vec<String> = ["hello", "keep", "world", TAILNET_CONTAINER]
        .iter()
        .map(|u| main_pid(machine, u))
        .collect::<Result<_, _>>()?;
    let pod_unit = format!("{TAILNET_POD}-pod.service");
    let pod_before = unit_main_pid(machine, TAILNET_POD, &pod_unit)?;
    pod_on_the_tailnet_repo(layout, &defs, "second")?;
    push(&defs, "rotate the pod's secrets")?;
    sync_now(machine)?;
    pod_on_the_tailnet(machine, lab, "second")?;
    check(
        unit_main_pid(machine, TAILNET_POD, &pod_unit)? != pod_before,
        "the pod was not restarted for its new secrets",
    )?;
    let after: Vec<String> = ["hello", "keep", "world", TAILNET_CONTAINER]
        .iter()
        .map(|u| main_pid(machine, u))
        .collect::<Result<_, _>>()?;
    check(after == steady, "rotating the pod's secrets restarted other containers")?;
    eprintln!("box: a rotated secret restarted its pod only");
    for file in [".pod", "-web.container", "-probe.container"] {
        let path = defs.join(format!("tailscale/{TAILNET_POD}{file}"));
        std::fs::remove_file(&path).map_err(at(&path))?;
    }
    push(&defs, "remove the pod")?;
    sync_now(machine)?;
    check(!user_exists(machine, TAILNET_POD), "the pod's user is still there after its removal")?;
    check(
        !layout.rootfs.join("home").join(TAILNET_POD).exists(),
        "the pod's home (and its secrets) is still there",
    )?;

    let steady: Vec<String> = ["hello", "keep", "world"]
        .iter()
        .map(|u| main_pid(machine, u))
        .collect::<Result<_, _>>()?;
    write(&defs.join("Broken.container"), &container("an invalid name", 18085))?;
    push(&defs, "a broken commit")?;
    check(sync_now(machine).is_err(), "a sync of a broken commit did not fail")?;
    let after: Vec<String> = ["hello", "keep", "world"]
        .iter()
        .map(|u| main_pid(machine, u))
        .collect::<Result<_, _>>()?;
    check(after == steady, "a broken commit restarted containers")?;
    let status = machine.exec(&["quadsync", "status"])?;
    check(
        status.contains("FAILED") && status.contains("Broken.container"),
        &format!("status does not report the error:\n{status}"),
    )?;
    faults(layout, machine, lab, &defs)?;
    Ok(timings)
}

/// The last fault: the box reboots (SIGTERM to a sync in the middle of a first deploy), and
/// after boot the host converges on its own. Returns how long that took.
pub fn reboot_during_deploy(
    layout: &Layout,
    machine: Machine,
) -> Result<(Machine, Duration), String> {
    let defs = layout.work.join("defs");
    write(
        &defs.join("rebooted.container"),
        &slow_container("rebooted, deployed across a reboot", 18088),
    )?;
    push(&defs, "add rebooted")?;
    machine.exec(&["systemctl", "start", "--no-block", "quadsync-sync.service"])?;
    wait_for("rebooted's user to be created", Duration::from_secs(60), || {
        Ok(user_exists(&machine, "rebooted"))
    })?;
    check(syncing(&machine), "the sync had ended before the reboot")?;
    // The connection may drop before systemctl answers.
    let _ = machine.exec(&["systemctl", "reboot"]);
    let rebooting = Instant::now();
    wait_for("the box to go down", Duration::from_secs(90), || {
        Ok(Machine::running(layout).is_none())
    })?;
    machine::stop(layout);
    let network = tailnet::connect_while_booting(layout);
    let machine = machine::boot(layout, &[])?;
    network.join().map_err(|_| "the network thread panicked")??;
    let users = ["hello", "keep", "world", "late", "fresh", "rebooted"];
    wait_for("every container to run after the reboot", Duration::from_secs(180), || {
        Ok(users.iter().all(|u| active(&machine, u)))
    })?;
    wait_for("a clean sync after the reboot", Duration::from_secs(180), || {
        Ok(machine.exec(&["quadsync", "status"])?.contains("last sync: ok"))
    })?;
    let converged = rebooting.elapsed();
    eprintln!(
        "box: fault: reboot during a deploy: converged {:.1}s after the reboot",
        converged.as_secs_f64()
    );
    Ok((machine, converged))
}

/// Faults the host must ride out, each with how long recovery took.
fn faults(layout: &Layout, machine: &Machine, lab: &Lab, defs: &Path) -> Result<(), String> {
    let running = ["hello", "keep", "world"];
    let pids = || running.iter().map(|u| main_pid(machine, u)).collect::<Result<Vec<_>, _>>();

    // The git server goes away: the sync fails and nothing changes; once it is back, the host
    // catches up with what was pushed meanwhile.
    let steady = pids()?;
    tailnet::stop_git_daemon(layout);
    std::fs::remove_file(defs.join("Broken.container")).map_err(|e| e.to_string())?;
    write(&defs.join("late.container"), &container("late, pushed while git was down", 18086))?;
    push(defs, "fix the name, add late")?;
    check(sync_now(machine).is_err(), "a sync without its git server did not fail")?;
    check(pids()? == steady, "a failed fetch restarted containers")?;
    check(!user_exists(machine, "late"), "late was deployed without a fetch")?;
    tailnet::start_git_daemon(layout)?;
    let back = Instant::now();
    sync_now(machine)?;
    wait_for("late to run", Duration::from_secs(60), || Ok(active(machine, "late")))?;
    check(pids()? == steady, "catching up restarted unchanged containers")?;
    eprintln!(
        "box: fault: git server down: nothing changed; caught up {:.1}s after it came back",
        back.elapsed().as_secs_f64()
    );

    // The Tailscale API fails (500, 429) while the tailnet container starts: tailmint retries
    // within its deadline, the container joins once the API answers, nothing else restarts.
    let others = pids()?;
    tailnet::api_outage(layout)?;
    let user = TAILNET_CONTAINER;
    let outage = Instant::now();
    machine.exec(&[
        "systemctl",
        "--user",
        "-M",
        &format!("{user}@"),
        "restart",
        &format!("{user}.service"),
    ])?;
    wait_for(&format!("{user} back on the tailnet"), Duration::from_secs(120), || {
        Ok(lab
            .probe(&format!("{user}:8080"), "GET / HTTP/1.0\r\n\r\n")?
            .contains("hello from the box"))
    })?;
    // The outage really met the start: tailmint said it was retrying, in the unit's journal.
    let unit = format!("_SYSTEMD_USER_UNIT={user}.service");
    let journal = machine.exec(&["journalctl", "--no-pager", "-q", "-o", "cat", &unit])?;
    check(
        journal.contains("retrying in"),
        &format!("tailmint did not meet the outage:\n{journal}"),
    )?;
    check(pids()? == others, "an API outage restarted other containers")?;
    eprintln!(
        "box: fault: Tailscale API failing during a start: {user} on the tailnet {:.1}s later",
        outage.elapsed().as_secs_f64()
    );

    // quadsync is killed (-9) in the middle of a first deploy: the next sync finishes it, and
    // the user is quadsync's, not an orphan it refuses to manage.
    write(&defs.join("fresh.container"), &slow_container("fresh, deployed through a kill", 18087))?;
    push(defs, "add fresh")?;
    machine.exec(&["systemctl", "start", "--no-block", "quadsync-sync.service"])?;
    wait_for("fresh's user to be created", Duration::from_secs(60), || {
        Ok(user_exists(machine, "fresh"))
    })?;
    check(syncing(machine), "the sync had ended before the kill")?;
    machine.exec(&["systemctl", "kill", "--signal=SIGKILL", "quadsync-sync.service"])?;
    let killed = Instant::now();
    wait_for("the killed sync to end", Duration::from_secs(30), || Ok(!syncing(machine)))?;
    sync_now(machine)?;
    wait_for("fresh to run", Duration::from_secs(60), || Ok(active(machine, "fresh")))?;
    let state = machine.exec(&["quadsync", "status"])?;
    check(
        state.lines().any(|l| l.starts_with("fresh: ")),
        &format!("fresh is not quadsync's after the kill:\n{state}"),
    )?;
    eprintln!(
        "box: fault: quadsync killed during a first deploy: deployed {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    );

    // Control and DERP restart under the containers on the tailnet: their nodes reconnect on
    // their own, and a node that joins afterwards (the probe) reaches them; nothing restarts.
    // (The lab's own peer runs tailscale-rs's runtime, which does not survive this; it is
    // not used after here.)
    let user = TAILNET_CONTAINER;
    let before = main_pid(machine, user)?;
    let others = pids()?;
    tailnet::control_and_derp_outage(layout)?;
    let back = Instant::now();
    wait_for(&format!("{user} reachable after the restart"), Duration::from_secs(120), || {
        Ok(lab
            .probe(&format!("{user}:8080"), "GET / HTTP/1.0\r\n\r\n")?
            .contains("hello from the box"))
    })?;
    check(main_pid(machine, user)? == before, &format!("{user} restarted over the outage"))?;
    check(pids()? == others, "a control and DERP restart restarted containers")?;
    eprintln!(
        "box: fault: control and DERP restarted: {user} reachable again {:.1}s after they came back, without a restart",
        back.elapsed().as_secs_f64()
    );
    Ok(())
}
