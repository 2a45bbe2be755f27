//! What to do after an error: the one policy the agent and `backfill` share.
//!
//! [`react`] is pure: given how the error is classed, how many times in a row the call has
//! failed, the time and the backoff settings, it says when to try again and whether the whole
//! app must pause (a quota is per app, so its other calls would fail the same way). Jitter
//! comes in as a number so that the table of cases below can pin every answer. A retry is a
//! delay (measured on the monotonic clock, so that a step of the wall clock neither stretches
//! nor skips it) or, for the daily quota, an instant of the calendar.

use std::time::Duration;

use chrono::{DateTime, Days, Timelike, Utc};

use crate::clock::{after, Deadline};
use crate::domain::Polling;
use crate::period::{beijing_date, beijing_midnight};
use crate::wechat::ErrorClass;

/// When to try again after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// After this delay.
    After(Duration),
    /// At this instant of the calendar.
    At(DateTime<Utc>),
}

impl Retry {
    /// The deadline of the retry, for a clock whose monotonic time is `moment` now.
    pub fn deadline(self, moment: crate::clock::Moment) -> Deadline {
        match self {
            Retry::After(delay) => Deadline::Moment(moment.after(delay)),
            Retry::At(instant) => Deadline::Wall(instant),
        }
    }

    /// How long from `now` the retry is.
    pub fn delay(self, now: DateTime<Utc>) -> Duration {
        match self {
            Retry::After(delay) => delay,
            Retry::At(instant) => (instant - now).to_std().unwrap_or_default(),
        }
    }
}

/// When to try again after an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reaction {
    /// When the next attempt may be.
    pub retry: Retry,
    /// Whether every call of the app waits until the retry, not only the failed one.
    pub pause_app: bool,
}

/// The reaction to an error of `class` after `failures` earlier consecutive failures of the
/// same call, at `now`. `jitter` in [0, 1) spreads transient retries over the upper half of
/// their backoff window.
///
/// - transient (busy, 5xx, timeouts, undecodable answers): exponential backoff from
///   `error_backoff_initial`, doubling, capped at `error_backoff_max`;
/// - a configuration error: `error_backoff_max`, since a person must fix it first;
/// - the per-minute quota (45011): the app pauses until the next minute;
/// - the daily quota (45009): the app pauses until the next Beijing day;
/// - a report WeChat does not authorize to the app (48001, 61007, 76022): that report alone
///   asks again on the next Beijing day, at `polling.first_attempt` (a person must grant the
///   permission first; a reload asks at once).
pub fn react(
    class: ErrorClass,
    failures: u32,
    now: DateTime<Utc>,
    polling: &Polling,
    jitter: f64,
) -> Reaction {
    match class {
        ErrorClass::Transient => Reaction {
            retry: Retry::After(polling.backoff(failures, jitter)),
            pause_app: false,
        },
        ErrorClass::Config => Reaction {
            retry: Retry::After(polling.error_backoff_max),
            pause_app: false,
        },
        ErrorClass::MinuteQuota => Reaction {
            retry: Retry::After((next_minute(now) - now).to_std().unwrap_or_default()),
            pause_app: true,
        },
        ErrorClass::DailyQuota => Reaction {
            retry: Retry::At(beijing_midnight(beijing_date(now) + Days::new(1))),
            pause_app: true,
        },
        ErrorClass::Unauthorized => Reaction {
            retry: Retry::At(after(
                beijing_midnight(beijing_date(now) + Days::new(1)),
                polling.first_attempt,
            )),
            pause_app: false,
        },
    }
}

/// The start of the next wall-clock minute, plus a second of slack.
fn next_minute(now: DateTime<Utc>) -> DateTime<Utc> {
    let minute = now
        .with_second(0)
        .and_then(|time| time.with_nanosecond(0))
        .expect("second 0 exists");
    minute + chrono::Duration::seconds(61)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn polling() -> Polling {
        // The defaults: retry 30m, backoff 30s doubling to 30m.
        Polling::default()
    }

    #[test]
    fn every_error_class_gets_its_reaction() {
        use ErrorClass::*;
        let now = "2024-03-10T10:15:42.5Z";
        let after = |seconds: f64| Retry::After(Duration::from_secs_f64(seconds));
        // (class, failures before, jitter, retry, whole app paused)
        let table = [
            (Transient, 0, 0.0, after(30.0), false),
            (Transient, 0, 0.99, after(30.0), false),
            (Transient, 2, 0.0, after(60.0), false),
            (Transient, 2, 0.5, after(90.0), false),
            (Transient, 40, 0.0, after(900.0), false),
            (Transient, 40, 1.0, after(1800.0), false),
            (Config, 0, 0.3, after(1800.0), false),
            (Config, 7, 0.3, after(1800.0), false),
            // 10:15:42.5: the next minute and a second of slack are 18.5 s away.
            (MinuteQuota, 0, 0.3, after(18.5), true),
            // 10:15 UTC is 18:15 in Beijing: the next Beijing day starts at 16:00 UTC, an
            // instant of the calendar whatever the clock does meanwhile.
            (
                DailyQuota,
                0,
                0.3,
                Retry::At(at("2024-03-10T16:00:00Z")),
                true,
            ),
            // Not authorized: the next Beijing day (2024-03-11) at 06:00, 22:00 UTC.
            (
                Unauthorized,
                0,
                0.3,
                Retry::At(at("2024-03-10T22:00:00Z")),
                false,
            ),
            (
                Unauthorized,
                5,
                0.3,
                Retry::At(at("2024-03-10T22:00:00Z")),
                false,
            ),
            (
                DailyQuota,
                3,
                0.3,
                Retry::At(at("2024-03-10T16:00:00Z")),
                true,
            ),
        ];
        for (class, failures, jitter, retry, pause_app) in table {
            assert_eq!(
                react(class, failures, at(now), &polling(), jitter),
                Reaction { retry, pause_app },
                "{class:?} after {failures} failures, jitter {jitter}"
            );
        }
    }

    #[test]
    fn the_next_minute_starts_after_the_current_one() {
        let now = at("2024-03-10T10:15:42.5Z");
        assert_eq!(next_minute(now).to_rfc3339(), "2024-03-10T10:16:01+00:00");
    }
}
