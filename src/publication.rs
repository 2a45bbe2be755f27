//! When WeChat publishes an app's periods, as the app has seen it, and so from when to ask.
//!
//! WeChat publishes a period on the day after it ends, at an hour that differs by app and a
//! little by day (06:00 to past 15:00, api-notes.md). Asking from midnight finds nothing for
//! hours. So each app remembers, per period kind, when its recent periods turned out
//! published: the attempt that found the data, and the last one before it that found
//! nothing. A new period is asked for from one retry interval before the earliest recent
//! finding, never before `polling.first_attempt`, then every `not_ready_retry` until it
//! arrives (a late day still ends with the data). A kind not seen yet follows the daily
//! habit: WeChat publishes the week and the month with the day.
//!
//! Pure: the poller tells what it saw ([`Habits::observe`]) and asks when to start
//! ([`Habits::probe_from`]); the store persists the habits with the app's state.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::after;
use crate::period::{beijing_date, beijing_midnight, Period, PeriodKind};

/// How many publications of each kind are remembered.
const REMEMBERED: usize = 14;

/// One publication as an app saw it, in minutes after midnight (Beijing) of its day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The day of the publication: the day after the period ended.
    pub day: NaiveDate,
    /// The last attempt that found the period unpublished, if one did.
    pub before: Option<u32>,
    /// The attempt that found the data: the publication came at or before it.
    pub found: u32,
}

/// What an app has seen of publication hours, per period kind, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Habits {
    #[serde(default)]
    kinds: BTreeMap<PeriodKind, VecDeque<Seen>>,
}

/// The Beijing midnight that starts the day on which `period` is published.
fn publication_day(period: Period) -> DateTime<Utc> {
    period.end_instant()
}

fn minutes_after(start: DateTime<Utc>, instant: DateTime<Utc>) -> Option<u32> {
    let minutes = (instant - start).num_minutes();
    (0..24 * 60).contains(&minutes).then_some(minutes as u32)
}

impl Habits {
    /// `period` (of `kind`) was found published at `found`, after an attempt at `before`
    /// that found nothing, if any. Kept only when it says something of the hour: found on
    /// its publication day, either after a miss or at the first attempt of the schedule
    /// (`on_schedule`); an exporter that started in the afternoon learns nothing from finding
    /// the morning's data.
    pub fn observe(
        &mut self,
        period: Period,
        before: Option<DateTime<Utc>>,
        found: DateTime<Utc>,
        on_schedule: bool,
    ) -> bool {
        let start = publication_day(period);
        let Some(found_minutes) = minutes_after(start, found) else {
            return false;
        };
        let before = before.and_then(|before| minutes_after(start, before));
        if before.is_none() && !on_schedule {
            return false;
        }
        let seen = self.kinds.entry(period.kind()).or_default();
        let day = beijing_date(start);
        seen.retain(|kept| kept.day != day);
        seen.push_back(Seen {
            day,
            before,
            found: found_minutes,
        });
        while seen.len() > REMEMBERED {
            seen.pop_front();
        }
        true
    }

    /// When to start asking for `period`: `margin` before the earliest recent finding of its
    /// kind (or of the day, for a kind not seen yet), never before `first_attempt` after
    /// midnight of its publication day.
    pub fn probe_from(
        &self,
        period: Period,
        first_attempt: Duration,
        margin: Duration,
    ) -> DateTime<Utc> {
        let start = publication_day(period);
        let earliest = after(start, first_attempt);
        let seen = self
            .kinds
            .get(&period.kind())
            .filter(|seen| !seen.is_empty())
            .or_else(|| self.kinds.get(&PeriodKind::Daily));
        let Some(found) = seen.and_then(|seen| seen.iter().map(|seen| seen.found).min()) else {
            return earliest;
        };
        let learned = after(start, Duration::from_secs(u64::from(found) * 60))
            - chrono::Duration::from_std(margin).unwrap_or_default();
        learned.max(earliest)
    }

    /// What was seen of `kind`, oldest first.
    pub fn seen(&self, kind: PeriodKind) -> impl Iterator<Item = &Seen> {
        self.kinds.get(&kind).into_iter().flatten()
    }

    /// Drops what cannot be true (a day in the future, minutes past the day): a habit read
    /// from disk is checked like any input.
    pub fn sanitized(mut self, today: NaiveDate) -> Habits {
        for seen in self.kinds.values_mut() {
            seen.retain(|seen| {
                seen.day <= today
                    && seen.found < 24 * 60
                    && seen.before.is_none_or(|before| before < seen.found)
            });
            while seen.len() > REMEMBERED {
                seen.pop_front();
            }
        }
        self
    }
}

/// The Beijing midnight at the start of `day`, for tests and the benchmark.
pub fn midnight(day: NaiveDate) -> DateTime<Utc> {
    beijing_midnight(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    fn at(date: &str, hh_mm: &str) -> DateTime<Utc> {
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        let (h, m) = hh_mm.split_once(':').unwrap();
        midnight(date)
            + chrono::Duration::hours(h.parse().unwrap())
            + chrono::Duration::minutes(m.parse().unwrap())
    }

    const SIX: Duration = Duration::from_secs(6 * 3600);
    const HALF_HOUR: Duration = Duration::from_secs(1800);

    #[test]
    fn without_history_asking_starts_at_the_first_attempt_hour() {
        let habits = Habits::default();
        assert_eq!(
            habits.probe_from(day("20240604"), SIX, HALF_HOUR),
            at("2024-06-05", "06:00")
        );
    }

    #[test]
    fn asking_starts_a_margin_before_the_earliest_recent_finding() {
        let mut habits = Habits::default();
        for (date, before, found) in [
            ("20240601", "09:00", "09:30"),
            ("20240602", "08:30", "09:00"),
            ("20240603", "10:00", "10:30"),
        ] {
            let period = day(date);
            let next = (period.end() + chrono::Days::new(1)).to_string();
            assert!(habits.observe(period, Some(at(&next, before)), at(&next, found), false));
        }
        assert_eq!(
            habits.probe_from(day("20240604"), SIX, HALF_HOUR),
            at("2024-06-05", "08:30")
        );
        // The week and the month follow the day until they are seen themselves.
        let week = Period::containing(
            PeriodKind::Weekly,
            NaiveDate::from_ymd_opt(2024, 6, 3).unwrap(),
        );
        assert_eq!(
            habits.probe_from(week, SIX, HALF_HOUR),
            at("2024-06-10", "08:30")
        );
        // Never before the first attempt hour.
        let mut early = Habits::default();
        early.observe(day("20240601"), None, at("2024-06-02", "06:00"), true);
        assert_eq!(
            early.probe_from(day("20240602"), SIX, HALF_HOUR),
            at("2024-06-03", "06:00")
        );
    }

    #[test]
    fn a_finding_that_says_nothing_of_the_hour_is_not_kept() {
        let mut habits = Habits::default();
        // Started in the afternoon, found at once: the data may have come at 07:00.
        assert!(!habits.observe(day("20240601"), None, at("2024-06-02", "14:00"), false));
        // Found days later (the exporter was down).
        assert!(!habits.observe(
            day("20240601"),
            Some(at("2024-06-02", "09:00")),
            at("2024-06-04", "09:30"),
            false
        ));
        assert_eq!(habits, Habits::default());
    }

    #[test]
    fn only_the_last_fourteen_publications_count() {
        let mut habits = Habits::default();
        let first = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        for n in 0..20 {
            let period = Period::containing(PeriodKind::Daily, first + chrono::Days::new(n));
            let next = period.end() + chrono::Days::new(1);
            let found = if n == 0 { "06:30" } else { "11:00" };
            habits.observe(
                period,
                Some(at(&next.to_string(), "10:30")),
                at(&next.to_string(), found),
                false,
            );
        }
        assert_eq!(habits.seen(PeriodKind::Daily).count(), REMEMBERED);
        let last = Period::containing(PeriodKind::Daily, first + chrono::Days::new(20));
        let next = (last.end() + chrono::Days::new(1)).to_string();
        assert_eq!(habits.probe_from(last, SIX, HALF_HOUR), at(&next, "10:30"));
    }

    #[test]
    fn habits_read_from_disk_lose_what_cannot_be_true() {
        let json = r#"{"kinds":{"daily":[{"day":"2024-06-02","before":null,"found":600},
            {"day":"2099-01-01","before":null,"found":600},{"day":"2024-06-03","before":700,"found":600},
            {"day":"2024-06-04","before":null,"found":99999}]}}"#;
        let habits: Habits = serde_json::from_str(json).unwrap();
        let habits = habits.sanitized(NaiveDate::from_ymd_opt(2024, 6, 5).unwrap());
        assert_eq!(habits.seen(PeriodKind::Daily).count(), 1);
    }
}
