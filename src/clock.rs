//! Wall-clock time, injectable.
//!
//! The schedule is about calendar instants ("retry at 10:30 Beijing time", "nothing more until
//! the next Beijing day"), so the poller and the simulated API read the time and sleep through
//! a [`Clock`]. In production it is the system clock; tests use a manual clock that they set
//! and advance, which wakes every sleeper whose deadline has passed, so a schedule spanning
//! days runs in milliseconds with real network IO.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// `instant` plus `delay`, or the last representable instant when that is further away (a
/// configured delay can be absurdly long; a date must never overflow).
pub fn after(instant: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|delay| instant.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A source of wall-clock time that can also be slept on.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The host's clock.
    System,
    /// A clock that only moves when told to (see [`Clock::manual`]).
    Manual(Arc<watch::Sender<DateTime<Utc>>>),
}

impl Clock {
    /// A manual clock showing `start`.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock::Manual(Arc::new(watch::Sender::new(start)))
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(now) => *now.borrow(),
        }
    }

    /// Completes once the clock shows `deadline` or later.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) {
        match self {
            Clock::System => {
                // Sleep in slices of at most an hour so that a clock step (NTP, suspend) is
                // noticed within the hour instead of after a stale monotonic wait.
                loop {
                    let left = deadline - Utc::now();
                    let Ok(left) = left.to_std() else { return };
                    if left.is_zero() {
                        return;
                    }
                    tokio::time::sleep(left.min(Duration::from_secs(3600))).await;
                }
            }
            Clock::Manual(now) => {
                let mut receiver = now.subscribe();
                // The sender lives as long as this clock, so the wait cannot fail.
                let _ = receiver.wait_for(|now| *now >= deadline).await;
            }
        }
    }

    /// Moves a manual clock forward; panics on the system clock, which cannot be moved.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("a representable duration");
        self.set(self.now() + by);
    }

    /// Sets a manual clock; panics on the system clock, which cannot be set.
    pub fn set(&self, to: DateTime<Utc>) {
        match self {
            Clock::System => panic!("the system clock cannot be set"),
            Clock::Manual(now) => {
                now.send_replace(to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_any_delay_never_overflows() {
        let start = DateTime::from_timestamp(0, 0).unwrap();
        assert_eq!(after(start, Duration::from_secs(60)).timestamp(), 60);
        assert_eq!(after(start, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        let years = Duration::from_secs(300_000 * 365 * 86_400);
        assert_eq!(after(start, years), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            after(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[tokio::test]
    async fn manual_sleepers_wake_when_the_clock_passes_their_deadline() {
        let start = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::manual(start);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(start + chrono::Duration::hours(2)).await }
        });
        clock.advance(Duration::from_secs(3600));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(3600));
        sleeper.await.unwrap();
    }
}
