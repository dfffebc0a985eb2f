//! The `quadsync` command line; the work is done in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tailpod_core::names::PodName;

use quadsync::render::{SpecFile, render};
use quadsync::transforms::{Kind, TransformSet};

/// Deploy rootless Podman Quadlet containers from a git repository, one Linux user per
/// container.
///
/// Exit status: 0 on success, 1 on failure, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the unit that would be deployed for a spec file: transforms merged, `{{.Name}}`
    /// substituted, `Pod=` set for pod members, and checked.
    ///
    /// Example: quadsync augment --transforms /etc/quadsync/transforms tailscale/web.container
    Augment {
        /// The transform directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/quadsync/transforms")]
        transforms: PathBuf,
        /// The root of the definitions repo [default: the nearest directory above FILE that
        /// holds .git].
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
        /// A .container or .pod file in the repo.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    // One line per event, no timestamp: journald adds its own.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|buf, record| {
            use std::io::Write;
            writeln!(buf, "{}: {}", record.level().as_str().to_lowercase(), record.args())
        })
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Augment { transforms, repo, file } => augment(&transforms, repo.as_deref(), &file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn augment(transforms: &Path, repo: Option<&Path>, file: &Path) -> Result<(), String> {
    let absolute = std::path::absolute(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let root = match repo {
        Some(repo) => std::path::absolute(repo).map_err(|e| format!("{}: {e}", repo.display()))?,
        None => absolute
            .ancestors()
            .skip(1)
            .find(|dir| dir.join(".git").exists())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                format!(
                    "{}: no .git above it, so the repo root is unknown; pass --repo DIR",
                    file.display()
                )
            })?,
    };
    let relative = absolute
        .strip_prefix(&root)
        .map_err(|_| format!("{} is not inside the repo {}", file.display(), root.display()))?;
    let spec = SpecFile::locate(relative, file).map_err(|e| e.to_string())?;
    let text =
        std::fs::read_to_string(&absolute).map_err(|e| format!("{}: {e}", file.display()))?;
    let transforms = TransformSet::load(transforms).map_err(|e| e.to_string())?;
    let dir = absolute.parent().unwrap_or(&root);
    let pods = pods_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rendered = render(&spec, &text, &transforms, &pods).map_err(|e| e.to_string())?;
    print!("{rendered}");
    Ok(())
}

/// The pods defined in a repo directory (valid names only; an invalid one is reported when
/// its own file is rendered).
fn pods_in(dir: &Path) -> std::io::Result<Vec<PodName>> {
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_pod = path.extension().and_then(|e| e.to_str()).and_then(Kind::from_extension)
            == Some(Kind::Pod);
        if let (true, Some(stem)) = (is_pod, path.file_stem().and_then(|s| s.to_str())) {
            pods.extend(stem.parse::<PodName>().ok());
        }
    }
    Ok(pods)
}
