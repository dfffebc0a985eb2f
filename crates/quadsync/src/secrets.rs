//! Secrets in the definitions repo, in the Go quadsync's format (v0.8 to v0.12), so a repo
//! written for it deploys unchanged:
//!
//! ```ini
//! [Secrets]
//! Environment=TOKEN=age:age1...:<base64 of the binary age file>
//! File=/run/secrets/tls.key:age:age1...:<base64>
//! ```
//!
//! A value may also be plaintext (an `Environment=` value as written, a `File=` value as
//! standard base64): the Go quadsync accepts it, so quadsync does too, and `check` warns.
//! Each entry becomes the podman secret `CONTAINER-name` (lower case, `_` as `-`) in the
//! container user's own store, and a `Secret=NAME,type=env|mount,target=...` line in the
//! container. Where the Go quadsync let things pass silently, this refuses them: a second
//! `[Secrets]` section, two entries that map to one podman name, a `,` in a target, and
//! `[Secrets]` in a `.pod`.
//!
//! Values are opened only on the host, with the identity in `QUADSYNC_AGE_KEY`, and never
//! reach argv, logs, `state.json` or `plan`: the record holds a digest keyed by the identity,
//! so a changed value restarts its container while the record gives nothing to guess against.

use std::fmt;
use std::path::Path;

use age::secrecy::ExposeSecret;
use age::x25519;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tailpod_core::unit::{Entry, UnitFile};

use crate::discover::{Desired, UnitDir, UserFile};

/// The section secrets are written in.
pub const SECTION: &str = "Secrets";
/// How an encrypted value starts.
const AGE_PREFIX: &str = "age:";
/// How every binary age file starts.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The largest identity file read (an identity line is 74 bytes).
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// How the container sees a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An environment variable (`Environment=`).
    Env,
    /// A file (`File=`).
    Mount,
}

/// One entry of a `[Secrets]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The podman secret: `CONTAINER-name`.
    pub name: String,
    pub kind: SecretKind,
    /// The variable's name, or the path in the container.
    pub target: String,
    payload: Payload,
    /// `FILE:LINE`, for messages.
    pub at: String,
}

#[derive(Clone, PartialEq, Eq)]
enum Payload {
    Plain(Vec<u8>),
    Age { recipient: String, file: Vec<u8> },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("target", &self.target)
            .field("encrypted", &self.encrypted())
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl Secret {
    pub fn encrypted(&self) -> bool {
        matches!(self.payload, Payload::Age { .. })
    }

    /// The line that hands the secret to the container.
    pub fn entry(&self) -> Entry {
        let kind = match self.kind {
            SecretKind::Env => "env",
            SecretKind::Mount => "mount",
        };
        Entry::new("Secret", format!("{},type={kind},target={}", self.name, self.target))
    }
}

/// A secret's value, opened; wiped when dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue({} bytes)", self.0.len())
    }
}

/// Removes every `[Secrets]` section from `unit` (the spec of `container`, at `path`) and
/// returns its entries. Errors are `(line, message)`.
pub fn take(
    unit: &mut UnitFile,
    container: &str,
    path: &str,
) -> Result<Vec<Secret>, Vec<(usize, String)>> {
    let sections: Vec<_> = unit.sections.iter().filter(|s| s.name() == SECTION).cloned().collect();
    unit.sections.retain(|s| s.name() != SECTION);
    let mut errors = Vec::new();
    if let Some(second) = sections.get(1) {
        errors
            .push((second.line(), "a second [Secrets] section; write every secret in one".into()));
    }
    let mut secrets: Vec<Secret> = Vec::new();
    for entry in sections.iter().flat_map(|s| s.entries()) {
        let at = format!("{path}:{}", entry.line());
        match parse_entry(entry, container, &at) {
            Ok(secret) => {
                if let Some(other) = secrets.iter().find(|s| s.name == secret.name) {
                    errors.push((
                        entry.line(),
                        format!(
                            "{}={}: becomes podman secret {}, as {} does",
                            entry.key(),
                            shown_target(&secret),
                            secret.name,
                            other.at
                        ),
                    ));
                } else {
                    secrets.push(secret);
                }
            }
            Err(e) => errors.push((entry.line(), e)),
        }
    }
    if errors.is_empty() { Ok(secrets) } else { Err(errors) }
}

fn shown_target(secret: &Secret) -> String {
    match secret.kind {
        SecretKind::Env => format!("{}=…", secret.target),
        SecretKind::Mount => format!("{}:…", secret.target),
    }
}

fn parse_entry(entry: &Entry, container: &str, at: &str) -> Result<Secret, String> {
    let (kind, target, value, name) = match entry.key() {
        "Environment" => {
            let (name, value) = entry
                .value()
                .split_once('=')
                .ok_or("Environment= in [Secrets] is NAME=value (the value, or age:...)")?;
            if !valid_name(name) {
                return Err(format!("secret name {name:?} is not valid ([A-Za-z_][A-Za-z0-9_]*)"));
            }
            (SecretKind::Env, name.to_owned(), value, name.to_owned())
        }
        "File" => {
            let (target, value) = entry
                .value()
                .split_once(':')
                .ok_or("File= in [Secrets] is PATH:value (base64, or age:...)")?;
            if target.is_empty() || target.contains(',') {
                return Err(format!(
                    "file secret target {target:?} must be a path without ',' (it becomes a Secret= option)"
                ));
            }
            (SecretKind::Mount, target.to_owned(), value, file_secret_name(target))
        }
        other => {
            return Err(format!("{other}= is not a [Secrets] entry (Environment= or File=)"));
        }
    };
    let payload = match value.strip_prefix(AGE_PREFIX) {
        Some(rest) => {
            let (recipient, encoded) =
                rest.split_once(':').ok_or("an encrypted value is age:RECIPIENT:BASE64")?;
            recipient
                .parse::<x25519::Recipient>()
                .map_err(|_| format!("{recipient:?} is not an age X25519 recipient (age1...)"))?;
            let file = BASE64
                .decode(encoded)
                .map_err(|e| format!("the encrypted value is not standard base64: {e}"))?;
            if !file.starts_with(AGE_MAGIC) {
                return Err("the encrypted value is not an age file".into());
            }
            Payload::Age { recipient: recipient.to_owned(), file }
        }
        None if value.is_empty() => return Err("empty secret value".into()),
        None => match kind {
            SecretKind::Env => Payload::Plain(value.as_bytes().to_vec()),
            SecretKind::Mount => Payload::Plain(
                BASE64
                    .decode(value)
                    .map_err(|e| format!("a plaintext file secret is standard base64: {e}"))?,
            ),
        },
    };
    let podman_name = format!("{container}-{}", name.to_ascii_lowercase().replace('_', "-"));
    if podman_name.len() > 253 {
        return Err(format!("podman secret name {podman_name} is longer than 253 characters"));
    }
    Ok(Secret { name: podman_name, kind, target, payload, at: at.to_owned() })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The Go quadsync's name for a file secret: every character but `[A-Za-z0-9]` becomes `_`,
/// outer `_` are trimmed, and a leading digit gets a `_` before it
/// (`/run/secrets/tls.cert` is `run_secrets_tls_cert`).
pub fn file_secret_name(target: &str) -> String {
    let mapped: String =
        target.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let trimmed = mapped.trim_matches('_');
    match trimmed.chars().next() {
        None => "_".to_owned(),
        Some(c) if c.is_ascii_digit() => format!("_{trimmed}"),
        Some(_) => trimmed.to_owned(),
    }
}

/// The host's age identities, and the key that makes secret digests unguessable.
pub struct Keyring {
    identities: Vec<x25519::Identity>,
    digest_key: [u8; 32],
    /// Why there are no identities, when a key file was named but could not be used.
    unusable: Option<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("recipients", &self.recipients())
            .field("unusable", &self.unusable)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// No identity: plaintext secrets only.
    pub fn none() -> Keyring {
        Keyring { identities: Vec::new(), digest_key: [0; 32], unusable: None }
    }

    /// Reads an identity file as `age-keygen` writes it. It must be a regular file only its
    /// owner may read, as ssh insists for its keys. A key that cannot be used is kept as the
    /// reason, so only the containers with secrets wait for it to be fixed.
    pub fn load(path: &Path) -> Keyring {
        match read_identities(path) {
            Ok(identities) => {
                let mut hasher = Sha256::new();
                hasher.update(b"tailpod quadsync secret digests\0");
                for identity in &identities {
                    hasher.update(identity.to_string().expose_secret().as_bytes());
                }
                Keyring { identities, digest_key: hasher.finalize().into(), unusable: None }
            }
            Err(e) => Keyring { unusable: Some(e), ..Keyring::none() },
        }
    }

    /// The public recipients (`age1...`) of the identities.
    pub fn recipients(&self) -> Vec<String> {
        self.identities.iter().map(|i| i.to_public().to_string()).collect()
    }

    /// A secret's value.
    pub fn open(&self, secret: &Secret) -> Result<SecretValue, String> {
        let (recipient, file) = match &secret.payload {
            Payload::Plain(value) => return Ok(SecretValue(value.clone())),
            Payload::Age { recipient, file } => (recipient, file),
        };
        if let Some(reason) = &self.unusable {
            return Err(reason.clone());
        }
        let identity =
            self.identities.iter().find(|i| i.to_public().to_string() == *recipient).ok_or_else(
                || match self.identities.is_empty() {
                    true => "the value is encrypted, but no QUADSYNC_AGE_KEY is set".to_owned(),
                    false => format!(
                        "encrypted for {recipient}, but QUADSYNC_AGE_KEY holds {}",
                        self.recipients().join(", ")
                    ),
                },
            )?;
        let value = age::decrypt(identity, file).map_err(|e| format!("cannot decrypt: {e}"))?;
        let value = SecretValue(value);
        if secret.kind == SecretKind::Env && value.0.is_empty() {
            return Err("decrypts to an empty value".into());
        }
        Ok(value)
    }

    /// What the record keeps of a value: an HMAC under a key derived from the identities.
    pub fn digest(&self, secret: &Secret, value: &SecretValue) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.digest_key).expect("any key length");
        for part in [secret.name.as_bytes(), secret.target.as_bytes(), value.bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        crate::state::hex(&mac.finalize().into_bytes())
    }
}

fn read_identities(path: &Path) -> Result<Vec<x25519::Identity>, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| format!("QUADSYNC_AGE_KEY {shown}: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "QUADSYNC_AGE_KEY {shown} may be read by others (mode {:04o}); chmod 600 it",
            meta.mode() & 0o7777
        ));
    }
    let lines = key_file_lines(path).map_err(|e| format!("QUADSYNC_AGE_KEY {e}"))?;
    let mut identities = Vec::new();
    for (number, line) in &lines {
        match line.parse::<x25519::Identity>() {
            Ok(identity) => identities.push(identity),
            // Other identity types (plugins) are passed over, as the Go quadsync does.
            Err(_) if line.starts_with("AGE-PLUGIN-") => {}
            Err(_) => {
                return Err(format!(
                    "QUADSYNC_AGE_KEY {shown}:{number}: not an age X25519 identity (AGE-SECRET-KEY-1...)"
                ));
            }
        }
    }
    if identities.is_empty() {
        return Err(format!("QUADSYNC_AGE_KEY {shown}: no age X25519 identity in it"));
    }
    Ok(identities)
}

/// The lines of an age key file (identities or recipients, as `age-keygen` writes them) that
/// say something, with their numbers: read as a bounded regular file, never through a link;
/// blank lines and `#` comments passed over.
fn key_file_lines(path: &Path) -> Result<Vec<(usize, String)>, String> {
    let data = crate::source::read_regular_file(path, MAX_KEY_FILE_BYTES)?;
    let text = String::from_utf8(data).map_err(|_| format!("{}: not text", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| (number, line.to_owned()))
        .collect())
}

/// Opens every deployment's secrets: each becomes an entry of the user's podman secret store
/// in its files (text: the keyed digest), its value kept beside. A deployment whose secrets
/// cannot all be opened is held: nothing of it changes on the host this time.
pub fn unlock(desired: &mut Desired, keyring: &Keyring) {
    for deployment in desired.values_mut() {
        let mut opened = Vec::new();
        for secret in &deployment.secrets {
            match keyring.open(secret) {
                Ok(value) => {
                    opened.push((secret.name.clone(), keyring.digest(secret, &value), value))
                }
                Err(e) => {
                    deployment.held = Some(format!(
                        "{}: secret {}: {e}; its running version is left as it is",
                        secret.at, secret.name
                    ));
                    break;
                }
            }
        }
        if deployment.held.is_some() {
            continue;
        }
        for (name, digest, value) in opened {
            deployment.files.insert(name.clone(), UserFile { dir: UnitDir::Secret, text: digest });
            deployment.secret_values.insert(name, value);
        }
    }
}

/// `age:RECIPIENT:BASE64` for `value`, as the `[Secrets]` section holds it.
pub fn encrypt(recipient: &str, value: &[u8]) -> Result<String, String> {
    let parsed: x25519::Recipient =
        recipient.parse().map_err(|_| format!("{recipient:?} is not an age X25519 recipient"))?;
    let file = age::encrypt(&parsed, value).map_err(|e| format!("encrypting: {e}"))?;
    Ok(format!("{AGE_PREFIX}{parsed}:{}", BASE64.encode(file)))
}

/// A new identity file's text, as `age-keygen` writes it, and its recipient.
pub fn generate_identity() -> (String, String) {
    let identity = x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let text = format!(
        "# quadsync secrets identity: keep it only on the hosts (0600, root)\n# public key: {recipient}\n{}\n",
        identity.to_string().expose_secret()
    );
    (text, recipient)
}

/// The recipients named by `spec`: an `age1...` recipient itself, or a file of recipients or
/// identities (whose recipients are taken), `#` comments allowed.
pub fn recipients_from(spec: &str) -> Result<Vec<String>, String> {
    if spec.starts_with("age1") {
        spec.parse::<x25519::Recipient>()
            .map_err(|_| format!("{spec:?} is not an age X25519 recipient"))?;
        return Ok(vec![spec.to_owned()]);
    }
    let mut found = Vec::new();
    for (number, line) in key_file_lines(Path::new(spec))? {
        if let Ok(recipient) = line.parse::<x25519::Recipient>() {
            found.push(recipient.to_string());
        } else if let Ok(identity) = line.parse::<x25519::Identity>() {
            found.push(identity.to_public().to_string());
        } else {
            return Err(format!("{spec}:{number}: not an age X25519 recipient or identity"));
        }
    }
    if found.is_empty() {
        return Err(format!("{spec}: no age recipient in it"));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The secrets and the unit left, or the errors as `(line, message)`.
    type Taken = Result<(Vec<Secret>, String), Vec<(usize, String)>>;

    fn taken(text: &str) -> Taken {
        let mut unit = UnitFile::parse(text);
        let secrets = take(&mut unit, "app", "app.container")?;
        Ok((secrets, unit.to_string()))
    }

    fn key_file(dir: &Path) -> (std::path::PathBuf, String) {
        let (text, recipient) = generate_identity();
        let path = dir.join("age.key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        (path, recipient)
    }

    #[test]
    fn the_go_format_parses_and_leaves_the_unit() {
        // The Go quadsync's TestParseSecretsPlaintext, and its naming of file secrets.
        let (secrets, rest) = taken(
            "[Container]\nImage=x\n\n[Secrets]\nEnvironment=DATABASE_URL=postgres://user:pass@host/db\nFile=/run/secrets/tls.cert:aGVsbG8=\n",
        )
        .unwrap();
        assert_eq!(rest, "[Container]\nImage=x\n\n");
        let lines: Vec<String> =
            secrets.iter().map(|s| format!("{}={}", s.entry().key(), s.entry().value())).collect();
        assert_eq!(
            lines,
            [
                "Secret=app-database-url,type=env,target=DATABASE_URL",
                "Secret=app-run-secrets-tls-cert,type=mount,target=/run/secrets/tls.cert"
            ]
        );
        let keyring = Keyring::none();
        assert_eq!(keyring.open(&secrets[0]).unwrap().bytes(), b"postgres://user:pass@host/db");
        assert_eq!(keyring.open(&secrets[1]).unwrap().bytes(), b"hello");
        assert!(!format!("{secrets:?}").contains("postgres"), "Debug shows no value");
        assert_eq!(file_secret_name("/1/x"), "_1_x");
        assert_eq!(file_secret_name("///"), "_");
    }

    #[test]
    fn what_the_go_quadsync_let_pass_is_refused_with_the_line() {
        let cases = [
            ("Environment=TOKEN\n", 2, "Environment= in [Secrets] is NAME=value"),
            ("Environment=9X=a\n", 2, "secret name \"9X\" is not valid"),
            ("Environment=X=\n", 2, "empty secret value"),
            ("File=/a,b:aGk=\n", 2, "must be a path without ','"),
            ("File=/a:not base64!\n", 2, "a plaintext file secret is standard base64"),
            ("Password=x\n", 2, "Password= is not a [Secrets] entry"),
            ("Environment=TOKEN=a\nEnvironment=token=b\n", 3, "becomes podman secret app-token"),
            ("File=/run/a-b:aGk=\nFile=/run/a_b:aGk=\n", 3, "becomes podman secret app-run-a-b"),
            ("Environment=X=a\n[Secrets]\nEnvironment=Y=b\n", 3, "a second [Secrets] section"),
            ("Environment=X=age:age1nope:YQ==\n", 2, "is not an age X25519 recipient"),
        ];
        for (body, line, message) in cases {
            let errors = taken(&format!("[Secrets]\n{body}")).unwrap_err();
            assert_eq!(errors[0].0, line, "{body}: {errors:?}");
            assert!(errors[0].1.contains(message), "{body}: {errors:?}");
        }
    }

    #[test]
    fn encrypted_values_open_only_with_their_identity_and_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recipient) = key_file(dir.path());
        let sealed = encrypt(&recipient, b"s3cret").unwrap();
        assert!(sealed.starts_with(&format!("age:{recipient}:YWdlLWVuY3J5cHRpb24ub3JnL3Yx")));
        let (secrets, _) = taken(&format!("[Secrets]\nEnvironment=TOKEN={sealed}\n")).unwrap();
        assert!(secrets[0].encrypted());

        let keyring = Keyring::load(&path);
        assert_eq!(keyring.open(&secrets[0]).unwrap().bytes(), b"s3cret");
        let without = Keyring::none().open(&secrets[0]).unwrap_err();
        assert!(without.contains("no QUADSYNC_AGE_KEY is set"), "{without}");

        let other = tempfile::tempdir().unwrap();
        let (other_path, _) = key_file(other.path());
        let wrong = Keyring::load(&other_path).open(&secrets[0]).unwrap_err();
        assert!(wrong.starts_with(&format!("encrypted for {recipient}, but")), "{wrong}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let open = Keyring::load(&path).open(&secrets[0]).unwrap_err();
        assert!(open.contains("may be read by others (mode 0640)"), "{open}");

        std::fs::write(&other_path, "# nothing\nAGE-SECRET-KEY-1BROKEN\n").unwrap();
        let broken = Keyring::load(&other_path).open(&secrets[0]).unwrap_err();
        assert!(
            broken.ends_with(":2: not an age X25519 identity (AGE-SECRET-KEY-1...)"),
            "{broken}"
        );
    }

    #[test]
    fn digests_follow_the_value_not_the_ciphertext_and_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recipient) = key_file(dir.path());
        let keyring = Keyring::load(&path);
        let digest_of = |value: &[u8]| {
            let sealed = encrypt(&recipient, value).unwrap();
            let (secrets, _) = taken(&format!("[Secrets]\nEnvironment=T={sealed}\n")).unwrap();
            keyring.digest(&secrets[0], &keyring.open(&secrets[0]).unwrap())
        };
        // Encrypting again gives new bytes but the same value: no restart.
        assert_eq!(digest_of(b"one"), digest_of(b"one"));
        assert_ne!(digest_of(b"one"), digest_of(b"two"));
        // Without the identity, the same value has another digest: nothing to guess against.
        let (plain, _) = taken("[Secrets]\nEnvironment=T=one\n").unwrap();
        let none = Keyring::none();
        assert_ne!(none.digest(&plain[0], &none.open(&plain[0]).unwrap()), digest_of(b"one"));
        assert_ne!(digest_of(b"one"), crate::state::sha256("one"));
    }

    #[test]
    fn recipients_come_from_a_key_or_a_file_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let (path, recipient) = key_file(dir.path());
        let expected = std::slice::from_ref(&recipient);
        assert_eq!(recipients_from(path.to_str().unwrap()).unwrap(), expected);
        assert_eq!(recipients_from(&recipient).unwrap(), expected);
        let public = dir.path().join("age.pub");
        std::fs::write(&public, format!("# host a\n{recipient}\n")).unwrap();
        assert_eq!(recipients_from(public.to_str().unwrap()).unwrap(), [recipient]);
        assert!(recipients_from("age1bogus").is_err());
    }
}
