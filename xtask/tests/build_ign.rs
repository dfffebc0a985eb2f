//! `build-ign` on the project's own configs (a copy of butane/), its refusals, Debian's
//! `ignition-validate` on the 3.3.0 rendering, and merging that never loses content.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use butane::{dataurl, merge::overlay_merge, translate::embed};
use proptest::prelude::*;
use serde_json::{Value, json};
use xtask::build_ign::{Build, THROWAWAY_MARK, build};

/// A copy of butane/ as shipped: without the files made locally (secrets.bu, release.bu and the
/// built config), so no test depends on what a developer generated.
fn butane_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&xtask::root().join("butane"), dir.path());
    for generated in ["secrets.bu", "release.bu", "tailpod.ign"] {
        let _ = std::fs::remove_file(dir.path().join(generated));
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn job(dir: &Path, version: Option<&str>) -> Build {
    Build {
        dir: dir.to_owned(),
        output: dir.join("tailpod.ign"),
        throwaway_secrets: true,
        ignition_version: version.map(str::to_owned),
        build_id: Some("test-build".into()),
        sums: None,
        host: None,
    }
}

fn file_text(config: &Value, path: &str) -> String {
    let file = config["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("no {path}"));
    let contents = &file["contents"];
    let bytes =
        dataurl::decode(contents["source"].as_str().unwrap(), contents["compression"].as_str())
            .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn the_shipped_config_builds_merges_and_validates() {
    let dir = butane_copy();
    let built = build(&job(dir.path(), None)).unwrap();
    let secrets = std::fs::read_to_string(dir.path().join("secrets.bu")).unwrap();
    assert!(secrets.starts_with(THROWAWAY_MARK) && !secrets.contains("REPLACE-ME"));
    assert!(built.notes.iter().any(|n| n.contains("THROWAWAY")));

    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("tailpod.ign")).unwrap())
            .unwrap();
    assert_eq!(written, built.config);
    let mode = std::fs::metadata(dir.path().join("tailpod.ign")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(written["ignition"]["version"], "3.4.0");
    assert_eq!(file_text(&written, "/etc/tailpod/build"), "TAILPOD_BUILD=test-build\n");
    // The base's defaults and the overlay's site values, in that order (a later line wins).
    let config_env = file_text(&written, "/etc/quadsync/config.env");
    let branch = config_env.find("QUADSYNC_GIT_BRANCH=main").unwrap();
    let url = config_env.find("QUADSYNC_GIT_URL=").unwrap();
    assert!(branch < url, "{config_env}");
    let transform = file_text(&written, "/etc/quadsync/transforms/tailscale.container");
    assert_eq!(
        transform,
        std::fs::read_to_string(dir.path().join("transforms/tailscale.container")).unwrap()
    );

    // A second build keeps the secrets it made and says they are throwaway.
    let again = build(&Build { throwaway_secrets: false, ..job(dir.path(), None) }).unwrap();
    assert!(again.notes.iter().any(|n| n.contains("holds THROWAWAY secrets")));
}

#[test]
fn a_host_of_a_fleet_gets_its_own_overlay_after_the_shared_ones() {
    let dir = butane_copy();
    let built = build(&Build { host: Some("web1".into()), ..job(dir.path(), None) }).unwrap();
    assert_eq!(file_text(&built.config, "/etc/hostname"), "web1");
    // The shared config is all there too: the host overlay adds, it does not replace.
    assert!(file_text(&built.config, "/etc/sudoers.d/tailmint").contains("--caller"));
    let shared = build(&job(dir.path(), None)).unwrap();
    assert!(!shared.config.to_string().contains("/etc/hostname"), "no hostname without --host");

    let err = build(&Build { host: Some("db9".into()), ..job(dir.path(), None) }).unwrap_err();
    assert!(err.ends_with("hosts/db9.bu (hosts with one: web1)"), "{err}");
    for bad in ["../secrets", "web_1", ""] {
        let err = build(&Build { host: Some(bad.into()), ..job(dir.path(), None) }).unwrap_err();
        assert!(err.contains("not a host name"), "{bad}: {err}");
    }
}

#[test]
fn quadsyncs_fleet_update_and_webhook_settings_are_checked_as_quadsync_reads_them() {
    let dir = butane_copy();
    let overlay = |lines: &str| {
        let body: String = lines.lines().map(|l| format!("          {l}\n")).collect();
        format!(
            "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/quadsync/config.env\n      mode: 0600\n      contents:\n        inline: |\n{body}"
        )
    };
    let host = dir.path().join("hosts/db9.bu");
    std::fs::write(&host, overlay("QUADSYNC_PATHS=common,hosts/%H\nQUADSYNC_AUTO_UPDATE=weekly\n"))
        .unwrap();
    build(&Build { host: Some("db9".into()), ..job(dir.path(), None) }).unwrap();
    std::fs::write(
        &host,
        overlay("QUADSYNC_PATHS=.,common\nQUADSYNC_NOTIFY_URL=https://ok.example/x ftp://h/y\n"),
    )
    .unwrap();
    let err = build(&Build { host: Some("db9".into()), ..job(dir.path(), None) }).unwrap_err();
    // The merged config.env, by its line: base, then this overlay's lines, then secrets.bu's.
    for expected in [
        "/etc/quadsync/config.env (its line 6): QUADSYNC_PATHS: common is a transform directory of ., which reads it already",
        "/etc/quadsync/config.env (its line 7): QUADSYNC_NOTIFY_URL: URL 2 is not http:// or https://",
    ] {
        assert!(err.contains(expected), "{expected:?} in {err}");
    }
    assert!(!err.contains("ftp://h/y"), "a webhook URL is never shown: {err}");
}

#[test]
fn release_bu_must_agree_with_sha256sums() {
    let dir = butane_copy();
    let sums = dir.path().join("SHA256SUMS");
    let listed: String = xtask::dist::TOOLS
        .iter()
        .map(|t| format!("{}  {t}-0.1.0-linux-x86_64\n", "a".repeat(64)))
        .collect();
    std::fs::write(&sums, &listed).unwrap();
    let parsed = xtask::dist::read_sums(&sums).unwrap();
    let release = xtask::dist::release_butane(&parsed, "x86_64", "http://127.0.0.1:9/").unwrap();
    std::fs::write(dir.path().join("release.bu"), &release).unwrap();
    let built = build(&Build { sums: Some(sums.clone()), ..job(dir.path(), None) }).unwrap();
    let quadsync = built.config["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/usr/local/bin/quadsync")
        .cloned()
        .unwrap();
    assert_eq!(quadsync["contents"]["verification"]["hash"], format!("sha256-{}", "a".repeat(64)));
    assert_eq!(quadsync["mode"], 0o755);

    // A rebuilt binary whose hash release.bu does not carry fails the build.
    std::fs::write(&sums, listed.replacen(&"a".repeat(64), &"b".repeat(64), 1)).unwrap();
    let err = build(&Build { sums: Some(sums), ..job(dir.path(), None) }).unwrap_err();
    assert!(
        err.contains("quadsync-0.1.0-linux-x86_64") && err.contains("--update-butane"),
        "{err}"
    );
}

#[test]
fn without_secrets_it_says_how_to_make_them() {
    let dir = butane_copy();
    let err = build(&Build { throwaway_secrets: false, ..job(dir.path(), None) }).unwrap_err();
    assert!(err.contains("secrets.bu is missing") && err.contains("secrets.bu.example"), "{err}");
    assert!(!dir.path().join("tailpod.ign").exists());
}

#[test]
fn the_3_3_rendering_passes_debians_ignition_validate() {
    let dir = butane_copy();
    build(&job(dir.path(), Some("3.3.0"))).unwrap();
    let output = dir.path().join("tailpod.ign");
    let Ok(status) = std::process::Command::new("ignition-validate").arg(&output).status() else {
        // CI installs it and sets TAILPOD_REQUIRE_ALL_TESTS: there, a skip is a failure.
        let why = "ignition-validate is not installed (apt-get install ignition)";
        assert!(std::env::var_os("TAILPOD_REQUIRE_ALL_TESTS").is_none(), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    assert!(status.success(), "ignition-validate refused {}", output.display());
}

#[test]
fn newer_fields_refuse_the_3_3_rendering_and_bad_overlays_fail() {
    let dir = butane_copy();
    std::fs::write(
        dir.path().join("disk.bu"),
        "variant: fcos\nversion: 1.5.0\nstorage:\n  luks:\n    - name: data\n      device: /dev/vdb\n      discard: true\n",
    )
    .unwrap();
    let err = build(&job(dir.path(), Some("3.3.0"))).unwrap_err();
    assert!(
        err.contains("(for Ignition 3.3.0)") && err.contains("discard: needs Ignition 3.4.0"),
        "{err}"
    );
    build(&job(dir.path(), None)).unwrap();

    std::fs::write(
        dir.path().join("disk.bu"),
        "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/quadsync/config.env\n      mode: 0644\n",
    )
    .unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    assert!(err.contains("disagree on mode"), "{err}");

    std::fs::write(
        dir.path().join("disk.bu"),
        "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n      mode: 644\n",
    )
    .unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    assert!(err.contains("disk.bu") && err.contains("remember to add a leading zero"), "{err}");
}

#[test]
fn mistakes_that_would_only_show_on_a_booted_host_are_refused_with_file_and_line() {
    let dir = butane_copy();
    let secrets = dir.path().join("secrets.bu");
    let example = std::fs::read_to_string(dir.path().join("secrets.bu.example")).unwrap();

    // The example copied and not filled in.
    std::fs::write(&secrets, &example).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    for line in [11, 20, 28, 37, 38, 54] {
        let expected = format!("{}:{line}: REPLACE-ME is still here", secrets.display());
        assert!(err.contains(&expected), "{expected:?} in {err}");
    }

    // Filled in, but oauth.env's block without `|`: YAML folds its lines into one.
    let filled = example.replace("REPLACE-ME", "value");
    let folded = filled.replace(
        "        inline: |\n          TS_API_CLIENT_ID=value",
        "        inline:\n          TS_API_CLIENT_ID=value",
    );
    assert_ne!(folded, filled);
    std::fs::write(&secrets, &folded).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    let expected = format!(
        "{}:33: /etc/tailscale/oauth.env (its line 1): TS_API_CLIENT_SECRET is not set: it is folded into TS_API_CLIENT_ID's value on line 1",
        secrets.display()
    );
    assert!(err.contains(&expected), "{expected:?} in {err}");

    // A typo in a setting, one in ts4nsnet's host-wide settings, and one in a transform.
    let typo = filled.replace("QUADSYNC_SSH_KEY=", "QUADSYNC_SSH_KYE=").replace(
        "    # - path: /etc/ts4nsnet.env\n    #   mode: 0644\n    #   contents:\n    #     inline: |\n    #       TS_CONTROL_URL=https://headscale.example.com",
        "    - path: /etc/ts4nsnet.env\n      mode: 0644\n      contents:\n        inline: |\n          TS_CONTROL_ULR=https://headscale.example.com",
    );
    assert!(typo.contains("TS_CONTROL_ULR"), "the example's ts4nsnet.env block moved");
    std::fs::write(&secrets, &typo).unwrap();
    std::fs::write(
        dir.path().join("web.bu"),
        "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/quadsync/transforms/web.container\n      contents:\n        inline: |\n          [Container]\n          PublishPorts=80:80\n",
    )
    .unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    let expected = format!("{}:16: /etc/quadsync/config.env (its line ", secrets.display());
    assert!(err.contains(&expected), "{expected:?} in {err}");
    let expected = "QUADSYNC_SSH_KYE is not a setting of quadsync's config.env; did you mean QUADSYNC_SSH_KEY?";
    assert!(err.contains(expected), "{expected:?} in {err}");
    let expected = format!(
        "{}:41: /etc/ts4nsnet.env (its line 1): TS_CONTROL_ULR is not a setting of ts4nsnet's environment; did you mean TS_CONTROL_URL?",
        secrets.display()
    );
    assert!(err.contains(&expected), "{expected:?} in {err}");
    let expected = format!(
        "{}:5: /etc/quadsync/transforms/web.container:2: unknown key PublishPorts= in [Container]",
        dir.path().join("web.bu").display()
    );
    assert!(err.contains(&expected), "{expected:?} in {err}");
    std::fs::remove_file(dir.path().join("web.bu")).unwrap();

    // Another group for container users, and a sudo rule left behind.
    let group = filled.replace(
        "          QUADSYNC_SSH_KEY=",
        "          QUADSYNC_USER_GROUP=containers\n          QUADSYNC_SSH_KEY=",
    );
    std::fs::write(&secrets, &group).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    let base = std::fs::read_to_string(dir.path().join("tailpod.bu")).unwrap();
    let line = base.lines().position(|l| l.ends_with("path: /etc/sudoers.d/tailmint")).unwrap() + 1;
    let expected = format!(
        "{}:{line}: /etc/sudoers.d/tailmint has no NOPASSWD rule for %containers",
        dir.path().join("tailpod.bu").display()
    );
    assert!(err.contains(&expected), "{expected:?} in {err}");

    // A sudo rule broken in its syntax.
    let tailpod_bu = dir.path().join("tailpod.bu");
    let base = std::fs::read_to_string(&tailpod_bu).unwrap();
    std::fs::write(
        &tailpod_bu,
        base.replace("%cusers ALL=(root) NOPASSWD:", "%cusers ALL (root) NOPASSWD:"),
    )
    .unwrap();
    std::fs::write(&secrets, &filled).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    assert!(err.contains("/etc/sudoers.d/tailmint line 3: not a sudo rule"), "{err}");
    std::fs::write(&tailpod_bu, base).unwrap();

    // A transform that runs tailmint differently from what the rule allows.
    std::fs::write(&secrets, &filled).unwrap();
    let transform = dir.path().join("transforms/tailscale.container");
    let shipped = std::fs::read_to_string(&transform).unwrap();
    std::fs::write(&transform, shipped.replace("--caller", "--caller --ttl 1h")).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    assert!(
        err.contains("/etc/sudoers.d/tailmint does not allow exactly what /etc/quadsync/transforms/tailscale.container runs through sudo"),
        "{err}"
    );
    std::fs::write(&transform, shipped).unwrap();
    let transform = dir.path().join("transforms/tailscale.pod");
    let shipped = std::fs::read_to_string(&transform).unwrap();
    std::fs::write(&transform, shipped.replace("--caller", "--caller --ttl 1h")).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    assert!(
        err.contains(
            "does not allow exactly what /etc/quadsync/transforms/tailscale.pod runs through sudo"
        ),
        "{err}"
    );
    std::fs::write(&transform, shipped).unwrap();

    // The age identity readable by others: quadsync would refuse it on the host.
    let readable = filled.replace(
        "    - path: /etc/quadsync/age.key\n      mode: 0600",
        "    - path: /etc/quadsync/age.key\n      mode: 0644",
    );
    assert_ne!(readable, filled);
    std::fs::write(&secrets, &readable).unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    let expected = format!(
        "{}:50: /etc/quadsync/age.key has mode 0644, but it is QUADSYNC_AGE_KEY: others must not read it (0600)",
        secrets.display()
    );
    assert!(err.contains(&expected), "{expected:?} in {err}");

    // A conflict names both files and shows modes as they are written.
    std::fs::write(&secrets, &filled).unwrap();
    std::fs::write(
        dir.path().join("disk.bu"),
        "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/quadsync/config.env\n      mode: 0644\n",
    )
    .unwrap();
    let err = build(&job(dir.path(), None)).unwrap_err();
    let expected = format!(
        "merging {} over {}: /etc/quadsync/config.env: the overlays disagree on mode (0600 and 0644)",
        dir.path().join("disk.bu").display(),
        dir.path().join("tailpod.bu").display()
    );
    assert_eq!(err, expected);
    std::fs::remove_file(dir.path().join("disk.bu")).unwrap();
    build(&job(dir.path(), None)).unwrap();
}

fn files(entries: &[(String, String)]) -> Value {
    let files: Vec<Value> = entries
        .iter()
        .map(|(path, text)| {
            let mut contents = serde_json::Map::new();
            embed(&mut contents, text.as_bytes());
            json!({"path": path, "mode": 0o644, "contents": contents})
        })
        .collect();
    json!({"storage": {"files": files}})
}

proptest! {
    #[test]
    fn merging_file_sets_never_loses_content(
        base in prop::collection::btree_map("/etc/[a-d]", "[ -~\n]{0,40}", 0..4),
        overlay in prop::collection::btree_map("/etc/[a-d]", "[ -~\n]{0,40}", 0..4),
    ) {
        let as_vec = |m: &std::collections::BTreeMap<String, String>| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
        let merged = overlay_merge(&files(&as_vec(&base)), &files(&as_vec(&overlay))).unwrap();
        let paths: std::collections::BTreeSet<&String> = base.keys().chain(overlay.keys()).collect();
        let merged_files = merged["storage"]["files"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(merged_files.len(), paths.len());
        for path in paths {
            let expected = match (base.get(path), overlay.get(path)) {
                (Some(a), Some(b)) if a == b => a.clone(),
                (a, b) => format!("{}{}", a.cloned().unwrap_or_default(), b.cloned().unwrap_or_default()),
            };
            prop_assert_eq!(file_text(&merged, path), expected);
        }
    }
}
