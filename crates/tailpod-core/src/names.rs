//! Validated names.
//!
//! Every name that comes from a repo, a config file or a command line is turned into one of these
//! types before it reaches a path, an argv or `useradd`. The types can only be built through
//! [`std::str::FromStr`], so holding one is proof it was checked.

use std::fmt;
use std::str::FromStr;

/// Longest user name `useradd` accepts on Linux (`LOGIN_NAME_MAX` minus the NUL, as shadow-utils
/// enforces it), and so the longest container or pod name.
pub const MAX_USER_NAME: usize = 32;

/// Longest DNS label, and so the longest hostname a tailnet node can have.
pub const MAX_HOSTNAME: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    what: &'static str,
    name: String,
    reason: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?} {}", self.what, self.name, self.reason)
    }
}

impl std::error::Error for NameError {}

macro_rules! validated_name {
    ($(#[$doc:meta])* $type:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $type(String);

        impl $type {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $type {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $check(s).map(|()| $type(s.to_owned()))
            }
        }

        impl TryFrom<String> for $type {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $check(&s).map(|()| $type(s))
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_name!(
    /// A container name: the stem of a `.container` file and the Linux user that runs it.
    /// `[a-z][a-z0-9-]*`, at most [`MAX_USER_NAME`] characters: safe as a user name, a unit name,
    /// a file name and a hostname label.
    ContainerName,
    check_container_name
);

validated_name!(
    /// A pod name: the stem of a `.pod` file and the user that runs the pod. Like a container name
    /// but without `-`, because members are named `<pod>-<member>`.
    PodName,
    check_pod_name
);

validated_name!(
    /// A tailnet hostname: one DNS label of letters, digits and `-`, not starting or ending in `-`,
    /// at most [`MAX_HOSTNAME`] characters.
    Hostname,
    check_hostname
);

validated_name!(
    /// A Tailscale ACL tag: `tag:` followed by `[a-z0-9-]+`.
    Tag,
    check_tag
);

fn refuse(what: &'static str, name: &str, reason: impl Into<String>) -> Result<(), NameError> {
    Err(NameError { what, name: name.to_owned(), reason: reason.into() })
}

fn check_user_like(what: &'static str, name: &str, allow_dash: bool) -> Result<(), NameError> {
    let pattern = if allow_dash { "[a-z][a-z0-9-]*" } else { "[a-z][a-z0-9]*" };
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || (allow_dash && c == '-'));
    if !valid {
        return refuse(what, name, format!("is not valid ({pattern})"));
    }
    if name.len() > MAX_USER_NAME {
        return refuse(what, name, format!("exceeds {MAX_USER_NAME} characters"));
    }
    Ok(())
}

fn check_container_name(name: &str) -> Result<(), NameError> {
    check_user_like("name", name, true)
}

fn check_pod_name(name: &str) -> Result<(), NameError> {
    check_user_like("pod name", name, false)
}

fn check_hostname(name: &str) -> Result<(), NameError> {
    const WHAT: &str = "hostname";
    if name.is_empty() {
        return refuse(WHAT, name, "is empty");
    }
    if name.len() > MAX_HOSTNAME {
        return refuse(WHAT, name, format!("exceeds {MAX_HOSTNAME} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return refuse(WHAT, name, "may hold only letters, digits and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return refuse(WHAT, name, "must not start or end with '-'");
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), NameError> {
    const WHAT: &str = "tag";
    let valid = tag.strip_prefix("tag:").is_some_and(|name| {
        !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    });
    if valid { Ok(()) } else { refuse(WHAT, tag, "is not valid (tag:[a-z0-9-]+)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_follow_useradd() {
        for good in ["web", "a", "web-2", "x1-y2", &"a".repeat(32)] {
            assert!(good.parse::<ContainerName>().is_ok(), "{good}");
        }
        for bad in ["", "Web", "9lives", "under_score", "-x", "a.b", "a/b", "é", &"a".repeat(33)] {
            assert!(bad.parse::<ContainerName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_say_what_and_why() {
        let err = "Bad".parse::<ContainerName>().unwrap_err();
        assert_eq!(err.to_string(), r#"name "Bad" is not valid ([a-z][a-z0-9-]*)"#);
        let long = "a".repeat(33);
        let err = long.parse::<ContainerName>().unwrap_err();
        assert_eq!(err.to_string(), format!("name {long:?} exceeds 32 characters"));
        let err = "web-app".parse::<PodName>().unwrap_err();
        assert_eq!(err.to_string(), r#"pod name "web-app" is not valid ([a-z][a-z0-9]*)"#);
    }

    #[test]
    fn hostnames_are_dns_labels() {
        for good in ["web", "Web-01", "1host", &"h".repeat(63)] {
            assert!(good.parse::<Hostname>().is_ok(), "{good}");
        }
        for bad in ["", "-web", "web-", "a.b", "a b", "a_b", &"h".repeat(64)] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_have_the_prefix_and_a_plain_name() {
        for good in ["tag:web", "tag:a-1"] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["web", "tag:", "tag:Web", "tag:a b", "tag:a,tag:b", "tags:x"] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }
}
