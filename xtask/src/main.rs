//! `cargo xtask <task>` (the alias is in `.cargo/config.toml`). Tasks are Rust rather than shell
//! so they run the same on every machine with nothing but cargo.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use tailpod_core::located::at;
use xtask::build_ign::{self, Build};
use xtask::root;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "tailpod's project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Format check, clippy (warnings are errors) and every test of the workspace: what CI runs.
    Test,
    /// Translate a Butane config (variant fcos, 1.4.0 to 1.6.0) to Ignition, like the butane CLI.
    Butane(butane::cli::Args),
    /// Build butane/tailpod.ign from butane/tailpod.bu, the overlays and secrets.bu.
    BuildIgn {
        /// Without butane/secrets.bu, make a THROWAWAY one with random values (to try things out).
        #[arg(long)]
        throwaway_secrets: bool,
        /// Write Ignition 3.3.0 (for older Ignition, e.g. Debian's 2.14) when no newer field is used.
        #[arg(long, value_name = "VERSION")]
        ignition_version: Option<String>,
        /// Where to write [default: DIR/tailpod.ign, DIR/tailpod-NAME.ign with --host].
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// The directory with tailpod.bu and the overlays [default: butane/ of this workspace].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Build for host NAME of a fleet: DIR/hosts/NAME.bu (its hostname, its own values) is
        /// applied after the other overlays, before secrets.bu.
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
    },
    /// Release binaries (<tool>-<version>-linux-<arch>) and SHA256SUMS, into dist/.
    Dist {
        /// A target triple to build for (repeatable) [default: this machine's].
        #[arg(long = "target", value_name = "TRIPLE")]
        targets: Vec<String>,
        /// Also write butane/release.bu, which installs these binaries at first boot.
        #[arg(long)]
        update_butane: bool,
        /// Where hosts download the binaries from [default: the GitHub release of this version].
        #[arg(long, value_name = "URL")]
        release_url: Option<String>,
        /// The architecture release.bu installs [default: x86_64].
        #[arg(long, value_name = "ARCH", default_value = "x86_64")]
        arch: String,
        /// Build a second time from scratch and check the bytes are the same.
        #[arg(long)]
        verify_reproducible: bool,
    },
    /// Print timings: build-ign on the shipped config, run by this xtask binary.
    Bench,
    /// The end-to-end box: an FCOS-like host (systemd-nspawn, real Ignition) running tailpod.
    Box {
        #[arg(value_parser = ["up", "test", "down", "shell"], default_value = "test")]
        action: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Test => test(),
        Task::Butane(args) => butane::cli::run(&args),
        Task::Bench => bench(),
        Task::Dist { targets, update_butane, release_url, arch, verify_reproducible } => {
            run_dist(&targets, update_butane, release_url, &arch, verify_reproducible)
        }
        Task::Box { action } => run_box(&action),
        Task::BuildIgn { throwaway_secrets, ignition_version, output, dir, host } => {
            let dir = dir.unwrap_or_else(|| root().join("butane"));
            let name = host.as_ref().map_or("tailpod.ign".into(), |h| format!("tailpod-{h}.ign"));
            let output = output.unwrap_or_else(|| dir.join(name));
            let build = Build {
                dir,
                output,
                throwaway_secrets,
                ignition_version,
                build_id: None,
                sums: None,
                host,
            };
            build_ign::build(&build).map(|built| {
                for note in built.notes {
                    eprintln!("build-ign: {note}");
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run_dist(
    targets: &[String],
    update_butane: bool,
    release_url: Option<String>,
    arch: &str,
    verify_reproducible: bool,
) -> Result<(), String> {
    use xtask::dist;
    let out = root().join("dist");
    let artifacts = dist::dist(targets, &out, &root().join("target/dist"), dist::Flavor::Release)?;
    for artifact in &artifacts {
        println!(
            "dist: {} {} bytes ({:.2} MiB) sha256 {}",
            artifact.name,
            artifact.size,
            artifact.size as f64 / 1048576.0,
            artifact.sha256
        );
    }
    if verify_reproducible {
        // From scratch, at the same path: the first build's target dir is moved aside.
        let target = root().join("target/dist");
        let aside = root().join("target/dist.first");
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(&target, &aside)
            .map_err(|e| format!("moving {} aside: {e}", target.display()))?;
        let again = std::env::temp_dir().join(format!("tailpod-dist-again-{}", std::process::id()));
        let second = dist::dist(targets, &again, &target, dist::Flavor::Release);
        let _ = std::fs::remove_dir_all(&again);
        let _ = std::fs::remove_dir_all(&aside);
        let second = second?;
        let differ: Vec<String> = artifacts
            .iter()
            .zip(&second)
            .filter(|(a, b)| a.sha256 != b.sha256)
            .map(|(a, b)| format!("{} ({} then {})", a.name, a.sha256, b.sha256))
            .collect();
        if !differ.is_empty() {
            return Err(format!("dist: not reproducible: {}", differ.join(", ")));
        }
        println!(
            "dist: a second build from scratch gave the same bytes for all {} files",
            artifacts.len()
        );
    }
    if update_butane {
        let url = release_url
            .unwrap_or_else(|| dist::default_release_url(&dist::version().unwrap_or_default()));
        let sums = dist::read_sums(&out.join("SHA256SUMS"))?;
        let text = dist::release_butane(&sums, arch, &url)?;
        let path = root().join("butane").join(dist::RELEASE_BU);
        std::fs::write(&path, text).map_err(at(&path))?;
        println!("dist: wrote {} ({arch}, from {url})", path.display());
    }
    Ok(())
}

/// `cargo xtask box up|test|down|shell`.
fn run_box(action: &str) -> Result<(), String> {
    use xtask::testbox::{Layout, fleet, machine, operations, scenario, unavailable};
    let layout = Layout::default();
    if let Some(why) = unavailable() {
        return Err(format!("box: cannot run here: {why}"));
    }
    match action {
        "down" => {
            scenario::down(&layout);
            Ok(())
        }
        "shell" => {
            let running = machine::Machine::running(&layout)
                .ok_or("box: not running (cargo xtask box up)")?;
            let status = running.shell().map_err(|e| e.to_string())?;
            if status { Ok(()) } else { Err(String::new()) }
        }
        "up" => {
            let (_, lab, boot) = scenario::up(&layout)?;
            eprintln!("box: lab tailnet at {} (API {})", lab.control_url, lab.api_url);
            eprintln!(
                "box: up in {:.1}s; `cargo xtask box shell` to look around, `cargo xtask box down` to stop",
                boot.as_secs_f64()
            );
            Ok(())
        }
        _ => {
            let started = std::time::Instant::now();
            let (running, lab, boot) = scenario::up(&layout)?;
            let result = scenario::test(&layout, &running, &lab, boot).and_then(|timings| {
                let (running, _) = scenario::reboot_during_deploy(&layout, running)?;
                let moved = fleet::test(&layout, &running, &lab)?;
                operations::test(&layout, &running)?;
                Ok((timings, moved))
            });
            scenario::down(&layout);
            let (timings, moved) = result?;
            println!(
                "box: boot {:.1}s (the first sync runs in it); boot to containers deployed {:.1}s; boot to a container on the tailnet {:.1}s (its node up, by the box's clock; {:.1}s until a peer reached it); push to change applied {:.1}s; whole test {:.1}s",
                boot.as_secs_f64(),
                timings.boot_to_deployed.as_secs_f64(),
                timings.boot_to_node.as_secs_f64(),
                timings.boot_to_tailnet.as_secs_f64(),
                timings.push_to_applied.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            println!(
                "box: fleet: a container moved between two hosts answered by its name from the new one {:.1}s after the push",
                moved.as_secs_f64()
            );
            println!("box: 1 passed, 0 failed");
            Ok(())
        }
    }
}

/// Times `build-ign` on a copy of the shipped config (with throwaway secrets), run as a separate
/// process by this (already built) binary, as a user would run it.
fn bench() -> Result<(), String> {
    const RUNS: usize = 20;
    let scratch = std::env::temp_dir().join(format!("tailpod-bench-{}", std::process::id()));
    let copy = Command::new("cp").arg("-r").arg(root().join("butane")).arg(&scratch).status();
    if !copy.is_ok_and(|s| s.success()) {
        return Err(format!("copying butane/ to {}", scratch.display()));
    }
    let _ = std::fs::remove_file(scratch.join("secrets.bu"));
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let started = std::time::Instant::now();
        let out = Command::new(&me)
            .args(["build-ign", "--throwaway-secrets", "--dir"])
            .arg(&scratch)
            .output()
            .map_err(|e| e.to_string())?;
        times.push(started.elapsed());
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    times.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    println!(
        "cargo xtask build-ign on the shipped config ({RUNS} runs of {}): min {:.1} ms, median {:.1} ms, max {:.1} ms",
        me.display(),
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1])
    );
    Ok(())
}

/// Runs `cargo ARGS` in the workspace root, echoing the command first.
fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_with(&[], args)
}

/// [`cargo`] with environment variables set for it.
fn cargo_with(env: &[(&str, &str)], args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed: {status}", args.join(" ")))
    }
}

/// Everything CI checks, in the order that fails fastest.
fn test() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"])?;
    // The docs build without a warning (a broken or private link fails here, not on a reader).
    cargo_with(
        &[("RUSTDOCFLAGS", "-D warnings")],
        &["doc", "--workspace", "--no-deps", "--locked"],
    )?;
    cargo(&["test", "--workspace", "--locked"])?;
    check_fuzz_targets()
}

/// The fuzz targets (each `crates/*/fuzz` is a workspace of its own, for cargo-fuzz) still
/// compile against the crates they fuzz. libFuzzer is C++: without a C++ compiler this is
/// skipped with a note, and fails where every test must run (`TAILPOD_REQUIRE_ALL_TESTS`).
fn check_fuzz_targets() -> Result<(), String> {
    let has_cxx = Command::new("c++").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_cxx {
        let why = "the fuzz targets were not compiled: no C++ compiler (c++) for libFuzzer";
        if std::env::var_os("TAILPOD_REQUIRE_ALL_TESTS").is_some() {
            return Err(why.into());
        }
        eprintln!("note: {why}");
        return Ok(());
    }
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .map_err(|e| format!("crates/: {e}"))?
        .filter_map(|e| Some(e.ok()?.path().join("fuzz/Cargo.toml")))
        .filter(|manifest| manifest.is_file())
        .collect();
    manifests.sort();
    // One target directory for all three: they share most of their dependencies.
    let target = root().join("target/fuzz-check");
    for manifest in manifests {
        let manifest = manifest.to_string_lossy().into_owned();
        let target = target.to_string_lossy().into_owned();
        cargo(&[
            "check",
            "--locked",
            "--bins",
            "--manifest-path",
            &manifest,
            "--target-dir",
            &target,
        ])?;
    }
    Ok(())
}
