//! The command line of the real butane, for the `butane` binary and `cargo xtask butane` alike.

use std::io::Read;
use std::path::PathBuf;

use crate::{Options, butane, to_json};

/// Translate a Butane config (variant fcos, 1.4.0 to 1.6.0) to Ignition, like the butane CLI.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Fail on warnings.
    #[arg(long, short = 's')]
    pub strict: bool,
    /// Indent the output.
    #[arg(long, short = 'p')]
    pub pretty: bool,
    /// Directory for `local:`, `trees` and `*_local` files.
    #[arg(long, short = 'd', value_name = "DIR")]
    pub files_dir: Option<PathBuf>,
    /// Write here instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The Butane config; standard input if absent.
    pub input: Option<PathBuf>,
}

/// Runs one translation: warnings go to standard error (prefixed with the input's name), the
/// config to the output; an error is every line butane would print.
pub fn run(args: &Args) -> Result<(), String> {
    let source = match &args.input {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading standard input: {e}"))?;
            text
        }
    };
    // Butane's lines, prefixed with the file they are about when there is one.
    let prefix = args.input.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
    let located =
        |lines: Vec<String>| lines.into_iter().map(|l| format!("{prefix}{l}")).collect::<Vec<_>>();
    let options = Options { files_dir: args.files_dir.clone() };
    let (config, warnings) =
        butane(&source, &options, args.strict).map_err(|lines| located(lines).join("\n"))?;
    for warning in located(warnings) {
        eprintln!("{warning}");
    }
    let json = to_json(&config, args.pretty);
    match &args.output {
        Some(path) => {
            std::fs::write(path, json).map_err(|e| format!("writing {}: {e}", path.display()))
        }
        None => {
            print!("{json}");
            Ok(())
        }
    }
}
