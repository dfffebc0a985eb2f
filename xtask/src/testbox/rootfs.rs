//! The box's root filesystem: Debian trixie (systemd 257, podman 5.4, Ignition 2.14), cached as
//! a tarball, with the few changes a container needs to stand in for a Fedora CoreOS VM, then
//! configured by the real Ignition from our `tailpod.ign`, as an initramfs would.

use std::path::Path;

use tailpod_core::located::at;

use super::{Layout, run};

/// What the box's rootfs holds (its cache name changes when this does).
const PACKAGES: &str = "systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,systemd-container,podman,uidmap,\
passt,slirp4netns,crun,conmon,netavark,aardvark-dns,catatonit,git,sudo,busybox-static,iproute2,ca-certificates,\
procps,ignition,curl,nftables";
const CACHE_NAME: &str = "rootfs-trixie-v2.tar.zst";

/// Installs the host tools the box needs, if missing.
pub fn host_tools() -> Result<(), String> {
    let wanted = [
        ("debootstrap", "debootstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("zstd", "zstd"),
        ("git", "git"),
        // The box's veth link and the lab's address (tailnet.rs).
        ("ip", "iproute2"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(tool, _)| run("sh", &["-c", &format!("command -v {tool}")]).is_err())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("box: installing {}", missing.join(" "));
    run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(&missing);
    run("apt-get", &args).map(drop)
}

/// A fresh rootfs at `layout.rootfs`, from the cached tarball (made on first use).
pub fn fresh(layout: &Layout) -> Result<(), String> {
    let tarball = layout.cache.join(CACHE_NAME);
    if !tarball.exists() {
        let staging = layout.cache.join("debootstrap");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(layout.cache.join("debs")).map_err(|e| e.to_string())?;
        eprintln!("box: debootstrap trixie (first run only; cached as {})", tarball.display());
        let include = format!("--include={PACKAGES}");
        let cache_dir = format!("--cache-dir={}", layout.cache.join("debs").display());
        run(
            "debootstrap",
            &["--variant=minbase", &cache_dir, &include, "trixie", &staging.to_string_lossy()],
        )?;
        // The box has no network: its apt sources and indexes are only weight.
        std::fs::write(staging.join("etc/apt/sources.list"), "# the box has no package sources\n")
            .map_err(|e| e.to_string())?;
        let _ = run(
            "sh",
            &[
                "-c",
                &format!(
                    "rm -rf {0}/var/cache/apt/archives/*.deb {0}/var/lib/apt/lists/*_*",
                    staging.display()
                ),
            ],
        );
        run(
            "tar",
            &[
                "--zstd",
                "-cpf",
                &tarball.to_string_lossy(),
                "-C",
                &staging.to_string_lossy(),
                "--numeric-owner",
                ".",
            ],
        )?;
        let _ = std::fs::remove_dir_all(&staging);
    }
    let _ = std::fs::remove_dir_all(&layout.rootfs);
    std::fs::create_dir_all(&layout.rootfs).map_err(|e| e.to_string())?;
    run(
        "tar",
        &[
            "--zstd",
            "-xpf",
            &tarball.to_string_lossy(),
            "-C",
            &layout.rootfs.to_string_lossy(),
            "--numeric-owner",
        ],
    )?;
    Ok(())
}

fn write(root: &Path, path: &str, text: &str) -> Result<(), String> {
    let target = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(target.parent().unwrap_or(root)).map_err(|e| e.to_string())?;
    std::fs::write(&target, text).map_err(at(&target))
}

fn link(root: &Path, target: &str, path: &str) -> Result<(), String> {
    let link = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(link.parent().unwrap_or(root)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(target, &link).map_err(at(&link))
}

/// What differs between this box and a Fedora CoreOS VM, each fixing one observed failure.
pub fn tweak(layout: &Layout) -> Result<(), String> {
    let root = &layout.rootfs;
    write(root, "/etc/hostname", &format!("{}\n", layout.name))?;
    let id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map_err(|e| e.to_string())?
        .trim()
        .replace('-', "");
    write(root, "/etc/machine-id", &format!("{id}\n"))?;
    // nspawn gives /dev/net/tun the host's 0600; rootless networking (and ts4nsnet) need 0666, as on FCOS.
    write(root, "/etc/tmpfiles.d/box-tun.conf", "z /dev/net/tun 0666 root root -\n")?;
    // The host's cgroup v1 owns the controllers, so podman's pids limit cannot apply inside.
    write(
        root,
        "/etc/containers/containers.conf",
        "[containers]\n# box: no cgroup v2 controllers\npids_limit = 0\n",
    )?;
    // Nothing else pulls network-online.target in, and podman's user units wait for it.
    link(
        root,
        "/usr/lib/systemd/system/network-online.target",
        "/etc/systemd/system/multi-user.target.wants/network-online.target",
    )?;
    // The box's end of its veth gets its address at boot, as a VM's DHCP would (tailnet.rs
    // sets up the host's end).
    let box_ip = layout.ip;
    write(
        root,
        "/etc/systemd/system/box-network.service",
        &format!(
            "[Unit]\nDescription=box: the lab network on host0\nBefore=network-online.target\n\n\
             [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=ip link set host0 up\n\
             ExecStart=ip addr replace {box_ip}/24 dev host0\n\n[Install]\nWantedBy=network-online.target\n"
        ),
    )?;
    link(
        root,
        "/etc/systemd/system/box-network.service",
        "/etc/systemd/system/network-online.target.wants/box-network.service",
    )?;
    // No kernel modules in this VM: keep the system "running", not "degraded".
    link(root, "/dev/null", "/etc/systemd/system/systemd-modules-load.service")?;
    // Debian's Ignition relabels files, which needs an SELinux config (and a setfiles, see apply_ignition).
    write(root, "/etc/selinux/config", "SELINUX=disabled\nSELINUXTYPE=targeted\n")?;
    // A fresh user session's first rootless podman run races sd_notify (podman #23002):
    // make the pause process before any quadlet starts.
    write(
        root,
        "/etc/systemd/user/box-podman-warmup.service",
        "[Unit]\nDescription=box: create the rootless podman pause process first\nBefore=podman-user-wait-network-online.service\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/bin/podman unshare /bin/true\n\n[Install]\nWantedBy=default.target\n",
    )?;
    link(
        root,
        "/etc/systemd/user/box-podman-warmup.service",
        "/etc/systemd/user/default.target.wants/box-podman-warmup.service",
    )?;
    // No registry here: containers run from this busybox root filesystem (Rootfs=).
    let image = root.join("opt/box/busybox");
    for dir in ["bin", "www", "tmp", "etc"] {
        std::fs::create_dir_all(image.join(dir)).map_err(|e| e.to_string())?;
    }
    std::fs::copy(root.join("bin/busybox"), image.join("bin/busybox"))
        .map_err(|e| format!("busybox: {e}"))?;
    for applet in ["sh", "cat", "echo", "sleep", "httpd", "wget", "ip", "ls", "nc"] {
        link(&image, "busybox", &format!("/bin/{applet}"))?;
    }
    write(&image, "/www/index.html", "hello from the box\n")?;
    write(&image, "/etc/passwd", "root:x:0:0:root:/:/bin/sh\n")?;
    write(&image, "/etc/group", "root:x:0:\n")?;
    // What podman would otherwise try to create in a root filesystem it may not write.
    link(&image, "/proc/mounts", "/etc/mtab")?;
    for file in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        write(&image, file, "")?;
    }
    Ok(())
}

/// Applies `config` (Ignition 3.3.0) with the rootfs's own Ignition binary, then enables the
/// units it enabled (FCOS does that with presets at first boot).
pub fn apply_ignition(layout: &Layout, config: &Path) -> Result<(), String> {
    let root = &layout.rootfs;
    run(&root.join("usr/bin/ignition-validate").to_string_lossy(), &[&config.to_string_lossy()])?;
    let state = layout.own("ignition");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let shim = layout.work.join("shim");
    std::fs::create_dir_all(&shim).map_err(|e| e.to_string())?;
    std::fs::write(shim.join("setfiles"), "#!/bin/sh\ncat >/dev/null\nexit 0\n")
        .map_err(|e| e.to_string())?;
    run("chmod", &["755", &shim.join("setfiles").to_string_lossy()])?;
    let ignition = root.join("usr/lib/dracut/modules.d/30ignition/ignition");
    let cache = state.join("ignition.json").to_string_lossy().into_owned();
    let state_file = state.join("state").to_string_lossy().into_owned();
    let root_arg = root.to_string_lossy().into_owned();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default());
    for stage in ["fetch-offline", "files"] {
        let mut args = vec![
            "-platform",
            "file",
            "-root",
            &root_arg,
            "-config-cache",
            &cache,
            "-state-file",
            &state_file,
            "-log-to-stdout",
            "-stage",
            stage,
        ];
        let neednet = state.join("neednet").to_string_lossy().into_owned();
        if stage == "fetch-offline" {
            args.extend(["-neednet", &neednet]);
        }
        let out = std::process::Command::new(&ignition)
            .args(&args)
            .env("IGNITION_CONFIG_FILE", config)
            .env("PATH", &path)
            .output()
            .map_err(at(&ignition))?;
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        std::fs::write(layout.own(&format!("ignition-{stage}.log")), &log)
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let lines: Vec<&str> =
                log.lines().filter(|l| l.contains("CRITICAL") || l.contains("ERROR")).collect();
            return Err(format!("ignition {stage} failed:\n{}", lines.join("\n")));
        }
    }
    let preset = root.join("etc/systemd/system-preset/20-ignition.preset");
    if let Ok(text) = std::fs::read_to_string(&preset) {
        let units: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("enable ")).map(str::trim).collect();
        let mut args = vec!["--root", &root_arg, "preset"];
        args.extend(&units);
        if !units.is_empty() {
            run("systemctl", &args)?;
        }
    }
    Ok(())
}
