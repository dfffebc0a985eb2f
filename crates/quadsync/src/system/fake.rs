//! The one fake of [`System`] the tests share: it records every call, as a line a person can
//! read, and can be told to fail some of them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use tailpod_core::names::UserName;

use crate::discover::UnitDir;
use crate::fleet::HostIdentity;
use crate::system::{ActiveState, System, UnitJob, UserInfo};

/// A host that records every call and can be told to fail some.
#[derive(Default)]
pub(crate) struct Recorder {
    pub calls: RefCell<Vec<String>>,
    pub users: RefCell<BTreeMap<UserName, u32>>,
    pub fail: Vec<String>,
    /// `USER@UNIT`s that come to `failed` after their restart.
    pub failed_units: Vec<String>,
    /// `USER@UNIT`s whose restart job takes three looks to finish.
    pub slow_units: Vec<String>,
    pub polls: std::cell::Cell<usize>,
    /// What `journal` answers.
    pub journal: RefCell<String>,
}

impl Recorder {
    fn call(&self, call: String) -> Result<String, String> {
        let failing = self.fail.iter().any(|f| call.starts_with(f.as_str()));
        self.calls.borrow_mut().push(call.clone());
        if failing { Err(format!("{call} failed")) } else { Ok(String::new()) }
    }
}

impl System for Recorder {
    fn user(&self, name: &UserName) -> Result<Option<UserInfo>, String> {
        Ok(self.users.borrow().get(name).map(|uid| UserInfo {
            name: name.clone(),
            uid: *uid,
            gid: *uid,
            home: PathBuf::from(format!("/home/{name}")),
        }))
    }
    fn lingering(&self, _: &UserName) -> bool {
        true
    }
    fn ensure_group(&self, group: &str) -> Result<(), String> {
        self.call(format!("groupadd {group}")).map(drop)
    }
    fn create_user(&self, name: &UserName, group: &str) -> Result<(), String> {
        self.call(format!("useradd {name} -G {group}"))?;
        let uid = 1000 + self.users.borrow().len() as u32;
        self.users.borrow_mut().insert(name.clone(), uid);
        Ok(())
    }
    fn set_linger(&self, name: &UserName, on: bool) -> Result<(), String> {
        self.call(format!("linger {name} {on}")).map(drop)
    }
    fn start_user_manager(&self, user: &UserInfo) -> Result<(), String> {
        self.call(format!("start user@{}", user.uid)).map(drop)
    }
    fn write_file(&self, user: &UserInfo, dir: UnitDir, name: &str, _: &str) -> Result<(), String> {
        self.call(format!("write {} ~/{}/{name}", user.name, dir.relative())).map(drop)
    }
    fn remove_file(&self, user: &UserInfo, dir: UnitDir, name: &str) -> Result<(), String> {
        self.call(format!("rm {} ~/{}/{name}", user.name, dir.relative())).map(drop)
    }
    fn user_systemctl(&self, name: &UserName, args: &[&str]) -> Result<String, String> {
        self.call(format!("systemctl {name}@ {}", args.join(" ")))
    }
    fn put_secret(&self, user: &UserInfo, name: &str, value: &[u8]) -> Result<(), String> {
        let value = String::from_utf8_lossy(value);
        self.call(format!("podman secret create {} {name} <<< {value}", user.name)).map(drop)
    }
    fn remove_secret(&self, user: &UserInfo, name: &str) -> Result<(), String> {
        self.call(format!("podman secret rm {} {name}", user.name)).map(drop)
    }
    fn journal(&self, args: &[String]) -> Result<String, String> {
        self.call(format!("journalctl {}", args.join(" ")))?;
        Ok(self.journal.borrow().clone())
    }
    fn identity(&self) -> Result<HostIdentity, String> {
        Ok(HostIdentity::named("testhost", None))
    }
    fn unit_job(&self, name: &UserName, unit: &str) -> Result<UnitJob, String> {
        let slow = self.slow_units.iter().any(|u| *u == format!("{name}@{unit}"));
        if slow && self.polls.replace(self.polls.get() + 1) < 3 {
            self.calls.borrow_mut().push(format!("{name}@ {unit} still starting"));
            return Ok(UnitJob { pending: true, state: ActiveState::Activating });
        }
        let failed = self.failed_units.iter().any(|u| *u == format!("{name}@{unit}"));
        let state = if failed { ActiveState::Failed } else { ActiveState::Active };
        Ok(UnitJob { pending: false, state })
    }
    fn remove_user(&self, name: &UserName) -> Result<(), String> {
        self.call(format!("userdel {name}"))?;
        self.users.borrow_mut().remove(name);
        Ok(())
    }
}

impl crate::system::QuadletGenerator for Recorder {
    fn generator(&self) -> Option<String> {
        None
    }
    fn run_generator(&self, _: &[crate::validate::QuadletSet]) -> Result<(), String> {
        unreachable!("no generator is installed")
    }
}
