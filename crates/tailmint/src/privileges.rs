//! Running as the sudo caller once the root-only secret has been read.
//!
//! tailmint runs as root through a sudo rule so it can read `/etc/tailscale/oauth.env` (0600,
//! root). Nothing after that needs root, so it becomes the user who ran sudo (`SUDO_UID`,
//! `SUDO_GID`, with that user's groups) before it talks to the network or writes a file: the key
//! file is then owned by that user, and written with that user's rights only.

use nix::unistd::{Gid, Uid, User, geteuid, getgrouplist, setgroups, setresgid, setresuid};

/// The user tailmint should become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The sudo caller, when running as root through sudo; `None` otherwise (tailmint then keeps
/// the identity it was started with).
pub fn sudo_caller(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Caller>, String> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    let number = |name: &str| -> Result<Option<u32>, String> {
        env(name)
            .map(|v| v.parse().map_err(|_| format!("{name}={v:?} is not a number")))
            .transpose()
    };
    match (number("SUDO_UID")?, number("SUDO_GID")?) {
        (Some(0), _) => Ok(None),
        (Some(uid), Some(gid)) => Ok(Some(Caller { uid, gid })),
        (None, None) => Ok(None),
        _ => Err("SUDO_UID and SUDO_GID must be set together".into()),
    }
}

/// Becomes `caller` for good (real, effective and saved IDs), with the caller's groups.
pub fn become_caller(caller: &Caller) -> Result<(), String> {
    let uid = Uid::from_raw(caller.uid);
    let gid = Gid::from_raw(caller.gid);
    let groups = match User::from_uid(uid) {
        Ok(Some(user)) => {
            let name = std::ffi::CString::new(user.name.as_bytes())
                .map_err(|_| "user name holds a NUL byte".to_owned())?;
            getgrouplist(&name, gid)
                .map_err(|e| format!("listing the groups of {}: {e}", user.name))?
        }
        // A uid without a passwd entry gets its primary group only.
        _ => vec![gid],
    };
    setgroups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(gid, gid, gid).map_err(|e| format!("setresgid({gid}): {e}"))?;
    setresuid(uid, uid, uid).map_err(|e| format!("setresuid({uid}): {e}"))?;
    if setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0)).is_ok() {
        return Err("could still regain root after dropping privileges".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_identity_comes_from_the_environment() {
        let env = |name: &str| match name {
            "SUDO_UID" => Some("1001".to_owned()),
            "SUDO_GID" => Some("1002".to_owned()),
            _ => None,
        };
        let caller = sudo_caller(&env).unwrap();
        if geteuid().is_root() {
            assert_eq!(caller, Some(Caller { uid: 1001, gid: 1002 }));
            let half = |name: &str| (name == "SUDO_UID").then(|| "1001".to_owned());
            assert!(sudo_caller(&half).is_err());
            let bad = |_: &str| Some("x".to_owned());
            assert!(sudo_caller(&bad).unwrap_err().contains("is not a number"));
        } else {
            assert_eq!(caller, None, "not root: nothing to drop");
        }
    }
}
