//! Time, injectable: the wall clock for the calendar, a monotonic clock for delays.
//!
//! The schedule is about calendar instants ("ask from 10:30 Beijing time", "nothing more until
//! the next Beijing day"), which follow the wall clock, and about delays ("again in 30
//! minutes", a backoff), which must not: a step of the wall clock (NTP, a VM resumed, an
//! operator's `date -s`) would stretch a 30-minute retry into days or shrink it to nothing.
//! So a [`Clock`] tells both: [`Clock::now`], the wall clock, and [`Clock::moment`], a
//! [`Moment`] on a monotonic clock that only moves forward, at the pace of real time.
//! Sleepers on the calendar ([`Clock::sleep_until`]) look at the wall clock again at least
//! once a minute, so a step is noticed within a minute; sleepers on a delay
//! ([`Clock::sleep_until_moment`]) never see a step at all.
//!
//! In production both are the host's clocks; tests use a manual clock that they set and
//! advance (both clocks move), or step (the wall clock alone jumps, as NTP would make it),
//! which wakes every sleeper whose deadline has passed, so a schedule spanning days runs in
//! milliseconds with real network IO.

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

/// How long a calendar sleeper waits before it looks at the wall clock again.
const CALENDAR_CHECK: Duration = Duration::from_secs(60);

/// A point on a clock's monotonic time: how long after the clock's start. Delays are
/// measured on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(Duration);

impl Moment {
    /// The moment `elapsed` after the clock's start.
    pub fn from_start(elapsed: Duration) -> Moment {
        Moment(elapsed)
    }

    /// This moment plus `delay` (saturating: a delay can be absurdly long).
    pub fn after(self, delay: Duration) -> Moment {
        Moment(self.0.saturating_add(delay))
    }

    /// How long after `earlier` this moment is (zero if it is not after it).
    pub fn since(self, earlier: Moment) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

/// When something may happen: after a delay (a [`Moment`] of the monotonic clock) or at an
/// instant of the calendar (the wall clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// A moment of the monotonic clock.
    Moment(Moment),
    /// An instant of the wall clock.
    Wall(DateTime<Utc>),
}

impl Deadline {
    /// A deadline already reached.
    pub const NOW: Deadline = Deadline::Moment(Moment(Duration::ZERO));

    /// Whether the deadline is reached when the clocks show `now` and `moment`.
    pub fn reached(self, now: DateTime<Utc>, moment: Moment) -> bool {
        match self {
            Deadline::Moment(deadline) => moment >= deadline,
            Deadline::Wall(deadline) => now >= deadline,
        }
    }

    /// The moment of the monotonic clock at which the deadline comes, as the clocks show
    /// `now` and `moment` (a wall deadline may move if the wall clock steps).
    pub fn moment(self, now: DateTime<Utc>, moment: Moment) -> Moment {
        match self {
            Deadline::Moment(deadline) => deadline,
            Deadline::Wall(deadline) => moment.after((deadline - now).to_std().unwrap_or_default()),
        }
    }

    /// The wall-clock instant of the deadline, as the clocks show `now` and `moment` (for
    /// the pages).
    pub fn wall(self, now: DateTime<Utc>, moment: Moment) -> DateTime<Utc> {
        match self {
            Deadline::Moment(deadline) => {
                let ahead = deadline.since(moment);
                let behind = moment.since(deadline);
                let wall = after(now, ahead);
                chrono::Duration::from_std(behind)
                    .ok()
                    .and_then(|behind| wall.checked_sub_signed(behind))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            }
            Deadline::Wall(deadline) => deadline,
        }
    }

    /// The later of two deadlines, as the clocks show `now` and `moment`.
    pub fn later(self, other: Deadline, now: DateTime<Utc>, moment: Moment) -> Deadline {
        if self.moment(now, moment) >= other.moment(now, moment) {
            self
        } else {
            other
        }
    }
}

/// What a manual clock shows: the wall clock and the monotonic time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    wall: DateTime<Utc>,
    moment: Moment,
}

/// A source of wall-clock and monotonic time that can also be slept on.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The host's clocks.
    System(Arc<tokio::time::Instant>),
    /// A clock that only moves when told to (see [`Clock::manual`]).
    Manual(Arc<watch::Sender<Shown>>),
}

impl Clock {
    /// The host's clocks; its moments count from now.
    pub fn system() -> Clock {
        Clock::System(Arc::new(tokio::time::Instant::now()))
    }

    /// A manual clock showing `start`.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        let shown = Shown {
            wall: start,
            moment: Moment::default(),
        };
        Clock::Manual(Arc::new(watch::Sender::new(shown)))
    }

    /// The current wall-clock instant.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System(_) => Utc::now(),
            Clock::Manual(shown) => shown.borrow().wall,
        }
    }

    /// The current moment of the monotonic clock.
    pub fn moment(&self) -> Moment {
        match self {
            Clock::System(start) => Moment(start.elapsed()),
            Clock::Manual(shown) => shown.borrow().moment,
        }
    }

    /// The wall-clock instant and the moment of the monotonic clock, read together: a
    /// manual clock moved meanwhile (by another thread) shows both as before or both as after.
    pub fn reading(&self) -> (DateTime<Utc>, Moment) {
        match self {
            Clock::System(_) => (self.now(), self.moment()),
            Clock::Manual(shown) => {
                let shown = *shown.borrow();
                (shown.wall, shown.moment)
            }
        }
    }

    /// The deadline `delay` from now on the monotonic clock.
    pub fn deadline_in(&self, delay: Duration) -> Deadline {
        Deadline::Moment(self.moment().after(delay))
    }

    /// Completes once `deadline` is reached, however the wall clock steps meanwhile.
    pub async fn sleep_until_deadline(&self, deadline: Deadline) {
        match deadline {
            Deadline::Moment(moment) => self.sleep_until_moment(moment).await,
            Deadline::Wall(instant) => self.sleep_until(instant).await,
        }
    }

    /// Completes once the wall clock shows `deadline` or later.
    pub async fn sleep_until(&self, deadline: DateTime<Utc>) {
        match self {
            Clock::System(_) => loop {
                // In slices, so that a step of the wall clock is noticed within a minute.
                let left = deadline - Utc::now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(CALENDAR_CHECK)).await;
            },
            Clock::Manual(shown) => {
                let mut receiver = shown.subscribe();
                // The sender lives as long as this clock, so the wait cannot fail.
                let _ = receiver.wait_for(|shown| shown.wall >= deadline).await;
            }
        }
    }

    /// Completes once the monotonic clock reaches `deadline`.
    pub async fn sleep_until_moment(&self, deadline: Moment) {
        match self {
            Clock::System(start) => {
                let at = start.checked_add(deadline.0);
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }
            Clock::Manual(shown) => {
                let mut receiver = shown.subscribe();
                let _ = receiver.wait_for(|shown| shown.moment >= deadline).await;
            }
        }
    }

    /// Completes after `delay` on the monotonic clock.
    pub async fn sleep(&self, delay: Duration) {
        self.sleep_until_moment(self.moment().after(delay)).await;
    }

    /// Moves a manual clock forward, both its wall clock and its monotonic time; panics on
    /// the system clock, which cannot be moved.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).expect("a representable duration");
        self.set(self.now() + by);
    }

    /// Sets a manual clock's wall clock to `to`: forward, the monotonic time moves as much;
    /// backward, it stays (a step back). Panics on the system clock, which cannot be set.
    pub fn set(&self, to: DateTime<Utc>) {
        let Clock::Manual(shown) = self else {
            panic!("the system clock cannot be set")
        };
        shown.send_modify(|shown| {
            let forward = (to - shown.wall).to_std().unwrap_or_default();
            shown.moment = shown.moment.after(forward);
            shown.wall = to;
        });
    }

    /// Steps a manual clock's wall clock by `by` (forward or back) while its monotonic time
    /// stays, as NTP or a resumed VM steps a host's clock. Panics on the system clock.
    pub fn step(&self, by: chrono::Duration) {
        let Clock::Manual(shown) = self else {
            panic!("the system clock cannot be stepped")
        };
        shown.send_modify(|shown| shown.wall += by);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

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
        assert_eq!(
            Moment::default().after(Duration::MAX).after(Duration::MAX),
            Moment(Duration::MAX)
        );
    }

    #[tokio::test]
    async fn manual_sleepers_wake_when_the_clock_passes_their_deadline() {
        let start = at("2024-01-01T00:00:00Z");
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

    #[tokio::test]
    async fn a_step_of_the_wall_clock_moves_the_calendar_but_no_delay() {
        let clock = Clock::manual(at("2024-06-05T02:00:00Z"));
        let delay = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(1800)).await }
        });
        let calendar = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at("2024-06-05T02:30:00Z")).await }
        });
        tokio::task::yield_now().await;
        // Three days back: the calendar deadline is now three days away, the delay is not.
        clock.step(-chrono::Duration::days(3));
        clock.advance(Duration::from_secs(1800));
        delay.await.unwrap();
        assert!(!calendar.is_finished());
        assert_eq!(clock.now(), at("2024-06-02T02:30:00Z"));
        assert_eq!(
            clock.moment(),
            Moment::from_start(Duration::from_secs(1800))
        );
        // Setting the clock back is a step too: the monotonic time stays.
        clock.set(at("2024-06-01T00:00:00Z"));
        assert_eq!(
            clock.moment(),
            Moment::from_start(Duration::from_secs(1800))
        );
        // A moment ahead shows at the wall time it will come.
        let ahead = Deadline::Moment(clock.moment().after(Duration::from_secs(60)));
        assert_eq!(
            ahead.wall(clock.now(), clock.moment()),
            at("2024-06-01T00:01:00Z")
        );
        assert!(!ahead.reached(clock.now(), clock.moment()));
        // Stepped forward past it, the calendar sleeper wakes.
        clock.step(chrono::Duration::days(5));
        calendar.await.unwrap();
    }
}
