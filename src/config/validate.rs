//! Start-up checks of `latchkey serve`'s settings: every lifetime in a sane range, the
//! lifetimes in a consistent order, secrets of the right length and not published anywhere.
//!
//! A setting that fails here is refused before anything connects: `serve` exits with status 2
//! and a message that names the flag.

use super::ServeArgs;

/// Longest accepted session lifetime: ten years. Far below where `now() + interval` or a JWT
/// `exp` could overflow.
pub(super) const MAX_SESSION_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Longest accepted access token lifetime: one day (access tokens are checked by signature
/// alone in apps; a long one outlives its session's revocation there).
pub(super) const MAX_ACCESS_TTL_SECS: u64 = 24 * 3600;
/// Longest accepted grace window: one hour.
pub(super) const MAX_GRACE_SECS: u64 = 3600;
/// Longest accepted interval of the stream timers (re-validation, keep-alive).
pub(super) const MAX_STREAM_INTERVAL_SECS: u64 = 3600;
/// Longest accepted login back-off: one day.
pub(super) const MAX_BACKOFF_SECS: u64 = 24 * 3600;
pub use crate::auth::jwt::PUBLISHED_SECRETS as PUBLISHED_JWT_SECRETS;

/// A setting `serve` refuses, with the flag that carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag}: {message}")]
pub struct InvalidSetting {
    /// The flag's long name, without dashes (e.g. `idle-ttl-secs`).
    pub flag: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

/// Said of a lifetime bounded by the absolute one.
const AT_MOST_ABSOLUTE: &str = " (at most --absolute-ttl-secs)";

fn invalid(flag: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting {
        flag,
        message: message.into(),
    }
}

fn in_range(flag: &'static str, value: u64, min: u64, max: u64) -> Result<(), InvalidSetting> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            flag,
            format!("{value} is not between {min} and {max}"),
        ))
    }
}

/// Whether `origin` is `scheme://host[:port]` with scheme http or https and nothing after.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            if port.parse::<u16>().is_err() {
                return false;
            }
            host
        }
        _ => rest,
    };
    matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
}

impl ServeArgs {
    /// Checks every setting; the first one that fails is returned.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the flag: a lifetime out of range or out of order
    /// (grace, touch interval, expiry step < idle ≤ absolute), a JWT secret shorter than 32 bytes or published in
    /// latchkey's own files, a malformed origin, a zero limit.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.validate_lifetimes()?;
        self.validate_streams()?;
        if let Some(secret) = &self.jwt_secret {
            crate::auth::jwt::check_secret(&secret.0).map_err(|m| invalid("jwt-secret", m))?;
        }
        for origin in &self.allowed_origins {
            if !is_origin(origin.trim_end_matches('/')) {
                return Err(invalid(
                    "allowed-origins",
                    format!("{origin:?} is not an origin like https://app.example.com[:port]"),
                ));
            }
        }
        in_range(
            "max-connections",
            u64::from(self.max_connections),
            1,
            10_000,
        )?;
        if let Some(n) = self.hash_concurrency {
            in_range("hash-concurrency", n as u64, 1, 1024)?;
        }
        self.validate_throttle()?;
        if self.events_max_streams as u64 >= self.max_open_connections {
            return Err(invalid(
                "events-max-streams",
                format!(
                    "{} must be below --max-open-connections ({}), or streams could hold every connection",
                    self.events_max_streams, self.max_open_connections
                ),
            ));
        }
        if self.sweep_interval_secs != 0 {
            in_range(
                "sweep-interval-secs",
                self.sweep_interval_secs,
                1,
                7 * 86_400,
            )?;
        }
        Ok(())
    }

    /// Lifetimes: each in its range, and grace, touch interval, expiry step < idle ≤ absolute.
    fn validate_lifetimes(&self) -> Result<(), InvalidSetting> {
        let absolute = self.absolute_ttl_secs;
        let ranges = [
            ("absolute-ttl-secs", absolute, 1, MAX_SESSION_TTL_SECS, ""),
            (
                "idle-ttl-secs",
                self.idle_ttl_secs,
                1,
                absolute,
                AT_MOST_ABSOLUTE,
            ),
            (
                "access-ttl-secs",
                self.access_ttl_secs,
                1,
                MAX_ACCESS_TTL_SECS,
                "",
            ),
            (
                "anon-ttl-secs",
                self.anon_ttl_secs,
                1,
                absolute,
                AT_MOST_ABSOLUTE,
            ),
            ("grace-secs", self.grace_secs, 0, MAX_GRACE_SECS, ""),
        ];
        for (flag, value, min, max, why) in ranges {
            in_range(flag, value, min, max)
                .map_err(|e| invalid(flag, format!("{}{why}", e.message)))?;
        }
        for (flag, value, why) in [
            (
                "grace-secs",
                self.grace_secs,
                "the grace window of a rotated token must end before the session can idle out",
            ),
            (
                "touch-interval-secs",
                self.touch_interval_secs,
                "a session in use must be touched before it can idle out",
            ),
            (
                "expiry-step-secs",
                self.expiry_step_secs.unwrap_or(0),
                "the idle expiry slides only by at least the step, so a step as long as the idle \
                 lifetime would never slide it and a session in use would idle out",
            ),
        ] {
            if value >= self.idle_ttl_secs {
                return Err(invalid(
                    flag,
                    format!(
                        "{value} must be shorter than --idle-ttl-secs ({}): {why}",
                        self.idle_ttl_secs
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Login throttling: a back-off from 1 s to a day, base ≤ max, and a window that outlasts
    /// the longest block (so a counter never restarts while its key is still being guessed).
    fn validate_throttle(&self) -> Result<(), InvalidSetting> {
        let ranges = [
            (
                "login-backoff-max-secs",
                self.login_backoff_max_secs,
                1,
                MAX_BACKOFF_SECS,
            ),
            (
                "login-backoff-secs",
                self.login_backoff_secs,
                1,
                self.login_backoff_max_secs,
            ),
            (
                "login-failure-window-secs",
                self.login_failure_window_secs,
                1,
                MAX_SESSION_TTL_SECS,
            ),
            (
                "login-account-free-failures",
                u64::from(self.login_account_free_failures),
                0,
                10_000,
            ),
            (
                "login-ip-free-failures",
                u64::from(self.login_ip_free_failures),
                0,
                1_000_000,
            ),
        ];
        for (flag, value, min, max) in ranges {
            in_range(flag, value, min, max)?;
        }
        Ok(())
    }

    /// Live stream settings: positive limits and intervals in range.
    fn validate_streams(&self) -> Result<(), InvalidSetting> {
        let ranges = [
            (
                "events-max-per-owner",
                self.events_max_per_owner as u64,
                1,
                100_000,
            ),
            (
                "events-revalidate-secs",
                self.events_revalidate_secs,
                1,
                MAX_STREAM_INTERVAL_SECS,
            ),
            (
                "events-keepalive-secs",
                self.events_keepalive_secs,
                1,
                MAX_STREAM_INTERVAL_SECS,
            ),
            (
                "events-expiring-secs",
                self.events_expiring_secs,
                0,
                MAX_SESSION_TTL_SECS,
            ),
        ];
        for (flag, value, min, max) in ranges {
            in_range(flag, value, min, max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "http://localhost:8080",
            "https://app.example.com",
            "http://127.0.0.1:8080",
            "http://[::1]:8080",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://",
            "http://host:notaport",
            "https://a b",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
