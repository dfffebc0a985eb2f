//! The values of quadsync's config.env that need more than a type: the image update schedule
//! and the webhook URLs. quadsync reads them with these, and `build-ign` checks them with these
//! (with `QUADSYNC_PATHS`, [`crate::fleet`]) before a host does.

/// When images are updated (`QUADSYNC_AUTO_UPDATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Off,
    /// An `OnCalendar=` expression (`daily`, `weekly`, `Mon *-*-* 03:00`).
    Calendar(String),
}

impl Schedule {
    /// `daily` when empty. The expression is systemd's to judge; here it only has to be one
    /// plain line.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        match text {
            "" | "daily" => Ok(Schedule::Calendar("daily".into())),
            "off" => Ok(Schedule::Off),
            other if other.len() > 120 => Err("longer than 120 characters".into()),
            other if other.chars().all(|c| c.is_ascii_graphic() || c == ' ') => {
                Ok(Schedule::Calendar(other.to_owned()))
            }
            _ => Err("must be daily, weekly, off or an OnCalendar= expression".into()),
        }
    }

    /// The randomized delay for `calendar`: an hour for daily and slower schedules, 5 minutes
    /// otherwise.
    pub fn delay(calendar: &str) -> &'static str {
        match calendar {
            "daily" | "weekly" | "monthly" => "1h",
            _ => "5min",
        }
    }
}

/// One place notifications go (`QUADSYNC_NOTIFY_URL`).
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    /// ntfy's plain-text form (`ntfy.sh`, or written `ntfy+https://…`) instead of JSON.
    pub ntfy: bool,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({})", self.shown())
    }
}

impl Webhook {
    /// Scheme and host only: a webhook's path often holds its token.
    pub fn shown(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        format!("{scheme}://{host}")
    }
}

/// URLs separated by commas or spaces; errors never show a URL, only its position.
pub fn webhooks(setting: &str) -> Result<Vec<Webhook>, String> {
    let mut hooks = Vec::new();
    for (n, word) in setting.split([',', ' ', '\t']).filter(|w| !w.is_empty()).enumerate() {
        let (ntfy_prefix, url) = match word.strip_prefix("ntfy+") {
            Some(url) => (true, url),
            None => (false, word),
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("URL {} is not http:// or https://", n + 1))?;
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if host.is_empty() || url.chars().any(|c| c.is_control()) {
            return Err(format!("URL {} has no host", n + 1));
        }
        hooks.push(Webhook { url: url.to_owned(), ntfy: ntfy_prefix || host == "ntfy.sh" });
    }
    Ok(hooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_daily_by_default_and_plain_lines_only() {
        assert_eq!(Schedule::parse("").unwrap(), Schedule::Calendar("daily".into()));
        assert_eq!(Schedule::parse("off").unwrap(), Schedule::Off);
        assert_eq!(
            Schedule::parse("Mon *-*-* 03:00").unwrap(),
            Schedule::Calendar("Mon *-*-* 03:00".into())
        );
        assert!(Schedule::parse("daily\nExecStart=/bin/evil").is_err());
        assert!(Schedule::parse(&"x".repeat(121)).is_err());
    }

    #[test]
    fn urls_are_read_and_never_shown_whole() {
        let parsed = webhooks(
            "https://hooks.example/T/B/secret, ntfy+https://n.example/alerts http://ntfy.sh/t",
        )
        .unwrap();
        let shown: Vec<(String, bool)> = parsed.iter().map(|t| (t.shown(), t.ntfy)).collect();
        assert_eq!(
            shown,
            [
                ("https://hooks.example".into(), false),
                ("https://n.example".into(), true),
                ("http://ntfy.sh".into(), true)
            ]
        );
        assert!(!format!("{parsed:?}").contains("secret"));
        assert_eq!(webhooks("").unwrap(), []);
        let err = webhooks("https://ok.example, ftp://user:token@x/y").unwrap_err();
        assert_eq!(err, "URL 2 is not http:// or https://");
        assert_eq!(webhooks("https://u:p@h.example/x").unwrap()[0].shown(), "https://h.example");
    }
}
