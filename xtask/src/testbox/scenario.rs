//! The end-to-end test: a host provisioned from our `tailpod.ign` deploys a definitions repo with
//! nobody touching it, then follows pushes.
//!
//! 1. Builds the tools and `tailpod.ign` (Ignition 3.3.0) with a box overlay (the repo's URL).
//! 2. Makes the rootfs, applies the config with the real Ignition, boots it.
//! 3. Waits for `quadsync-sync.timer` to deploy the repo; checks the users (subuid ranges, linger),
//!    the rootless quadlets and what they serve.
//! 4. Pushes a change (edit one, add one, delete one) and checks that only the edited one
//!    restarted, the new one runs and the deleted one's user is gone; pushes a broken commit and
//!    checks that nothing changed and `quadsync status` reports the error.

use std::path::Path;
use std::time::{Duration, Instant};

use super::machine::{self, Machine};
use super::serve::serve;
use super::{Layout, rootfs, run};
use crate::build_ign::{Build, build};
use crate::dist;

/// What the scenario measured.
#[derive(Debug, Default)]
pub struct Timings {
    pub boot: Duration,
    pub boot_to_deployed: Duration,
    pub push_to_applied: Duration,
}

fn container(description: &str, port: u16) -> String {
    format!(
        "[Unit]\nDescription={description}\n\n[Container]\n# No registry in the box: a busybox root filesystem, copy-on-write.\n\
         Rootfs=/opt/box/busybox:O\nExec=/bin/httpd -f -p 8080 -h /www\nPublishPort=127.0.0.1:{port}:8080\n\
         # httpd as PID 1 would ignore SIGTERM and every stop would wait 10 s.\nRunInit=true\n\n[Install]\nWantedBy=default.target\n"
    )
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
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
fn push(defs: &Path, message: &str) -> Result<(), String> {
    git(defs, &["add", "-A"])?;
    git(defs, &["commit", "-qm", message])?;
    git(defs, &["push", "-q", "origin", "main"]).map(drop)
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The host side: the definitions repo (bare, for the box) and a working copy.
fn repo(layout: &Layout) -> Result<(), String> {
    let bare = layout.work.join("defs.git");
    let defs = layout.work.join("defs");
    run("git", &["init", "-q", "--bare", "-b", "main", &bare.to_string_lossy()])?;
    run("git", &["init", "-q", "-b", "main", &defs.to_string_lossy()])?;
    git(&defs, &["remote", "add", "origin", &bare.to_string_lossy()])?;
    write(&defs.join("hello.container"), &container("hello, first version", 18081))?;
    write(&defs.join("keep.container"), &container("keep, never changes", 18082))?;
    write(&defs.join("web.container"), &container("web, to be deleted", 18083))?;
    // A sidecar timer of hello's, run by hello's own systemd.
    write(
        &defs.join("hello-tick.timer"),
        "[Unit]\nDescription=hello's tick\n\n[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=1h\n\n[Install]\nWantedBy=timers.target\n",
    )?;
    write(
        &defs.join("hello-tick.service"),
        "[Unit]\nDescription=hello's tick\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )?;
    push(&defs, "three containers and a sidecar timer")
}

/// `tailpod.ign` for the box: the shipped config plus an overlay with the box's values.
fn ignition(layout: &Layout, release_url: &str) -> Result<std::path::PathBuf, String> {
    let dir = layout.work.join("butane");
    run("cp", &["-r", &crate::root().join("butane").to_string_lossy(), &dir.to_string_lossy()])?;
    let _ = std::fs::remove_file(dir.join("tailpod.ign"));
    let sums_path = layout.work.join("dist/SHA256SUMS");
    let sums = dist::read_sums(&sums_path)?;
    write(&dir.join(dist::RELEASE_BU), &dist::release_butane(&sums, "x86_64", release_url)?)?;
    write(
        &dir.join("secrets.bu"),
        "# The box's overlay: its definitions repo, and placeholders for what it does not use yet.\n\
         variant: fcos\nversion: 1.5.0\npasswd:\n  users:\n    - name: core\nstorage:\n  files:\n\
         \x20   - path: /etc/quadsync/config.env\n      mode: 0600\n      contents:\n        inline: |\n          QUADSYNC_GIT_URL=file:///srv/defs.git\n\
         \x20   - path: /etc/tailscale/oauth.env\n      mode: 0600\n      contents:\n        inline: |\n          TS_API_CLIENT_ID=box\n          TS_API_CLIENT_SECRET=box\n",
    )?;
    let output = layout.work.join("tailpod.ign");
    let built = build(&Build {
        dir: dir.clone(),
        output: output.clone(),
        throwaway_secrets: false,
        ignition_version: Some("3.3.0".into()),
        build_id: Some(crate::build_ign::git_build_id(&crate::root())),
        sums: Some(sums_path),
    })?;
    for note in built.notes {
        eprintln!("box: {note}");
    }
    Ok(output)
}

/// The release binaries, built as `cargo xtask dist` builds them, and served on loopback.
fn release(layout: &Layout) -> Result<String, String> {
    let artifacts = dist::dist(&[], &layout.work.join("dist"), &crate::root().join("target/dist"))?;
    eprintln!(
        "box: built {}",
        artifacts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    serve(layout.work.join("dist"))
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
pub fn up(layout: &Layout) -> Result<(Machine, Duration), String> {
    rootfs::host_tools()?;
    machine::stop(layout);
    let _ = std::fs::remove_dir_all(&layout.work);
    std::fs::create_dir_all(&layout.work).map_err(|e| e.to_string())?;
    let release_url = release(layout)?;
    repo(layout)?;
    let config = ignition(layout, &release_url)?;
    rootfs::fresh(layout)?;
    rootfs::tweak(layout)?;
    wrong_hash_is_refused(layout, &config)?;
    rootfs::fresh(layout)?;
    rootfs::tweak(layout)?;
    rootfs::apply_ignition(layout, &config)?;
    let started = Instant::now();
    let machine = machine::boot(layout, &[(&layout.work.join("defs.git"), "/srv/defs.git")])?;
    Ok((machine, started.elapsed()))
}

/// Polls `check` every half second until it holds or `limit` passes.
fn wait_for(
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

fn active(machine: &Machine, user: &str) -> bool {
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
    let out = machine.exec(&[
        "systemctl",
        "--user",
        "-M",
        &format!("{user}@"),
        "show",
        "-p",
        "MainPID",
        "--value",
        &format!("{user}.service"),
    ])?;
    Ok(out.trim().to_owned())
}

fn serves(machine: &Machine, port: u16) -> Result<String, String> {
    machine.exec(&["curl", "-s", "-m", "2", &format!("http://127.0.0.1:{port}/")])
}

fn user_exists(machine: &Machine, user: &str) -> bool {
    machine.exec(&["getent", "passwd", user]).is_ok()
}

fn check(condition: bool, what: &str) -> Result<(), String> {
    if condition { Ok(()) } else { Err(format!("box: {what}")) }
}

fn sync_now(machine: &Machine) -> Result<String, String> {
    machine.exec(&["systemctl", "start", "quadsync-sync.service"])
}

/// The test itself, on a booted box.
pub fn test(layout: &Layout, machine: &Machine) -> Result<Timings, String> {
    let mut timings = Timings::default();
    let users = ["hello", "keep", "web"];
    eprintln!("box: waiting for quadsync-sync.timer to deploy the repo");
    timings.boot_to_deployed =
        wait_for("the three containers to run", Duration::from_secs(180), || {
            Ok(users.iter().all(|u| active(machine, u)))
        })?;
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
    let hello = "hello@";
    let timer = machine
        .exec(&["systemctl", "--user", "-M", hello, "is-enabled", "hello-tick.timer"])
        .unwrap_or_default();
    check(timer.trim() == "enabled", &format!("hello-tick.timer is {timer:?}, not enabled"))?;
    wait_for("hello-tick.service to run once", Duration::from_secs(30), || {
        let started = machine.exec(&[
            "systemctl",
            "--user",
            "-M",
            hello,
            "show",
            "-p",
            "ExecMainStartTimestampMonotonic",
            "--value",
            "hello-tick.service",
        ])?;
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
    write(&defs.join("hello.container"), &container("hello, second version", 18081))?;
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
    Ok(timings)
}
