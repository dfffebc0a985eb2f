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
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $type(String);

        /// As its text, quoted: messages say `duplicate name "web"`, whatever the type.
        impl fmt::Debug for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

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

        impl PartialEq<str> for $type {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $type {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// Compares and orders as its text, so maps keyed by it are looked up by `&str`.
        impl std::borrow::Borrow<str> for $type {
            fn borrow(&self) -> &str {
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
    /// `[a-z][a-z0-9-]*`, at most [`MAX_USER_NAME`] characters, and a [`Hostname`] (so not ending
    /// in `-`): safe as a user name, a unit name, a file name, and the tailnet hostname tailmint
    /// gives the container's node.
    ContainerName,
    check_container_name
);

validated_name!(
    /// A pod name: the stem of a `.pod` file and the user that runs the pod, and so the tailnet
    /// hostname of its members' nodes. Like a container name but without `-`, because members are
    /// named `<pod>-<member>`.
    PodName,
    check_pod_name
);

validated_name!(
    /// The Linux user that runs one container or one pod, named after it: what quadsync creates,
    /// lingers, runs `systemctl --user` for and removes. A container name's rule, which every pod
    /// name meets too.
    UserName,
    check_user_name
);

impl From<ContainerName> for UserName {
    fn from(name: ContainerName) -> UserName {
        UserName(name.0)
    }
}

impl From<PodName> for UserName {
    fn from(name: PodName) -> UserName {
        UserName(name.0)
    }
}

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

fn refuse<T>(what: &'static str, name: &str, reason: impl Into<String>) -> Result<T, NameError> {
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

/// The one rule for every name that ends up as a tailnet hostname: a DNS label. `because` is
/// appended to the reason when the name is not itself a hostname, so the error says why a
/// hostname's rule applies to it.
fn check_label(what: &'static str, name: &str, because: &str) -> Result<(), NameError> {
    let reason = if name.is_empty() {
        "is empty".to_owned()
    } else if name.len() > MAX_HOSTNAME {
        format!("exceeds {MAX_HOSTNAME} characters")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        "may hold only letters, digits and '-'".to_owned()
    } else if name.starts_with('-') {
        "starts with '-'".to_owned()
    } else if name.ends_with('-') {
        "ends with '-'".to_owned()
    } else {
        return Ok(());
    };
    refuse(what, name, reason + because)
}

/// Container and pod names are user names first (the stricter pattern and length decide the
/// message), then hostnames: tailmint names a node after the user that runs it.
fn check_container_name(name: &str) -> Result<(), NameError> {
    check_user_like("name", name, true)?;
    check_label("name", name, ": a container's name becomes its tailnet hostname")
}

fn check_user_name(name: &str) -> Result<(), NameError> {
    check_user_like("user", name, true)?;
    check_label("user", name, ": a user is named after its container or pod")
}

fn check_pod_name(name: &str) -> Result<(), NameError> {
    check_user_like("pod name", name, false)?;
    check_label("pod name", name, ": a pod's name becomes its members' tailnet hostname")
}

fn check_hostname(name: &str) -> Result<(), NameError> {
    check_label("hostname", name, "")
}

impl Hostname {
    /// The hostname for a name that was not chosen as one, such as podman's generated
    /// `happy_turing`: letters lowercased (the tailnet's DNS names are), every character but
    /// letters, digits and `-` turned into `-`, cut to
    /// [`MAX_HOSTNAME`] after any leading `-`, then any trailing `-` dropped. Refused only when
    /// the name has no letter or digit.
    pub fn derive_from(name: &str) -> Result<Hostname, NameError> {
        let mapped: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .skip_while(|&c| c == '-')
            .take(MAX_HOSTNAME)
            .collect();
        let label = mapped.trim_end_matches('-');
        if label.is_empty() {
            return refuse("name", name, "has no letter or digit to make a hostname of");
        }
        label.parse()
    }
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
    fn every_container_and_pod_name_is_a_user_name_and_nothing_else_is() {
        let container: ContainerName = "web-2".parse().unwrap();
        let pod: PodName = "wiki".parse().unwrap();
        assert_eq!(UserName::from(container).as_str(), "web-2");
        assert_eq!(UserName::from(pod).as_str(), "wiki");
        for bad in ["", "Root", "../x", "a b", "-x", "x-", &"a".repeat(33)] {
            assert!(bad.parse::<UserName>().is_err(), "{bad}");
        }
        assert_eq!(format!("{:?}", "web".parse::<UserName>().unwrap()), r#""web""#);
        let err = "x;y".parse::<UserName>().unwrap_err();
        assert_eq!(err.to_string(), r#"user "x;y" is not valid ([a-z][a-z0-9-]*)"#);
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
    fn names_that_become_hostnames_follow_the_hostname_rule() {
        let err = "web-".parse::<ContainerName>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"name "web-" ends with '-': a container's name becomes its tailnet hostname"#
        );
        assert!("web-".parse::<Hostname>().is_err());
    }

    #[test]
    fn hostname_messages_say_which_end() {
        let err = "-web".parse::<Hostname>().unwrap_err();
        assert_eq!(err.to_string(), r#"hostname "-web" starts with '-'"#);
        let err = "web-".parse::<Hostname>().unwrap_err();
        assert_eq!(err.to_string(), r#"hostname "web-" ends with '-'"#);
    }

    #[test]
    fn hostnames_derive_from_podman_names() {
        let derive = |name: &str| Hostname::derive_from(name).map(|h| h.to_string());
        assert_eq!(derive("happy_turing").unwrap(), "happy-turing");
        assert_eq!(derive("My.App_2").unwrap(), "my-app-2");
        assert_eq!(derive("_x_").unwrap(), "x");
        assert_eq!(derive("web").unwrap(), "web");
        // Cut to 63, and no '-' left at the cut.
        let long = format!("{}_{}", "a".repeat(62), "b".repeat(10));
        assert_eq!(derive(&long).unwrap(), "a".repeat(62));
        assert_eq!(derive(&"x".repeat(100)).unwrap(), "x".repeat(63));
        assert_eq!(derive(&format!("{}a", "_".repeat(70))).unwrap(), "a");
        assert_eq!(
            Hostname::derive_from("__").unwrap_err().to_string(),
            r#"name "__" has no letter or digit to make a hostname of"#
        );
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
