//! The tailmint binary against tailnet-lab's loopback server for Tailscale's API.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tailnet_lab::api::{ApiConfig, ApiServer, Device, Route, Scripted};

struct Setup {
    api: ApiServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup() -> Setup {
    let caller_tag = format!("tag:u{}", 47_000 + (std::process::id() % 1000));
    let api = ApiServer::start(ApiConfig {
        client_tags: vec!["tag:web".into(), "tag:tailpod".into(), caller_tag],
        ..ApiConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oauth.env");
    let defaults = ApiConfig::default();
    std::fs::write(
        &config,
        format!(
            "# OAuth client for tailpod\nTS_API_CLIENT_ID={}\nTS_API_CLIENT_SECRET='{}'\nTS_API_URL={}\n",
            defaults.client_id,
            defaults.client_secret,
            api.url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    Setup { api, dir, config }
}

impl Setup {
    fn output(&self) -> PathBuf {
        self.dir.path().join("keys/web.env")
    }

    fn tailmint(&self, extra: &[&str]) -> Output {
        let output = self.output();
        let mut args = vec![
            "--config",
            self.config.to_str().unwrap(),
            "--tag",
            "tag:web",
            "--hostname",
            "web",
        ];
        args.extend(["--output", output.to_str().unwrap()]);
        args.extend(extra);
        run(&args, &[])
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailmint"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "debug")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn device(id: &str, hostname: &str, tags: &[&str], online: bool) -> Device {
    Device {
        id: id.into(),
        hostname: hostname.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        connected_to_control: online,
    }
}

#[test]
fn mints_writes_and_replaces_stale_devices_with_the_published_requests() {
    let s = setup();
    s.api.add_device(device("1", "web", &["tag:web"], false));
    s.api.add_device(device("2", "web", &["tag:web"], true));
    s.api.add_device(device("3", "web", &["tag:other"], false));
    s.api.add_device(device("4", "db", &["tag:web"], false));

    let out = s.tailmint(&["--expiry", "10m"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let minted = s.api.minted();
    assert_eq!(minted.len(), 1);
    let key = &minted[0].key;
    let text = std::fs::read_to_string(s.output()).unwrap();
    assert_eq!(text, format!("TS_AUTHKEY={key}\nTS_HOSTNAME=web\n"));
    let meta = std::fs::metadata(s.output()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let requests = s.api.requests();
    let summary: Vec<_> = requests.iter().map(|r| format!("{} {}", r.method, r.target)).collect();
    assert_eq!(
        summary,
        [
            "POST /api/v2/oauth/token",
            "POST /api/v2/tailnet/-/keys",
            "GET /api/v2/tailnet/-/devices",
            "DELETE /api/v2/device/1",
        ]
    );
    let defaults = ApiConfig::default();
    assert_eq!(requests[0].header("content-type"), Some("application/x-www-form-urlencoded"));
    let mut form: Vec<&str> = requests[0].body.split('&').collect();
    form.sort_unstable();
    assert_eq!(
        form,
        [
            format!("client_id={}", defaults.client_id),
            format!("client_secret={}", defaults.client_secret),
            "grant_type=client_credentials".to_owned()
        ]
    );
    let bearer = requests[1].header("authorization").unwrap().to_owned();
    assert!(bearer.starts_with("Bearer tskey-api-"), "{bearer}");
    assert!(requests[2..].iter().all(|r| r.header("authorization") == Some(bearer.as_str())));
    let media_type = requests[1].header("content-type").unwrap().split(';').next().unwrap();
    assert_eq!(media_type, "application/json");
    let body: Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(
        body,
        json!({
            "capabilities": {"devices": {"create": {
                "reusable": false, "ephemeral": true, "preauthorized": true, "tags": ["tag:web"]
            }}},
            "expirySeconds": 600,
            "description": "tailmint web",
        })
    );
    let left: Vec<_> = s.api.devices().into_iter().map(|d| d.id).collect();
    assert_eq!(left, ["2", "3", "4"]);

    // Neither the key nor the secret reach the log, even at debug level.
    let log = stderr(&out);
    assert!(!log.contains(key.as_str()) && !log.contains(&defaults.client_secret), "{log}");
    assert!(log.contains("deleted stale offline device"), "{log}");
}

#[test]
fn flags_shape_the_key_request() {
    let s = setup();
    let out = s.tailmint(&[
        "--tag",
        "tag:tailpod",
        "--reusable",
        "--no-ephemeral",
        "--no-preauthorized",
        "--description",
        "my web node",
        "--tailnet",
        "example.com",
        "--no-replace-stale",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = s.api.requests();
    assert_eq!(requests.len(), 2, "no device calls with --no-replace-stale");
    assert_eq!(requests[1].target, "/api/v2/tailnet/example.com/keys");
    let body: Value = serde_json::from_str(&requests[1].body).unwrap();
    assert_eq!(
        body["capabilities"]["devices"]["create"],
        json!({"reusable": true, "ephemeral": false, "preauthorized": false, "tags": ["tag:web", "tag:tailpod"]})
    );
    assert_eq!(body["description"], "my web node");
    assert_eq!(body["expirySeconds"], 900);
}

#[test]
fn a_tag_the_client_does_not_own_is_named_and_nothing_is_written() {
    let s = setup();
    let out = s.tailmint(&["--tag", "tag:db"]);
    assert_eq!(out.status.code(), Some(1));
    let log = stderr(&out);
    assert!(log.contains("may not create keys tagged tag:db"), "{log}");
    assert!(!log.contains("tag:web,"), "only the refused tag is named: {log}");
    assert!(!s.output().exists());
    assert!(s.api.minted().is_empty());
}

#[test]
fn bad_credentials_name_the_config_file_not_the_secret() {
    let s = setup();
    std::fs::write(
        &s.config,
        format!(
            "TS_API_CLIENT_ID=wrong\nTS_API_CLIENT_SECRET=nope-secret\nTS_API_URL={}\n",
            s.api.url()
        ),
    )
    .unwrap();
    let out = s.tailmint(&[]);
    assert_eq!(out.status.code(), Some(1));
    let log = stderr(&out);
    assert!(
        log.contains("the OAuth client was refused") && log.contains("TS_API_CLIENT_ID"),
        "{log}"
    );
    assert!(log.contains(s.config.to_str().unwrap()), "{log}");
    assert!(!log.contains("nope-secret"), "{log}");
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let s = setup();
    s.api.script(Route::Token, [Scripted::status(429, "slow down"), Scripted::status(503, "busy")]);
    s.api.script(Route::CreateKey, [Scripted::status(500, "oops")]);
    let out = s.tailmint(&["--no-replace-stale"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let targets: Vec<_> = s.api.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        [
            "/api/v2/oauth/token",
            "/api/v2/oauth/token",
            "/api/v2/oauth/token",
            "/api/v2/tailnet/-/keys",
            "/api/v2/tailnet/-/keys"
        ]
    );
    assert!(stderr(&out).contains("HTTP 429: slow down; retrying in"), "{}", stderr(&out));
}

#[test]
fn the_deadline_bounds_retries_and_slow_answers() {
    let s = setup();
    s.api.script(Route::Token, std::iter::repeat_n(Scripted::status(500, "down"), 1000));
    let started = Instant::now();
    let out = s.tailmint(&["--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "gave up at the deadline; last error: requesting an access token: HTTP 500: down"
        ),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(s.api.requests().len() > 2, "retried before giving up");

    let s = setup();
    s.api.script(Route::Token, [Scripted::slow(Duration::from_secs(10))]);
    let started = Instant::now();
    let out = s.tailmint(&["--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
    assert!(!s.output().exists());
}

#[test]
fn stale_device_trouble_is_only_a_warning() {
    let s = setup();
    s.api.script(Route::ListDevices, [Scripted::status(403, "insufficient scope")]);
    let out = s.tailmint(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("lacks the devices:core scope"), "{}", stderr(&out));
    assert!(s.output().exists());
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let s = setup();
    let output = s.output();
    let out_path = output.to_str().unwrap();
    let config = s.config.to_str().unwrap();
    let cases: [&[&str]; 6] = [
        &["--config", config, "--output", out_path],
        &["--config", config, "--tag", "web", "--output", out_path],
        &["--config", config, "--tag", "tag:web", "--hostname", "-bad", "--output", out_path],
        &["--config", config, "--tag", "tag:web", "--output", "relative.env"],
        &[
            "--config",
            config,
            "--tag",
            "tag:web",
            "--description",
            "semi;colon",
            "--output",
            out_path,
        ],
        &["--config", "/nonexistent/oauth.env", "--tag", "tag:web", "--output", out_path],
    ];
    for args in cases {
        let out = run(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    assert!(s.api.requests().is_empty());
    assert!(run(&["--help"], &[]).status.success());
}

/// As root through sudo: the key file must land in the caller's runtime dir, owned by them.
#[test]
fn through_sudo_it_writes_as_the_caller_inside_their_runtime_dir() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to drop privileges for real");
        return;
    }
    let s = setup();
    let uid = 47_000 + (std::process::id() % 1000);
    let runtime = PathBuf::from(format!("/run/user/{uid}"));
    std::fs::create_dir_all(&runtime).unwrap();
    std::os::unix::fs::chown(&runtime, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cleanup = Cleanup(runtime.clone());

    let target = runtime.join("tailmint/web.env");
    let sudo = [("SUDO_UID", uid.to_string()), ("SUDO_GID", uid.to_string())];
    let sudo: Vec<(&str, &str)> = sudo.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = s.config.to_str().unwrap();
    let args = [
        "--config",
        config,
        "--tag",
        "tag:web",
        "--hostname",
        "web",
        "--output",
        target.to_str().unwrap(),
    ];
    let out = run(&args, &sudo);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (uid, uid, 0o600));
    assert_eq!(std::fs::metadata(runtime.join("tailmint")).unwrap().uid(), uid);

    // Anywhere else is refused before any request is made.
    let before = s.api.requests().len();
    let elsewhere = s.dir.path().join("stolen.env");
    let args = ["--config", config, "--tag", "tag:web", "--output", elsewhere.to_str().unwrap()];
    let out = run(&args, &sudo);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("must be inside /run/user/{uid}")));
    assert!(!elsewhere.exists());
    assert_eq!(s.api.requests().len(), before);

    // --caller: everything derives from the sudo caller, so one pinned rule serves every user.
    let name = format!("u{uid}");
    let mut with_user = sudo.clone();
    with_user.push(("SUDO_USER", name.as_str()));
    let before = s.api.minted().len();
    let out = run(&["--config", config, "--caller"], &with_user);
    assert!(out.status.success(), "{}", stderr(&out));
    let caller_file = runtime.join(format!("tailmint/{name}.env"));
    let text = std::fs::read_to_string(&caller_file).unwrap();
    assert!(text.ends_with(&format!("TS_HOSTNAME={name}\n")), "{text}");
    let minted = s.api.minted();
    assert_eq!(minted.len(), before + 1);
    assert_eq!(
        minted[before].request["capabilities"]["devices"]["create"]["tags"],
        json!([format!("tag:{name}")])
    );
    assert_eq!(std::fs::metadata(&caller_file).unwrap().uid(), uid);
    let out = run(&["--config", config, "--caller", "--hostname", "other"], &with_user);
    assert_eq!(out.status.code(), Some(2), "--caller pins the hostname");
    let out = run(&["--config", config, "--caller"], &[]);
    assert_eq!(out.status.code(), Some(2), "--caller needs sudo");
    std::fs::remove_file(&caller_file).unwrap();

    // A symlink the caller planted is not followed.
    std::fs::remove_file(&target).unwrap();
    std::fs::remove_dir(runtime.join("tailmint")).unwrap();
    std::os::unix::fs::symlink(s.dir.path(), runtime.join("tailmint")).unwrap();
    let out =
        run(&["--config", config, "--tag", "tag:web", "--output", target.to_str().unwrap()], &sudo);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a symlink"), "{}", stderr(&out));
    assert!(!s.dir.path().join("web.env").exists());
    drop(cleanup);
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new(&self.0));
    }
}
