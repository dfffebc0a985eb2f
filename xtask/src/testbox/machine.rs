//! Booting the rootfs with systemd-nspawn, getting inside, and stopping it.
//!
//! The knobs are the ones this kind of host needs (each was a real failure): a unified cgroup
//! hierarchy for systemd 257, no seccomp for crun's keyring, a writable /proc/sys/net for
//! rootless networking, no registration (the host has no systemd bus), and nspawn started from its
//! own cgroup, removed again on shutdown.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tailpod_core::located::at;

use super::{Layout, output, run};

/// A running box.
#[derive(Debug)]
pub struct Machine {
    nspawn: u32,
}

fn cgroup_dirs(layout: &Layout) -> [PathBuf; 2] {
    let name = layout.name;
    [
        PathBuf::from(format!("/sys/fs/cgroup/unified/nspawn-{name}")),
        PathBuf::from(format!("/sys/fs/cgroup/systemd/nspawn-{name}")),
    ]
}

/// Removes the cgroup directories nspawn left (deepest first).
fn clean_cgroups(layout: &Layout) {
    for dir in cgroup_dirs(layout) {
        let _ = run(
            "sh",
            &[
                "-c",
                "[ -d \"$1\" ] && find \"$1\" -depth -type d -exec rmdir {} + 2>/dev/null; true",
                "sh",
                &dir.to_string_lossy(),
            ],
        );
    }
}

fn pid_file(layout: &Layout) -> PathBuf {
    layout.own("nspawn.pid")
}

/// Boots the rootfs; `binds` are read-only `(host path, path in the box)` mounts.
pub fn boot(layout: &Layout, binds: &[(&Path, &str)]) -> Result<Machine, String> {
    stop(layout);
    let cgroup = &cgroup_dirs(layout)[0];
    std::fs::create_dir_all(cgroup).map_err(at(cgroup))?;
    let log = std::fs::File::create(layout.own("nspawn.log")).map_err(|e| e.to_string())?;
    let rootfs = layout.rootfs.to_string_lossy().into_owned();
    let mut nspawn = vec![
        "-D",
        rootfs.as_str(),
        "-b",
        "--register=no",
        "--keep-unit",
        "--console=passive",
        "-M",
        layout.name,
        // Its own network, joined to the host's lab tailnet by a veth pair (see tailnet.rs).
        "--network-veth",
    ];
    let bind_args: Vec<String> = binds
        .iter()
        .map(|(host, inside)| format!("--bind-ro={}:{inside}", host.display()))
        .collect();
    nspawn.extend(bind_args.iter().map(String::as_str));
    // The shell only moves itself into the box's cgroup and execs nspawn; every value is an argument.
    let child = Command::new("sh")
        .args([
            "-c",
            "echo $$ > \"$1/cgroup.procs\" && shift && exec setsid systemd-nspawn \"$@\"",
            "sh",
        ])
        .arg(cgroup)
        .args(&nspawn)
        .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
        .env("SYSTEMD_SECCOMP", "0")
        .env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("systemd-nspawn: {e}"))?;
    let machine = Machine { nspawn: child.id() };
    std::fs::write(pid_file(layout), machine.nspawn.to_string()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    loop {
        let state = machine.exec(&["systemctl", "is-system-running"]).unwrap_or_else(|e| e);
        if state.trim() == "running" || state.trim().ends_with("degraded") {
            return Ok(machine);
        }
        if started.elapsed() > Duration::from_secs(90) {
            let log = std::fs::read_to_string(layout.own("nspawn.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            return Err(format!(
                "the box {} did not boot within 90 s (last state {state:?}):\n{}",
                layout.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Machine {
    /// The box's PID 1, as seen from the host.
    fn leader(&self) -> Result<String, String> {
        let children = run("pgrep", &["-P", &self.nspawn.to_string()])?;
        children.lines().next().map(str::to_owned).ok_or_else(|| "the box is not running".into())
    }

    /// Runs a command inside every namespace of the box.
    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        self.exec_env(&[], args)
    }

    /// Runs a command inside the box with `env` added to its environment (never in its
    /// arguments, where every process could read it).
    pub fn exec_env(&self, env: &[(&str, &str)], args: &[&str]) -> Result<String, String> {
        let leader = self.leader()?;
        let mut argv = vec!["-t", leader.as_str(), "-a"];
        argv.extend(args);
        output(Command::new("nsenter").args(&argv).envs(env.iter().copied()))
    }

    /// An interactive shell inside the box; whether it exited 0.
    pub fn shell(&self) -> Result<bool, String> {
        let leader = self.leader()?;
        let status = Command::new("nsenter")
            .args(["-t", &leader, "-a", "/bin/bash", "-l"])
            .status()
            .map_err(|e| e.to_string())?;
        Ok(status.success())
    }

    /// The running box recorded in `layout`, if any.
    pub fn running(layout: &Layout) -> Option<Machine> {
        let pid: u32 = std::fs::read_to_string(pid_file(layout)).ok()?.trim().parse().ok()?;
        let machine = Machine { nspawn: pid };
        machine.leader().ok().map(|_| machine)
    }
}

/// Powers the box off (or kills it) and cleans up after nspawn.
pub fn stop(layout: &Layout) {
    if let Some(machine) = Machine::running(layout) {
        let _ = machine.exec(&["systemctl", "poweroff"]);
        let started = Instant::now();
        while Path::new(&format!("/proc/{}", machine.nspawn)).exists()
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = run("kill", &["-KILL", &machine.nspawn.to_string()]);
    }
    let _ = std::fs::remove_file(pid_file(layout));
    clean_cgroups(layout);
}
