//! The `tailmint` command line; the work is done in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tailpod_core::names::{Hostname, Tag};

use tailmint::api::{self, ApiError, Client, DeviceId, KeyRequest, Tailnet, stale_devices};
use tailmint::credentials::{self, Flavor, Secret, Sources};
use tailmint::redact::Redactor;
use tailmint::{logging, output, privileges};

const DEFAULT_CONFIG: &str = "/etc/tailscale/oauth.env";

/// Mint a short-lived, tagged, ephemeral Tailscale auth key from an OAuth client and write it to
/// a file as TS_AUTHKEY=… (and TS_HOSTNAME=…), for a service's EnvironmentFile=.
///
/// Credentials: TS_API_CLIENT_ID and TS_API_CLIENT_SECRET, each from the environment, a systemd
/// credential of that name, or the --config file, in that order. The file may also set
/// TS_TAILNET and TS_API_URL. For Headscale: TS_API_FLAVOR=headscale, TS_API_KEY (an API key),
/// TS_API_URL (the server) and, before Headscale 0.28, TS_HEADSCALE_USER (the keys' user).
///
/// The config file is refused if group or others may write it, or if it is owned by anyone but
/// root or the running user.
///
/// Run as root through sudo, tailmint reads the credentials, then becomes the calling user
/// (SUDO_UID/SUDO_GID): the output must then be inside that user's /run/user/UID/, and is owned
/// by them. It checks that it can write the output before it asks for a key. The key never
/// appears in arguments, logs or messages, nor do the secret and the access token; what the
/// server says is shown escaped and shortened. RUST_LOG raises tailmint's own log level only.
///
/// Before a new node named HOSTNAME joins, offline devices with that hostname and exactly these
/// tags are deleted, so the new node gets the name and not NAME-1 (--no-replace-stale to keep
/// them; a failure there is only a warning).
///
/// Exit status: 0 the key was written; 1 the API, the network or the write failed; 2 usage or
/// configuration error.
#[derive(Debug, Parser)]
#[command(version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// Env file with the OAuth client's credentials.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// ACL tag for the key (tag:NAME); repeat for several. The OAuth client must own them.
    #[arg(long = "tag", value_name = "TAG", required_unless_present = "caller")]
    tags: Vec<Tag>,
    /// Hostname the node will use: written as TS_HOSTNAME and used to find stale devices.
    #[arg(long, value_name = "HOST")]
    hostname: Option<Hostname>,
    /// File to write (atomically, mode 0600).
    #[arg(long, value_name = "PATH", required_unless_present = "caller")]
    output: Option<PathBuf>,
    /// Mint for the sudo caller USER: hostname USER, tag tag:USER, output
    /// /run/user/UID/tailmint/USER.env. One sudo rule with this flag and no wildcards lets each
    /// container user mint its own key and nothing else. The hostname is TS_HOSTNAME instead
    /// when the caller's environment sets it and sudo keeps it (tailpod's rule keeps it, for
    /// names per host such as exporter-web1): the tag, which ACLs go by, stays tag:USER.
    #[arg(long, conflicts_with_all = ["tags", "hostname", "output"])]
    caller: bool,
    /// Tailnet name [default: TS_TAILNET from the config, else "-", the client's own tailnet].
    #[arg(long, value_name = "NAME")]
    tailnet: Option<String>,
    /// How long the key stays valid: seconds, or a number with s, m, h or d.
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = parse_duration)]
    expiry: Duration,
    /// Let the key register more than one node.
    #[arg(long)]
    reusable: bool,
    /// Make nodes that persist after they go offline (by default they are ephemeral: removed
    /// soon after they disconnect).
    #[arg(long)]
    no_ephemeral: bool,
    /// Make nodes that need approval in the admin console before they can talk.
    #[arg(long)]
    no_preauthorized: bool,
    /// Key description (letters, digits, spaces and '-', at most 50) [default: "tailmint HOST"].
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Base URL of the API [default: TS_API_URL from the config, else https://api.tailscale.com].
    #[arg(long, value_name = "URL", env = "TS_API_URL")]
    api_url: Option<String>,
    /// Delete offline devices with the same hostname and tags (the default).
    #[arg(long, overrides_with = "no_replace_stale")]
    replace_stale: bool,
    /// Keep offline devices with the same hostname and tags.
    #[arg(long, overrides_with = "replace_stale")]
    no_replace_stale: bool,
    /// Give up after this long, retries included: seconds, or a number with s, m or h.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90, 90s, 15m, 1h or 7d"))?;
    let unit = match &text[digits.len()..] {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => return Err(format!("unknown unit {other:?} (use s, m, h or d)")),
    };
    match number.checked_mul(unit) {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("{text:?} is not a positive duration")),
    }
}

/// A failure, and the exit status it earns.
enum Failure {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let redactor = Arc::new(Redactor::new());
    logging::init(redactor.clone());
    match run(Cli::parse(), redactor) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            log::error!("{message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// The environment variable that names a `--caller` node other than after its user.
const HOSTNAME_VARIABLE: &str = "TS_HOSTNAME";

/// The hostname of a `--caller` node: `TS_HOSTNAME` if set, else the user's name.
fn caller_hostname(env: &dyn Fn(&str) -> Option<String>, user: &str) -> Result<Hostname, String> {
    match env(HOSTNAME_VARIABLE).filter(|h| !h.is_empty()) {
        Some(named) => named.parse().map_err(|e| format!("{HOSTNAME_VARIABLE}: {e}")),
        None => user.parse().map_err(|e| format!("--caller: {e}")),
    }
}

fn description(cli: &Cli) -> Result<String, String> {
    let env = |name: &str| std::env::var(name).ok();
    let caller = match cli.caller {
        true => env("SUDO_USER").and_then(|user| caller_hostname(&env, &user).ok()),
        false => None,
    }
    .map(|hostname| hostname.to_string());
    let text = match (&cli.description, cli.hostname.as_ref().map(Hostname::to_string).or(caller)) {
        (Some(text), _) => text.clone(),
        (None, Some(hostname)) => format!("tailmint {hostname}"),
        (None, None) => "tailmint".into(),
    };
    let valid = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ');
    if !valid || text.len() > 50 {
        return Err(format!(
            "description {text:?} may hold only letters, digits, spaces and '-', at most 50 (the API's rule)"
        ));
    }
    Ok(text)
}

fn run(cli: Cli, redactor: Arc<Redactor>) -> Result<(), Failure> {
    let env = |name: &str| std::env::var(name).ok();
    let config_path = cli.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let description = description(&cli).map_err(Failure::Usage)?;

    // As root: the credentials. Then nothing more needs root.
    let sources = Sources {
        config: &config_path,
        config_required: cli.config.is_some(),
        credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        env: &env,
    };
    let config = credentials::load(&sources).map_err(Failure::Usage)?;
    redactor.add(config.flavor.secret());
    for key in &config.unknown_keys {
        log::warn!("{}: unknown key {key} ignored", config_path.display());
    }
    let api_url = cli.api_url.clone().or(config.api_url.clone());
    let api_url = api_url.as_deref().unwrap_or(api::DEFAULT_API_URL);
    // At once: a URL that cannot work would otherwise be retried until the deadline.
    api::check_api_url(api_url).map_err(|e| {
        let from = if cli.api_url.is_some() { "--api-url" } else { credentials::API_URL };
        Failure::Usage(format!("{from}: {e}"))
    })?;
    let caller = privileges::sudo_caller(&env).map_err(Failure::Usage)?;
    let (tags, hostname, output_path) = if cli.caller {
        let caller = caller
            .as_ref()
            .ok_or_else(|| Failure::Usage("--caller needs to run as root through sudo".into()))?;
        let user = env("SUDO_USER")
            .ok_or_else(|| Failure::Usage("--caller needs SUDO_USER (set by sudo)".into()))?;
        let tag: Tag =
            format!("tag:{user}").parse().map_err(|e| Failure::Usage(format!("--caller: {e}")))?;
        let hostname = caller_hostname(&env, &user).map_err(Failure::Usage)?;
        let path = output::runtime_dir(caller.uid).join("tailmint").join(format!("{user}.env"));
        (vec![tag], Some(hostname), path)
    } else {
        (cli.tags.clone(), cli.hostname.clone(), cli.output.clone().unwrap_or_default())
    };
    let confine = caller.as_ref().map(|c| output::runtime_dir(c.uid));
    output::check_path(&output_path, confine.as_deref()).map_err(Failure::Usage)?;
    let tailnet = cli.tailnet.clone().or(config.tailnet.clone()).unwrap_or_else(|| "-".into());
    let tailnet: Tailnet = tailnet
        .parse()
        .map_err(|e| Failure::Usage(format!("--tailnet or {}: {e}", credentials::TAILNET)))?;
    if let Some(caller) = &caller {
        privileges::become_caller(caller).map_err(Failure::Runtime)?;
        log::debug!("running as uid {} gid {}", caller.uid, caller.gid);
    }
    // As the caller, before any request: an output that cannot be written costs no key.
    let key_file = output::KeyFile::create(&output_path).map_err(Failure::Runtime)?;

    let client = Client::new(api_url, cli.timeout, redactor.clone());

    let request = KeyRequest {
        tags: tags.clone(),
        reusable: cli.reusable,
        ephemeral: !cli.no_ephemeral,
        preauthorized: !cli.no_preauthorized,
        expiry: cli.expiry,
        description,
    };
    let (key, authority) = match &config.flavor {
        Flavor::Tailscale { client_id, client_secret } => {
            let token = client.token(client_id, client_secret).map_err(|e| {
                Failure::Runtime(match e {
                    ApiError::Refused { status: 400 | 401 | 403, message } => format!(
                        "the OAuth client was refused ({message}): check {} and {} in {}",
                        credentials::CLIENT_ID,
                        credentials::CLIENT_SECRET,
                        config_path.display()
                    ),
                    other => format!("requesting an access token from {api_url}: {other}"),
                })
            })?;
            let key = client
                .create_key(&token, &tailnet, &request)
                .map_err(|e| Failure::Runtime(explain_key_error(e, &tags, &tailnet)))?;
            (key, Authority::Tailscale(token))
        }
        Flavor::Headscale { api_key, user } => {
            let refused = |e: ApiError| {
                Failure::Runtime(match e {
                    ApiError::Refused { status: 401, message } => format!(
                        "the Headscale API key was refused ({message}): check {} in {}",
                        credentials::API_KEY,
                        config_path.display()
                    ),
                    ApiError::Refused { status: 400, message } if message.contains("tag") => {
                        format!("Headscale refused the tags {} ({message})", tags.join(", "))
                    }
                    ApiError::Refused { message, .. } if message.contains("user") => format!(
                        "Headscale has no such user ({message}): check {}, or leave it out on \
                         Headscale 0.28 and later",
                        credentials::HEADSCALE_USER
                    ),
                    other => format!("minting a Headscale pre-auth key at {api_url}: {other}"),
                })
            };
            let user_id = match user {
                Some(name) => Some(client.headscale_user_id(api_key, name).map_err(refused)?),
                None => None,
            };
            let key = client
                .headscale_create_key(api_key, user_id.as_deref(), &request)
                .map_err(refused)?;
            (key, Authority::Headscale(api_key.clone()))
        }
    };
    let hostname = hostname.as_ref();
    key_file
        .commit(&output::contents(&key, hostname.map(Hostname::as_str)))
        .map_err(Failure::Runtime)?;
    log::info!(
        "wrote {} key for {} (tags {}, valid {}s) to {}",
        if request.ephemeral { "an ephemeral" } else { "a persistent" },
        hostname.map_or("any hostname", Hostname::as_str),
        request.tag_names().join(","),
        cli.expiry.as_secs(),
        output_path.display()
    );

    if let (Some(hostname), false) = (hostname, cli.no_replace_stale) {
        replace_stale(&client, &redactor, &authority, &tailnet, hostname, &tags);
    }
    Ok(())
}

/// Turns a create-key failure into something a person can act on.
fn explain_key_error(error: ApiError, tags: &[Tag], tailnet: &Tailnet) -> String {
    match error {
        ApiError::Refused { status: 400, message } if message.contains("tag") => {
            let all: Vec<&str> = tags.iter().map(Tag::as_str).collect();
            let named: Vec<&str> = all.iter().copied().filter(|t| message.contains(t)).collect();
            let named = if named.is_empty() { all.join(", ") } else { named.join(", ") };
            format!(
                "the OAuth client may not create keys tagged {named}: give it (or a tag that owns it) that tag ({message})"
            )
        }
        ApiError::Refused { status: 401, message } => {
            format!("the access token was rejected ({message})")
        }
        ApiError::Refused { status: 403, message } => {
            format!(
                "the OAuth client may not create auth keys: it needs the auth_keys scope ({message})"
            )
        }
        ApiError::Refused { status: 404, message } => {
            format!("tailnet {:?} not found ({message})", tailnet.to_string())
        }
        other => format!("creating an auth key: {other}"),
    }
}

/// Who the run speaks to the API as, once the key is minted: for the stale devices.
enum Authority {
    Tailscale(Secret),
    Headscale(Secret),
}

/// Deletes offline devices the new node replaces; failures are warnings. Device names and ids
/// come from the server, so they are shown as [`Redactor::server_text`] makes them.
fn replace_stale(
    client: &Client,
    redactor: &Redactor,
    authority: &Authority,
    tailnet: &Tailnet,
    hostname: &Hostname,
    tags: &[Tag],
) {
    let devices = match authority {
        Authority::Tailscale(token) => client.devices(token, tailnet),
        Authority::Headscale(api_key) => client.headscale_nodes(api_key),
    };
    let devices = match devices {
        Ok(devices) => devices,
        Err(ApiError::Refused { status: 403, message }) => {
            log::warn!(
                "not replacing stale devices: the OAuth client lacks the devices:core scope ({message})"
            );
            return;
        }
        Err(e) => {
            log::warn!("not replacing stale devices: listing devices: {e}");
            return;
        }
    };
    for device in stale_devices(&devices, hostname, tags) {
        let (name, shown_id) =
            (redactor.server_text(&device.name), redactor.server_text(&device.id));
        let id = match device.id.parse::<DeviceId>() {
            Ok(id) => id,
            Err(e) => {
                log::warn!("skipping a device with an unexpected id {shown_id} ({name}): {e}");
                continue;
            }
        };
        let deleted = match authority {
            Authority::Tailscale(token) => client.delete_device(token, &id),
            Authority::Headscale(api_key) => client.headscale_delete_node(api_key, &id),
        };
        match deleted {
            Ok(()) => log::info!("deleted stale offline device {name} ({shown_id})"),
            Err(e) => log::warn!("could not delete stale device {name} ({shown_id}): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604800)));
        for bad in ["", "0", "m", "5x", "-1", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn help_documents_every_flag() {
        use clap::CommandFactory;
        /// The flags of `command` that `--help` would list without a word about them.
        fn undocumented(command: &clap::Command) -> Vec<String> {
            command
                .get_arguments()
                .filter(|a| !a.is_hide_set() && a.get_help().is_none())
                .map(|a| a.get_id().to_string())
                .collect()
        }
        let command = Cli::command();
        assert_eq!(undocumented(&command), Vec::<String>::new(), "flags without help");
        assert!(command.clone().render_long_help().to_string().contains("Exit status"));
        // The check itself catches a flag added without a doc comment.
        let careless = command.arg(clap::Arg::new("new-flag").long("new-flag"));
        assert_eq!(undocumented(&careless), ["new-flag"]);
    }
}
