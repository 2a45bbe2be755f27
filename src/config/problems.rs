//! Collecting every problem of a configuration, each naming its key and its fix, and the
//! checks shared by the tables (durations, addresses, the base URL).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;

/// Collects problems while validating.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, key: &str, problem: impl fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    /// A duration between `min` and `max`.
    pub(super) fn duration_in(
        &mut self,
        key: &str,
        text: &str,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let duration = self.duration(key, text);
        if duration.is_zero() {
            return min;
        }
        if !(min..=max).contains(&duration) {
            let show = |duration: Duration| humantime::format_duration(duration).to_string();
            self.add(
                key,
                format!(
                    "{text:?} is out of range; use from {} to {}",
                    show(min),
                    show(max)
                ),
            );
            return duration.clamp(min, max);
        }
        duration
    }

    pub(super) fn duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if !duration.is_zero() => duration,
            Ok(_) => {
                self.add(key, "must be longer than zero");
                Duration::ZERO
            }
            Err(_) => {
                self.add(
                    key,
                    format!(
                        "{text:?} is not a duration; write e.g. \"30s\", \"30m\" or \"1h 30m\""
                    ),
                );
                Duration::ZERO
            }
        }
    }
}

impl Problems {
    pub(super) fn listen_address(&mut self, text: &str) -> SocketAddr {
        parse_listen_address(text).unwrap_or_else(|| {
            self.add(
                "listen_address",
                format!("{text:?} is not an address; write HOST:PORT, e.g. \"0.0.0.0:10050\" or \":10050\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 10050))
        })
    }

    pub(super) fn api_base_url(&mut self, text: &str) -> String {
        let url = text.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.len() <= "https://".len()
        {
            self.add(
                "api_base_url",
                format!(
                    "{text:?} is not an http(s) URL; the default is \"https://api.weixin.qq.com\""
                ),
            );
        }
        url
    }
}

/// The allowed range of each polling delay: short enough to be useful, long enough not to
/// flood WeChat or the log.
pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const SECOND: Duration = Duration::from_secs(1);
pub(super) const DAY: Duration = Duration::from_secs(86_400);

/// The most requests in flight that `polling.concurrency` allows.
pub const MAX_CONCURRENCY: i64 = 64;

/// `HH:MM` as the time since midnight.
pub(super) fn time_of_day(text: &str) -> Option<Duration> {
    let (hours, minutes) = text.trim().split_once(':')?;
    let (hours, minutes): (u64, u64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours < 24 && minutes < 60 && minutes.to_string().len() <= 2)
        .then(|| Duration::from_secs(hours * 3600 + minutes * 60))
}
