//! The numbers of a simulated Mini Program: deterministic functions of (appid, date).
//!
//! A weekly rhythm (weekends up), slow growth from the app's first day, a few percent of
//! noise, and optional dips on given days (for alert tests). Each report's simulated answer
//! (in its own module, `crate::report`) is built from these figures, so that distributions
//! and pages add up to the day's totals. Nothing here knows about HTTP or reports.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde_json::Value;

use super::{NotReady, SimApp};
use crate::calendar::Calendar;

/// The calendar the simulated traffic follows: the built-in years.
static CALENDAR: std::sync::LazyLock<Calendar> = std::sync::LazyLock::new(Calendar::default);
use crate::period::{beijing_date, Period, PeriodKind};

/// Why the simulated API refuses a request: WeChat's errcode and message.
pub type Refusal = (i64, &'static str);

/// A request to a report's path, as the report's simulated answer sees it: the token and
/// the body's presence are already checked.
pub struct Request<'a> {
    /// The app the token belongs to.
    pub model: Model<'a>,
    /// The kind of the path called.
    pub kind: PeriodKind,
    /// The JSON body (an object).
    pub body: &'a Value,
    /// The simulation's time.
    pub now: DateTime<Utc>,
}

thread_local! {
    /// Whether the answer being made is the "not published yet" one (for the call log).
    static NOT_READY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `answer` (one simulated answer, which does not await) and tells whether it was the
/// "not published yet" answer.
pub fn noting_not_ready<R>(answer: impl FnOnce() -> R) -> (R, bool) {
    NOT_READY.with(|answered| answered.set(false));
    let result = answer();
    (result, NOT_READY.with(|answered| answered.take()))
}

impl Request<'_> {
    /// The newest day that can be asked for: yesterday, Beijing time.
    pub fn yesterday(&self) -> NaiveDate {
        beijing_date(self.now) - Days::new(1)
    }

    /// The answer for `period` as WeChat publishes it: 61501 for a period that has not ended
    /// by yesterday; before the period's publication, `empty` or errcode 61503 (as the app
    /// does); `empty` for a period before the app's first day; else `answer`.
    pub fn publish(
        &self,
        period: Period,
        answer: impl FnOnce() -> Value,
        empty: impl FnOnce() -> Value,
    ) -> Result<Value, Refusal> {
        if period.end() > self.yesterday() {
            return Err((61501, "date range error"));
        }
        if !self.is_published(period) {
            return self.not_ready(empty);
        }
        if period.start() < self.model.app.since {
            return Ok(empty());
        }
        Ok(answer())
    }

    /// Whether `period` is published at the request's time.
    pub fn is_published(&self, period: Period) -> bool {
        self.now >= self.model.published_at(period)
    }

    /// Whether the app has data for `period`: published, and not before its first day.
    pub fn has(&self, period: Period) -> bool {
        self.is_published(period) && period.start() >= self.model.app.since
    }

    /// The answer for an unpublished period, as the app gives it: `empty`, or errcode 61503.
    pub fn not_ready(&self, empty: impl FnOnce() -> Value) -> Result<Value, Refusal> {
        NOT_READY.with(|answered| answered.set(true));
        match self.model.app.not_ready {
            NotReady::Errcode => Err((61503, "data not ready")),
            NotReady::EmptyList => Ok(empty()),
        }
    }
}

/// The deterministic numbers of one app.
pub struct Model<'a> {
    /// The app.
    pub app: &'a SimApp,
}

/// A day's figures before rounding.
#[derive(Clone, Copy, Debug)]
pub struct Day {
    /// Opens.
    pub sessions: f64,
    /// Visits.
    pub visits: f64,
    /// Visitors.
    pub visitors: f64,
    /// New visitors.
    pub new_visitors: f64,
    /// Average stay per visitor, seconds.
    pub stay_per_visitor: f64,
}

/// A period's figures: sums of its days, visitors de-duplicated over the period.
#[derive(Clone, Copy, Debug)]
pub struct Totals {
    /// Opens.
    pub sessions: f64,
    /// Visits.
    pub visits: f64,
    /// Visitors, de-duplicated.
    pub visitors: f64,
    /// New visitors.
    pub new_visitors: f64,
    /// Average stay per visitor of a day, weighted by the days' visitors.
    pub stay_per_day_visitor: f64,
}

/// A number in [0, 1) from the app, a date and a salt: the same inputs, the same number.
fn unit(appid: &str, date: NaiveDate, salt: &str) -> f64 {
    // FNV-1a, then a final mix so that neighbouring dates differ well.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in appid
        .bytes()
        .chain(date.to_string().bytes())
        .chain(salt.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// 1 plus or minus `spread`, deterministically.
pub fn noise(appid: &str, date: NaiveDate, salt: &str, spread: f64) -> f64 {
    1.0 + spread * (2.0 * unit(appid, date, salt) - 1.0)
}

/// Rounded to 4 decimals, as WeChat writes averages.
pub fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

impl Model<'_> {
    /// The figures of one day.
    pub fn day(&self, date: NaiveDate) -> Day {
        let appid = self.app.appid.as_str();
        let (kind, _) = CALENDAR.day(date);
        let weekday = self.app.profile.factor(kind, date.weekday());
        let days = (date - self.app.since).num_days().max(0) as f64;
        let growth = 1.0 + 0.0008 * days;
        let dip = self.app.dips.get(&date).copied().unwrap_or(1.0);
        let visitors =
            (self.app.visitors * weekday * growth * dip * noise(appid, date, "uv", 0.04)).round();
        let sessions = (visitors * 2.4 * noise(appid, date, "sessions", 0.05)).round();
        Day {
            sessions,
            visits: (sessions * 3.1 * noise(appid, date, "pv", 0.05)).round(),
            visitors,
            new_visitors: (visitors * 0.11 * noise(appid, date, "new", 0.08)).round(),
            stay_per_visitor: 150.0 * noise(appid, date, "stay", 0.1),
        }
    }

    /// The figures of every day of `period`.
    pub fn days(&self, period: Period) -> Vec<Day> {
        let mut days = Vec::new();
        let mut date = period.start();
        while date <= period.end() {
            days.push(self.day(date));
            date = date + Days::new(1);
        }
        days
    }

    /// The figures of a period, visitors de-duplicated.
    pub fn totals(&self, period: Period) -> Totals {
        let days = self.days(period);
        let sum = |f: fn(&Day) -> f64| days.iter().map(f).sum::<f64>();
        let overlap = match period.kind() {
            PeriodKind::Daily => 1.0,
            PeriodKind::Weekly => 0.42,
            PeriodKind::Monthly => 0.21,
        };
        let new_overlap = if overlap < 1.0 { 0.93 } else { 1.0 };
        Totals {
            sessions: sum(|d| d.sessions),
            visits: sum(|d| d.visits),
            visitors: (sum(|d| d.visitors) * overlap).round(),
            new_visitors: (sum(|d| d.new_visitors) * new_overlap).round(),
            stay_per_day_visitor: sum(|d| d.stay_per_visitor * d.visitors) / sum(|d| d.visitors),
        }
    }

    /// The instant WeChat publishes `period` for this app: its publication hour and minute,
    /// Beijing time, on the day after the period ends, moved by the day's spread and delay.
    pub fn published_at(&self, period: Period) -> DateTime<Utc> {
        let app = self.app;
        let day = period.end() + Days::new(1);
        let spread = i64::from(app.publish_spread);
        let moved = if spread == 0 {
            0
        } else {
            let unit = noise(&app.appid, day, "publication", 1.0) - 1.0;
            (unit * spread as f64).round() as i64
        };
        let late = app.late.get(&day).copied().unwrap_or(0);
        let minutes = i64::from(app.publish_minute) + moved + i64::from(late);
        period.end_instant()
            + chrono::Duration::hours(i64::from(app.publish_hour))
            + chrono::Duration::minutes(minutes)
    }

    /// The newest day published at `now`.
    pub fn latest_published_day(&self, now: DateTime<Utc>) -> NaiveDate {
        let latest = Period::latest_completed(PeriodKind::Daily, now);
        if now >= self.published_at(latest) {
            latest.start()
        } else {
            latest.start() - Days::new(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> SimApp {
        SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "s", 10_000.0)
    }

    fn visitors(app: &SimApp, date: NaiveDate) -> f64 {
        Model { app }.day(date).visitors
    }

    #[test]
    fn numbers_are_deterministic_and_follow_the_weekly_rhythm() {
        let app = app();
        let day = NaiveDate::from_ymd_opt(2024, 6, 1).unwrap();
        assert_eq!(visitors(&app, day), visitors(&app, day));
        // Saturday above Monday, every week of a quarter.
        let mut saturday = NaiveDate::from_ymd_opt(2024, 4, 6).unwrap();
        for _ in 0..12 {
            assert!(
                visitors(&app, saturday) > visitors(&app, saturday - Days::new(5)),
                "{saturday}"
            );
            saturday = saturday + Days::new(7);
        }
    }

    #[test]
    fn a_dip_reduces_that_day_only() {
        let mut dipped = app();
        let date = NaiveDate::from_ymd_opt(2024, 6, 5).unwrap();
        dipped.dips.insert(date, 0.5);
        let plain = app();
        assert!((visitors(&dipped, date) / visitors(&plain, date) - 0.5).abs() < 0.01);
        let next = date + Days::new(1);
        assert_eq!(visitors(&dipped, next), visitors(&plain, next));
    }

    #[test]
    fn a_day_is_published_at_the_apps_hour_the_day_after() {
        let mut app = app();
        app.publish_hour = 15;
        let model = Model { app: &app };
        let day = Period::parse_ref_date("20240604").unwrap();
        // 15:00 Beijing on June 5 is 07:00 UTC.
        assert_eq!(
            model.published_at(day).to_rfc3339(),
            "2024-06-05T07:00:00+00:00"
        );
        let before = model.published_at(day) - chrono::Duration::seconds(1);
        assert_eq!(
            model.latest_published_day(before),
            day.start() - Days::new(1)
        );
        assert_eq!(
            model.latest_published_day(model.published_at(day)),
            day.start()
        );
    }
}
