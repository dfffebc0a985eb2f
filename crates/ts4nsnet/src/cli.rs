//! The slirp4netns-compatible command line.
//!
//! Podman probes the command with `--help` (which must exit 0) and passes a flag only if its name
//! appears in the help text, so every flag slirp4netns has that podman may pass is accepted here,
//! even those that mean nothing for a tailnet (they are logged and ignored by the caller).
//!
//! The forms podman uses (see `shared/reference/ts4nsnet-notes.md`, measured):
//!
//! * 4.3: `… -c -e 3 -r 4 --netns-type=path /run/netns/netns-UUID tap0`
//! * 4.3 with a userns made by the OCI runtime: `… -c -e 3 -r 4 PID tap0` (no `--netns-type`, so
//!   the default is `pid`, as in slirp4netns)
//! * 5.x: `… -c -r 3 -e 4 --netns-type=path PATH tap0` (the fds are swapped: never assume them)

use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, ValueEnum};

/// How the first positional argument names the network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetnsType {
    /// A process ID whose network namespace is used (`/proc/PID/ns/net`).
    Pid,
    /// A path to a network namespace file (`/run/netns/NAME`).
    Path,
}

/// `--version`, which says so when the node was built with its test-only knobs on (however
/// they got turned on: this feature, or Cargo unifying features with the test tailnet's);
/// `cargo xtask dist` refuses a binary that carries this marker.
pub const VERSION: &str = if tailnode::INSECURE_FOR_TESTS {
    concat!(env!("CARGO_PKG_VERSION"), " (test-insecure: plain-http control key, unverified DERP)")
} else {
    env!("CARGO_PKG_VERSION")
};

const PLUGIN_HELP: &str =
    "As a netavark plugin (podman 5 and later), with JSON on stdin and stdout:
  ts4nsnet info | create | setup NETNS | teardown NETNS";

/// Put a podman container on the tailnet as its own node (a slirp4netns-compatible network
/// command).
///
/// Podman runs it with `--network-cmd-path`; the node's settings come from the environment:
/// TS_AUTHKEY, TS_HOSTNAME, TS_TAGS, TS_CONTROL_URL, TS_STATE_DIR.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "ts4nsnet", version = VERSION, about, long_about, after_help = PLUGIN_HELP)]
pub struct SlirpArgs {
    /// Bring up the interface and configure its addresses and routes.
    #[arg(short = 'c', long)]
    pub configure: bool,
    /// Write one byte to this fd once the interface is ready.
    #[arg(short = 'r', long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// Exit when this fd reaches EOF (podman's exit pipe).
    #[arg(short = 'e', long, value_name = "FD")]
    pub exit_fd: Option<i32>,
    /// MTU podman asks for; the tailnet's own MTU (1280) is used when smaller.
    #[arg(short = 'm', long, value_name = "MTU")]
    pub mtu: Option<u32>,
    /// How to read the first positional argument.
    #[arg(long, value_enum, default_value = "pid")]
    pub netns_type: NetnsType,
    /// Accepted for compatibility: the tailnet never reaches the host's loopback anyway.
    #[arg(long)]
    pub disable_host_loopback: bool,
    /// Accepted for compatibility (slirp4netns's own mount sandbox).
    #[arg(long)]
    pub enable_sandbox: bool,
    /// Accepted for compatibility (slirp4netns's own seccomp filter).
    #[arg(long)]
    pub enable_seccomp: bool,
    /// Configure the node's IPv6 address and default route as well.
    #[arg(short = '6', long)]
    pub enable_ipv6: bool,
    /// Accepted for compatibility: tailnet addresses come from the control server.
    #[arg(long, value_name = "CIDR")]
    pub cidr: Option<String>,
    /// Accepted for compatibility: outbound traffic leaves through the tailnet.
    #[arg(long, value_name = "ADDR")]
    pub outbound_addr: Option<String>,
    /// Accepted for compatibility: outbound traffic leaves through the tailnet.
    #[arg(long, value_name = "ADDR")]
    pub outbound_addr6: Option<String>,
    /// Accepted for compatibility: port forwarding is not needed on a tailnet (every port of the
    /// node is reachable, subject to the tailnet's ACLs).
    #[arg(short = 'a', long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// Accepted for compatibility.
    #[arg(long, value_name = "PATH")]
    pub userns_path: Option<PathBuf>,
    /// Once ready, write the node's name and addresses here as JSON (the netavark plugin reads
    /// it; scripts may too). Written before the ready byte, replaced atomically.
    #[arg(long, value_name = "PATH")]
    pub status_file: Option<PathBuf>,
    /// The container's network namespace: a PID, or a path with --netns-type=path.
    #[arg(value_name = "PID|PATH")]
    pub target: String,
    /// The interface to create in the namespace (podman passes tap0).
    #[arg(value_name = "TAPNAME")]
    pub tap_name: String,
}

/// The namespace to join, resolved from the positional argument and `--netns-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    Pid(u32),
    Path(PathBuf),
}

impl SlirpArgs {
    /// Parses `argv` (program name first) and refuses what clap's per-flag parsing cannot see;
    /// errors are clap's, with the usage (`--help` and `--version` are errors that exit 0).
    pub fn try_parse_checked<I, T>(argv: I) -> Result<SlirpArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = SlirpArgs::try_parse_from(argv)?;
        args.check().map_err(|e| SlirpArgs::command().error(ErrorKind::ArgumentConflict, e))?;
        Ok(args)
    }

    /// Refuses one fd given for two flags: each flag's fd is adopted (and so closed) on its own,
    /// and closing one fd twice is an I/O-safety violation the standard library aborts on.
    /// Called before any fd is adopted.
    pub fn check(&self) -> Result<(), String> {
        let fds = [("--ready-fd", self.ready_fd), ("--exit-fd", self.exit_fd)];
        for (i, (flag, fd)) in fds.iter().enumerate() {
            let Some(fd) = fd else { continue };
            if let Some((earlier, _)) = fds[..i].iter().find(|(_, other)| *other == Some(*fd)) {
                return Err(format!(
                    "{earlier} and {flag} are both fd {fd}: each needs its own fd"
                ));
            }
        }
        Ok(())
    }

    /// The namespace named on the command line.
    pub fn netns(&self) -> Result<Netns, String> {
        match self.netns_type {
            NetnsType::Pid => self.target.parse().map(Netns::Pid).map_err(|_| {
                format!("{:?} is not a PID (use --netns-type=path for a path)", self.target)
            }),
            NetnsType::Path => Ok(Netns::Path(PathBuf::from(&self.target))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(line: &str) -> SlirpArgs {
        SlirpArgs::try_parse_from(std::iter::once("ts4nsnet").chain(line.split_whitespace()))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    #[test]
    fn podman_4_3_path_form() {
        let args = parse(
            "--disable-host-loopback --mtu=65520 --enable-sandbox --enable-seccomp --enable-ipv6 -c -e 3 -r 4 --netns-type=path /run/netns/netns-1234 tap0",
        );
        assert_eq!((args.exit_fd, args.ready_fd, args.mtu), (Some(3), Some(4), Some(65520)));
        assert!(args.configure && args.enable_ipv6);
        assert_eq!(args.netns(), Ok(Netns::Path("/run/netns/netns-1234".into())));
        assert_eq!(args.tap_name, "tap0");
    }

    #[test]
    fn podman_4_3_pid_form_defaults_to_pid() {
        let args = parse(
            "--disable-host-loopback --mtu=65520 --enable-sandbox --enable-seccomp -c -e 3 -r 4 4242 tap0",
        );
        assert_eq!(args.netns(), Ok(Netns::Pid(4242)));
        assert!(!args.enable_ipv6);
    }

    #[test]
    fn podman_5_swaps_the_fds() {
        let args = parse(
            "--disable-host-loopback --mtu=65520 --enable-sandbox --enable-seccomp --enable-ipv6 -c -r 3 -e 4 --netns-type=path /run/user/1000/netns/netns-x tap0",
        );
        assert_eq!((args.ready_fd, args.exit_fd), (Some(3), Some(4)));
    }

    #[test]
    fn rootless_netns_helper_form_has_no_exit_fd() {
        let args = parse("-c -r 3 --netns-type=path /run/user/1000/netns/rootless-netns tap0");
        assert_eq!((args.ready_fd, args.exit_fd), (Some(3), None));
    }

    #[test]
    fn bad_forms_are_refused() {
        let try_parse = |line: &str| {
            SlirpArgs::try_parse_from(std::iter::once("ts4nsnet").chain(line.split_whitespace()))
        };
        assert!(try_parse("-c tap0").is_err());
        assert!(try_parse("--netns-type=bogus 1 tap0").is_err());
        assert!(try_parse("-r three 1 tap0").is_err());
        assert!(parse("/run/netns/x tap0").netns().is_err());
    }

    #[test]
    fn one_fd_for_two_flags_is_a_usage_error() {
        let argv = |line: &'static str| std::iter::once("ts4nsnet").chain(line.split_whitespace());
        let e = SlirpArgs::try_parse_checked(argv("-c -r 3 -e 3 1 tap0")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("--ready-fd and --exit-fd are both fd 3: each needs its own fd"),
            "{e}"
        );
        assert!(SlirpArgs::try_parse_checked(argv("-c -r 3 -e 4 1 tap0")).is_ok());
        assert!(SlirpArgs::try_parse_checked(argv("-c -r 3 1 tap0")).is_ok());
    }

    #[test]
    fn help_names_every_flag_podman_probes_for() {
        let help = SlirpArgs::command().render_long_help().to_string();
        for flag in [
            "--disable-host-loopback",
            "--mtu",
            "--enable-sandbox",
            "--enable-seccomp",
            "--cidr",
            "--outbound-addr",
            "--enable-ipv6",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }
}
