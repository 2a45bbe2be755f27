//! When WeChat publishes an app's periods, as the app has seen it, and so from when to ask.
//!
//! WeChat publishes a period on the day after it ends, at an hour that differs by app and a
//! little by day (06:00 to past 15:00, api-notes.md), and now and then hours late. Asking
//! from midnight finds nothing for hours. So each app remembers, per period kind, when its
//! last 14 periods turned out published: the attempt that found the data, and the last one
//! before it that found nothing; the publication came between the two. A new period is
//! asked for from half a retry interval before an early estimate (the lowest sixth of the
//! recent ones, so that late days do not move it), never before `polling.first_attempt`,
//! then every `not_ready_retry` until it arrives: a late day still ends with the data. When
//! the first attempt already finds the data, the publication may have come much earlier:
//! that day counts as two retry intervals earlier, and each such day in a row starts twice
//! as far back. Until three periods of a kind are seen, asking starts at `first_attempt`
//! (the week and the month follow the day's habit until their own is known: WeChat
//! publishes them with the day).
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

/// How many publications of a kind are needed before its habit is trusted.
const TRUSTED: usize = 3;

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

    /// When to start asking for `period`: half of `margin` (the retry interval) before an
    /// early estimate of the publication time of its kind (or of the day, for a kind not
    /// seen enough), twice as far back for each recent day in a row whose first attempt
    /// found the data, never before `first_attempt` after midnight of its publication day.
    pub fn probe_from(
        &self,
        period: Period,
        first_attempt: Duration,
        margin: Duration,
    ) -> DateTime<Utc> {
        let start = publication_day(period);
        let earliest = after(start, first_attempt);
        let trusted = |kind| self.kinds.get(&kind).filter(|seen| seen.len() >= TRUSTED);
        let Some(seen) = trusted(period.kind()).or_else(|| trusted(PeriodKind::Daily)) else {
            return earliest;
        };
        let margin_minutes = (margin.as_secs() / 60) as u32;
        let mut estimates: Vec<u32> = seen
            .iter()
            .map(|seen| match seen.before {
                Some(before) => before + (seen.found - before) / 2,
                None => seen.found.saturating_sub(2 * margin_minutes),
            })
            .collect();
        estimates.sort_unstable();
        // The lowest sixth: a few late days in two weeks do not move it.
        let early = estimates[estimates.len() / 6];
        let hits = seen
            .iter()
            .rev()
            .take_while(|seen| seen.before.is_none())
            .count();
        let back = (margin / 2).saturating_mul(1 << hits.min(4));
        let learned = after(start, Duration::from_secs(u64::from(early) * 60))
            - chrono::Duration::from_std(back).unwrap_or_default();
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

    /// Habits of daily periods ending on the days from `first`, each published between
    /// `before` (not yet) and `found` (found) on the next day.
    fn seen(first: &str, days: &[(&str, &str)]) -> Habits {
        let mut habits = Habits::default();
        let first = NaiveDate::parse_from_str(first, "%Y-%m-%d").unwrap();
        for (n, (before, found)) in days.iter().enumerate() {
            let period = Period::containing(PeriodKind::Daily, first + chrono::Days::new(n as u64));
            let next = (period.end() + chrono::Days::new(1)).to_string();
            let before = (!before.is_empty()).then(|| at(&next, before));
            assert!(habits.observe(period, before, at(&next, found), before.is_none()));
        }
        habits
    }

    fn next_day(habits: &Habits, first: &str, days: usize) -> DateTime<Utc> {
        let first = NaiveDate::parse_from_str(first, "%Y-%m-%d").unwrap();
        let period = Period::containing(PeriodKind::Daily, first + chrono::Days::new(days as u64));
        habits.probe_from(period, SIX, HALF_HOUR)
    }

    #[test]
    fn asking_starts_before_the_usual_publication_once_three_days_are_seen() {
        let two = seen("2024-06-01", &[("09:00", "09:30"), ("08:30", "09:00")]);
        assert_eq!(next_day(&two, "2024-06-01", 2), at("2024-06-04", "06:00"));
        let three = seen(
            "2024-06-01",
            &[("09:00", "09:30"), ("08:30", "09:00"), ("10:00", "10:30")],
        );
        // The earliest estimate, 08:45, less a quarter hour.
        assert_eq!(next_day(&three, "2024-06-01", 3), at("2024-06-05", "08:30"));
        // The week follows the day until it is seen itself.
        let week = Period::containing(
            PeriodKind::Weekly,
            NaiveDate::from_ymd_opt(2024, 6, 3).unwrap(),
        );
        assert_eq!(
            three.probe_from(week, SIX, HALF_HOUR),
            at("2024-06-10", "08:30")
        );
        // Never before the first attempt hour.
        let early = seen(
            "2024-06-01",
            &[("06:00", "06:10"), ("06:00", "06:10"), ("06:00", "06:10")],
        );
        assert_eq!(next_day(&early, "2024-06-01", 3), at("2024-06-05", "06:00"));
    }

    #[test]
    fn a_few_late_days_do_not_move_the_start() {
        let mut days = vec![("09:00", "09:30"); 12];
        days[3] = ("12:00", "12:30");
        days[7] = ("14:30", "15:00");
        let habits = seen("2024-06-01", &days);
        assert_eq!(
            next_day(&habits, "2024-06-01", 12),
            at("2024-06-14", "09:00")
        );
    }

    #[test]
    fn finding_the_data_at_the_first_attempt_starts_earlier_each_day_in_a_row() {
        let mut days = vec![("09:00", "09:30"); 6];
        days.push(("", "09:00"));
        let one = seen("2024-06-01", &days);
        // The usual 09:15, twice the quarter hour back.
        assert_eq!(next_day(&one, "2024-06-01", 7), at("2024-06-09", "08:45"));
        days.push(("", "07:30"));
        let two = seen("2024-06-01", &days);
        // The first hit, counted as 08:00, is now the lowest sixth; four quarter hours back.
        assert_eq!(next_day(&two, "2024-06-01", 8), at("2024-06-10", "07:00"));
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
        let mut days = vec![("05:00", "05:30"); 3];
        days.extend(vec![("10:30", "11:00"); 17]);
        let habits = seen("2024-05-01", &days);
        assert_eq!(habits.seen(PeriodKind::Daily).count(), REMEMBERED);
        assert_eq!(
            next_day(&habits, "2024-05-01", 20),
            at("2024-05-22", "10:30")
        );
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
