//! The Beijing-time calendar: days, natural weeks (Monday..Sunday) and natural months.
//!
//! WeChat computes all analytics in Beijing time (UTC+8, no daylight saving), whatever the
//! host's timezone, so every date decision in the exporter goes through this module: which
//! period is the latest completed one at a given instant, how a period is written in a
//! request (`begin_date`/`end_date`) and in an answer (`ref_date`), and the instant at which a
//! period starts (the value of `wechat_miniprogram_ref_date_timestamp_seconds`).

use std::fmt;

use chrono::{DateTime, Datelike, Days, FixedOffset, Months, NaiveDate, TimeZone, Utc};

/// `date` as `yyyymmdd`, as chrono's `%Y%m%d` writes it (which years past 9999 or before 0
/// take, with their sign), without parsing a format per request.
fn yyyymmdd(date: NaiveDate) -> String {
    match date.year() {
        0..=9999 => format!("{:04}{:02}{:02}", date.year(), date.month(), date.day()),
        _ => date.format("%Y%m%d").to_string(),
    }
}

/// Beijing time: UTC+8 all year round.
pub fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// The Beijing calendar date at an instant.
pub fn beijing_date(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&beijing()).date_naive()
}

/// The instant at which a Beijing calendar date begins (00:00 UTC+8).
pub fn beijing_midnight(date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    beijing()
        .from_local_datetime(&midnight)
        .single()
        .expect("a fixed offset has no gaps")
        .with_timezone(&Utc)
}

/// The granularity of a report: WeChat publishes days, natural weeks and natural months.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    /// One calendar day.
    Daily,
    /// One natural week, Monday to Sunday.
    Weekly,
    /// One natural month, first to last day.
    Monthly,
}

impl PeriodKind {
    /// Every kind, in the order reports are polled and shown.
    pub const ALL: [PeriodKind; 3] = [PeriodKind::Daily, PeriodKind::Weekly, PeriodKind::Monthly];

    /// The value of the `period` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Daily => "daily",
            PeriodKind::Weekly => "weekly",
            PeriodKind::Monthly => "monthly",
        }
    }
}

impl fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One day, natural week or natural month of the Beijing calendar.
///
/// A `Period` is always aligned: a weekly period starts on a Monday and a monthly one on the
/// first of a month; the constructors guarantee it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    kind: PeriodKind,
    start: NaiveDate,
}

impl Period {
    /// The period of `kind` that contains `date`.
    pub fn containing(kind: PeriodKind, date: NaiveDate) -> Period {
        let start = match kind {
            PeriodKind::Daily => date,
            PeriodKind::Weekly => {
                date - Days::new(u64::from(date.weekday().num_days_from_monday()))
            }
            PeriodKind::Monthly => date.with_day(1).expect("every month has a first day"),
        };
        Period { kind, start }
    }

    /// The newest period of `kind` that has ended at `now` (in Beijing time).
    ///
    /// At 16:00 UTC on March 13 it is already March 14 in Beijing, so the latest completed
    /// day is March 13.
    pub fn latest_completed(kind: PeriodKind, now: DateTime<Utc>) -> Period {
        Period::containing(kind, beijing_date(now)).prev()
    }

    /// The kind of this period.
    pub fn kind(self) -> PeriodKind {
        self.kind
    }

    /// The first day of the period.
    pub fn start(self) -> NaiveDate {
        self.start
    }

    /// The last day of the period.
    pub fn end(self) -> NaiveDate {
        self.next().start - Days::new(1)
    }

    /// The period right after this one.
    pub fn next(self) -> Period {
        let start = match self.kind {
            PeriodKind::Daily => self.start + Days::new(1),
            PeriodKind::Weekly => self.start + Days::new(7),
            PeriodKind::Monthly => self.start + Months::new(1),
        };
        Period { start, ..self }
    }

    /// The period right before this one.
    pub fn prev(self) -> Period {
        self.back(1)
    }

    /// The period `n` periods before this one.
    pub fn back(self, n: u32) -> Period {
        let start = match self.kind {
            PeriodKind::Daily => self.start - Days::new(u64::from(n)),
            PeriodKind::Weekly => self.start - Days::new(7 * u64::from(n)),
            PeriodKind::Monthly => self.start - Months::new(n),
        };
        Period { start, ..self }
    }

    /// The instant the period begins (00:00 Beijing time of its first day).
    pub fn start_instant(self) -> DateTime<Utc> {
        beijing_midnight(self.start)
    }

    /// The instant the period ends: the start of the next one.
    pub fn end_instant(self) -> DateTime<Utc> {
        self.next().start_instant()
    }

    /// The request's `begin_date`, `yyyymmdd`.
    pub fn begin_date(self) -> String {
        yyyymmdd(self.start)
    }

    /// The request's `end_date`, `yyyymmdd`.
    pub fn end_date(self) -> String {
        yyyymmdd(self.end())
    }

    /// The `ref_date` WeChat writes for this period: `20170313`, `20170306-20170312` or `201702`.
    pub fn ref_date(self) -> String {
        match self.kind {
            PeriodKind::Daily => self.begin_date(),
            PeriodKind::Weekly => format!("{}-{}", self.begin_date(), self.end_date()),
            PeriodKind::Monthly => self.start.format("%Y%m").to_string(),
        }
    }

    /// Parses a `ref_date` as WeChat writes it; `None` for anything that is not an aligned period.
    pub fn parse_ref_date(text: &str) -> Option<Period> {
        let text = text.trim();
        let parse_day = |s: &str| {
            if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
                NaiveDate::parse_from_str(s, "%Y%m%d").ok()
            } else {
                None
            }
        };
        match text.len() {
            8 => parse_day(text).map(|day| Period::containing(PeriodKind::Daily, day)),
            17 => {
                let (begin, end) = text.split_once('-')?;
                let week = Period::containing(PeriodKind::Weekly, parse_day(begin)?);
                (week.start == parse_day(begin)? && week.end() == parse_day(end)?).then_some(week)
            }
            6 => {
                let first = parse_day(&format!("{text}01"))?;
                Some(Period::containing(PeriodKind::Monthly, first))
            }
            _ => None,
        }
    }

    /// Every period of `kind` that ends on a day in `from..=to`, oldest first: the periods
    /// that become complete, and so publishable, within those days.
    pub fn ending_within(kind: PeriodKind, from: NaiveDate, to: NaiveDate) -> Vec<Period> {
        let mut period = Period::containing(kind, from);
        let mut periods = Vec::new();
        while period.end() <= to {
            periods.push(period);
            period = period.next();
        }
        periods
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            PeriodKind::Daily => write!(f, "day {}", self.start),
            PeriodKind::Weekly => write!(f, "week {}..{}", self.start, self.end()),
            PeriodKind::Monthly => write!(f, "month {}", self.start.format("%Y-%m")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_dates_are_written_as_chrono_writes_them_in_every_year() {
        for (year, month, day) in [(2017, 3, 13), (1, 1, 1), (0, 12, 31), (9999, 12, 31)] {
            let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
            assert_eq!(yyyymmdd(date), date.format("%Y%m%d").to_string());
        }
        for year in [-1, 10000, 99999] {
            let date = NaiveDate::from_ymd_opt(year, 1, 2).unwrap();
            assert_eq!(yyyymmdd(date), date.format("%Y%m%d").to_string());
        }
        let day = NaiveDate::from_ymd_opt(2026, 2, 28).unwrap();
        let start = NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        let month = Period::containing(PeriodKind::Monthly, day);
        assert_eq!(month.begin_date(), "20260201");
        assert_eq!(month.end_date(), "20260228");
        assert_eq!(
            Period::containing(PeriodKind::Daily, start).end_date(),
            "20260201"
        );
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    fn check(kind: PeriodKind, now: &str, begin: &str, end: &str) {
        let period = Period::latest_completed(kind, utc(now));
        assert_eq!(
            (period.begin_date(), period.end_date()),
            (begin.to_string(), end.to_string()),
            "{kind} at {now}"
        );
    }

    #[test]
    fn latest_day_is_yesterday_in_beijing() {
        check(
            PeriodKind::Daily,
            "2017-03-14T03:00:00Z",
            "20170313",
            "20170313",
        );
    }

    #[test]
    fn from_16_00_utc_it_is_already_the_next_beijing_day() {
        check(
            PeriodKind::Daily,
            "2017-03-13T15:59:59Z",
            "20170312",
            "20170312",
        );
        check(
            PeriodKind::Daily,
            "2017-03-13T16:00:00Z",
            "20170313",
            "20170313",
        );
        check(
            PeriodKind::Daily,
            "2017-03-13T23:59:59Z",
            "20170313",
            "20170313",
        );
    }

    #[test]
    fn latest_week_is_the_last_complete_monday_to_sunday() {
        // Monday 2017-03-13 in Beijing: the week that just ended is 03-06..03-12.
        check(
            PeriodKind::Weekly,
            "2017-03-12T16:00:00Z",
            "20170306",
            "20170312",
        );
        // Sunday 2017-03-12 23:59 in Beijing: that week is not over yet.
        check(
            PeriodKind::Weekly,
            "2017-03-12T15:59:59Z",
            "20170227",
            "20170305",
        );
        check(
            PeriodKind::Weekly,
            "2017-03-15T12:00:00Z",
            "20170306",
            "20170312",
        );
    }

    #[test]
    fn latest_month_is_the_previous_calendar_month() {
        check(
            PeriodKind::Monthly,
            "2017-03-01T00:00:00Z",
            "20170201",
            "20170228",
        );
        check(
            PeriodKind::Monthly,
            "2017-02-28T16:00:00Z",
            "20170201",
            "20170228",
        );
        check(
            PeriodKind::Monthly,
            "2017-02-28T15:59:59Z",
            "20170101",
            "20170131",
        );
    }

    #[test]
    fn year_end_rolls_over() {
        check(
            PeriodKind::Daily,
            "2026-12-31T16:00:00Z",
            "20261231",
            "20261231",
        );
        check(
            PeriodKind::Monthly,
            "2026-12-31T16:00:00Z",
            "20261201",
            "20261231",
        );
        check(
            PeriodKind::Monthly,
            "2027-01-15T00:00:00Z",
            "20261201",
            "20261231",
        );
        // The week of 2026-12-28 (Monday) runs into 2027.
        check(
            PeriodKind::Weekly,
            "2027-01-04T00:00:00Z",
            "20261228",
            "20270103",
        );
        check(
            PeriodKind::Weekly,
            "2027-01-03T00:00:00Z",
            "20261221",
            "20261227",
        );
    }

    #[test]
    fn leap_day_belongs_to_february() {
        check(
            PeriodKind::Daily,
            "2024-03-01T00:00:00Z",
            "20240229",
            "20240229",
        );
        check(
            PeriodKind::Monthly,
            "2024-03-01T00:00:00Z",
            "20240201",
            "20240229",
        );
        check(
            PeriodKind::Monthly,
            "2025-03-01T00:00:00Z",
            "20250201",
            "20250228",
        );
        check(
            PeriodKind::Weekly,
            "2024-03-04T00:00:00Z",
            "20240226",
            "20240303",
        );
    }

    #[test]
    fn ref_dates_round_trip() {
        for (kind, text) in [
            (PeriodKind::Daily, "20170313"),
            (PeriodKind::Weekly, "20170306-20170312"),
            (PeriodKind::Monthly, "201702"),
        ] {
            let period = Period::parse_ref_date(text).unwrap();
            assert_eq!(period.kind(), kind);
            assert_eq!(period.ref_date(), text);
        }
    }

    #[test]
    fn misaligned_or_malformed_ref_dates_are_rejected() {
        for text in [
            "20170307-20170313",
            "20170306-20170313",
            "2017031",
            "201713",
            "20170230",
            "abcdefgh",
            "",
        ] {
            assert_eq!(Period::parse_ref_date(text), None, "{text}");
        }
    }

    #[test]
    fn period_starts_at_beijing_midnight() {
        let period = Period::containing(PeriodKind::Daily, day("2017-03-13"));
        assert_eq!(period.start_instant(), utc("2017-03-12T16:00:00Z"));
        assert_eq!(period.end_instant(), utc("2017-03-13T16:00:00Z"));
        assert_eq!(period.start_instant().timestamp(), 1_489_334_400);
    }

    #[test]
    fn stepping_back_crosses_month_and_year_edges() {
        let march = Period::containing(PeriodKind::Monthly, day("2017-03-31"));
        assert_eq!(march.back(3).begin_date(), "20161201");
        let week = Period::containing(PeriodKind::Weekly, day("2017-01-04"));
        assert_eq!(week.begin_date(), "20170102");
        assert_eq!(week.prev().ref_date(), "20161226-20170101");
        let day_one = Period::containing(PeriodKind::Daily, day("2024-03-01"));
        assert_eq!(day_one.back(1).begin_date(), "20240229");
    }

    #[test]
    fn ending_within_takes_every_period_that_ends_in_the_range() {
        let weeks = Period::ending_within(PeriodKind::Weekly, day("2017-03-01"), day("2017-03-26"));
        let names: Vec<_> = weeks.iter().map(|w| w.ref_date()).collect();
        assert_eq!(
            names,
            [
                "20170227-20170305",
                "20170306-20170312",
                "20170313-20170319",
                "20170320-20170326"
            ]
        );
        let months =
            Period::ending_within(PeriodKind::Monthly, day("2017-01-15"), day("2017-03-30"));
        let names: Vec<_> = months.iter().map(|m| m.ref_date()).collect();
        assert_eq!(names, ["201701", "201702"]);
        let days = Period::ending_within(PeriodKind::Daily, day("2017-03-01"), day("2017-03-03"));
        assert_eq!(days.len(), 3);
        assert!(
            Period::ending_within(PeriodKind::Daily, day("2017-03-03"), day("2017-03-01"))
                .is_empty()
        );
    }
}
