//! China's working calendar: which days are public holidays and which weekend days are
//! make-up workdays (调休上班), as the State Council publishes them each year. Built in for
//! 2024 to 2026; `calendar.file` adds or overrides days (a new year the day it is published).
//!
//! A day is a `holiday` (with the holiday's name), a `makeup_workday`, a `weekend` or a
//! `workday`. The drop alert compares like with like through the family this kind is
//! exported as; the simulation shapes its traffic by it.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::Deserialize;

/// What kind of day a date is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DayKind {
    /// Monday to Friday, not a holiday.
    Workday,
    /// Saturday or Sunday, not a make-up workday nor a holiday.
    Weekend,
    /// A day off of a public holiday, weekend days within it included.
    Holiday,
    /// A Saturday or Sunday declared a working day.
    MakeupWorkday,
}

impl DayKind {
    /// Every kind, in the order they are exported.
    pub const ALL: [DayKind; 4] = [
        DayKind::Workday,
        DayKind::Weekend,
        DayKind::Holiday,
        DayKind::MakeupWorkday,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DayKind::Workday => "workday",
            DayKind::Weekend => "weekend",
            DayKind::Holiday => "holiday",
            DayKind::MakeupWorkday => "makeup_workday",
        }
    }
}

impl fmt::Display for DayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A day of the calendar that is not what its weekday says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Special {
    /// A holiday or a make-up workday.
    pub kind: DayKind,
    /// The holiday's name (for a make-up workday, the holiday it makes up for).
    pub name: String,
}

/// A date as written in the notices: (year, month, day).
type Ymd = (i32, u32, u32);

/// The built-in years, from the State Council's notices ("国务院办公厅关于YYYY年部分节假日
/// 安排的通知", 2023-10-25, 2024-11-12 and 2025-11-04): (name, first day off, last day off,
/// make-up workdays).
const BUILT_IN: &[(&str, Ymd, Ymd, &[Ymd])] = &[
    ("元旦", (2024, 1, 1), (2024, 1, 1), &[]),
    (
        "春节",
        (2024, 2, 10),
        (2024, 2, 17),
        &[(2024, 2, 4), (2024, 2, 18)],
    ),
    ("清明节", (2024, 4, 4), (2024, 4, 6), &[(2024, 4, 7)]),
    (
        "劳动节",
        (2024, 5, 1),
        (2024, 5, 5),
        &[(2024, 4, 28), (2024, 5, 11)],
    ),
    ("端午节", (2024, 6, 8), (2024, 6, 10), &[]),
    ("中秋节", (2024, 9, 15), (2024, 9, 17), &[(2024, 9, 14)]),
    (
        "国庆节",
        (2024, 10, 1),
        (2024, 10, 7),
        &[(2024, 9, 29), (2024, 10, 12)],
    ),
    ("元旦", (2025, 1, 1), (2025, 1, 1), &[]),
    (
        "春节",
        (2025, 1, 28),
        (2025, 2, 4),
        &[(2025, 1, 26), (2025, 2, 8)],
    ),
    ("清明节", (2025, 4, 4), (2025, 4, 6), &[]),
    ("劳动节", (2025, 5, 1), (2025, 5, 5), &[(2025, 4, 27)]),
    ("端午节", (2025, 5, 31), (2025, 6, 2), &[]),
    (
        "国庆节",
        (2025, 10, 1),
        (2025, 10, 8),
        &[(2025, 9, 28), (2025, 10, 11)],
    ),
    ("元旦", (2026, 1, 1), (2026, 1, 3), &[(2026, 1, 4)]),
    (
        "春节",
        (2026, 2, 15),
        (2026, 2, 23),
        &[(2026, 2, 14), (2026, 2, 28)],
    ),
    ("清明节", (2026, 4, 4), (2026, 4, 6), &[]),
    ("劳动节", (2026, 5, 1), (2026, 5, 5), &[(2026, 5, 9)]),
    ("端午节", (2026, 6, 19), (2026, 6, 21), &[]),
    ("中秋节", (2026, 9, 25), (2026, 9, 27), &[]),
    (
        "国庆节",
        (2026, 10, 1),
        (2026, 10, 7),
        &[(2026, 9, 20), (2026, 10, 10)],
    ),
];

/// The years whose arrangement is built in.
pub const BUILT_IN_YEARS: [i32; 3] = [2024, 2025, 2026];

/// The most days a calendar file may list.
pub const MAX_DAYS: usize = 10_000;

/// The calendar: the built-in years, with the days of `calendar.file` over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calendar {
    special: BTreeMap<NaiveDate, Special>,
    years: Vec<i32>,
}

impl Default for Calendar {
    /// The built-in years.
    fn default() -> Calendar {
        let mut special = BTreeMap::new();
        let date = |(y, m, d): (i32, u32, u32)| NaiveDate::from_ymd_opt(y, m, d).expect("a date");
        for (name, first, last, makeups) in BUILT_IN {
            let mut day = date(*first);
            while day <= date(*last) {
                special.insert(
                    day,
                    Special {
                        kind: DayKind::Holiday,
                        name: name.to_string(),
                    },
                );
                day = day.succ_opt().expect("a next day");
            }
            for makeup in *makeups {
                let special_day = Special {
                    kind: DayKind::MakeupWorkday,
                    name: name.to_string(),
                };
                special.insert(date(*makeup), special_day);
            }
        }
        Calendar {
            special,
            years: BUILT_IN_YEARS.to_vec(),
        }
    }
}

/// One day of a calendar file: `{date: 2027-01-01, kind: holiday, name: 元旦}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDay {
    date: String,
    kind: String,
    #[serde(default)]
    name: String,
}

impl Calendar {
    /// What kind of day `date` is, and the holiday's name if it is one (or is made up for).
    pub fn day(&self, date: NaiveDate) -> (DayKind, Option<&str>) {
        match self.special.get(&date) {
            Some(special) => (special.kind, Some(special.name.as_str())),
            None if matches!(date.weekday(), Weekday::Sat | Weekday::Sun) => {
                (DayKind::Weekend, None)
            }
            None => (DayKind::Workday, None),
        }
    }

    /// Whether the arrangement of `year` is known (built in, or a day of it in the file).
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains(&year)
    }

    /// The years known.
    pub fn years(&self) -> &[i32] {
        &self.years
    }

    /// The built-in calendar with the days of a calendar file (`text`, YAML or JSON: a list
    /// of `{date, kind: holiday|workday, name}`) over it; every bad entry is a problem naming
    /// its number. A year of which the file lists a day counts as covered.
    pub fn with_file(text: &str) -> Result<Calendar, Vec<String>> {
        let listed: Vec<FileDay> = serde_yaml::from_str(text)
            .map_err(|error| vec![format!("not a list of {{date, kind, name}}: {error}")])?;
        if listed.len() > MAX_DAYS {
            return Err(vec![format!(
                "{} days; a calendar file lists at most {MAX_DAYS}",
                listed.len()
            )]);
        }
        let mut calendar = Calendar::default();
        let mut problems = Vec::new();
        for (number, day) in listed.into_iter().enumerate() {
            let Ok(date) = NaiveDate::parse_from_str(day.date.trim(), "%Y-%m-%d") else {
                problems.push(format!(
                    "day {}: date {:?} is not YYYY-MM-DD",
                    number + 1,
                    day.date
                ));
                continue;
            };
            let kind = match day.kind.trim() {
                "holiday" => DayKind::Holiday,
                "workday" => DayKind::MakeupWorkday,
                other => {
                    problems.push(format!(
                        "day {} ({date}): kind {other:?} is neither \"holiday\" nor \"workday\"",
                        number + 1
                    ));
                    continue;
                }
            };
            let name: String = day.name.trim().chars().take(64).collect();
            calendar.special.insert(date, Special { kind, name });
            if !calendar.years.contains(&date.year()) {
                calendar.years.push(date.year());
            }
        }
        calendar.years.sort();
        if problems.is_empty() {
            Ok(calendar)
        } else {
            Err(problems)
        }
    }

    /// The years needed on `today` ([`Calendar::years_needed`]) that the calendar does not
    /// cover.
    pub fn missing_years(&self, today: NaiveDate) -> Vec<i32> {
        Calendar::years_needed(today)
            .into_iter()
            .filter(|year| !self.covers(*year))
            .collect()
    }

    /// Logs a warning for each year needed on `today` that the calendar does not cover.
    pub fn warn_if_uncovered(&self, today: NaiveDate) {
        for year in self.missing_years(today) {
            tracing::warn!(year, known = ?self.years, "the calendar does not know the public holidays of {year}: the drop alert compares its holidays with ordinary days; add the year's days with calendar.file (see the README, \"Alerts\")");
        }
    }

    /// The years a running exporter should know on `today`: this year, and from December the
    /// next.
    pub fn years_needed(today: NaiveDate) -> Vec<i32> {
        if today.month() == 12 {
            vec![today.year(), today.year() + 1]
        } else {
            vec![today.year()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn every_day_has_the_kind_the_state_council_gave_it() {
        let calendar = Calendar::default();
        let table = [
            ("2025-01-27", DayKind::Workday, None),
            ("2025-01-26", DayKind::MakeupWorkday, Some("春节")),
            ("2025-01-28", DayKind::Holiday, Some("春节")),
            ("2025-02-01", DayKind::Holiday, Some("春节")),
            ("2025-02-04", DayKind::Holiday, Some("春节")),
            ("2025-02-08", DayKind::MakeupWorkday, Some("春节")),
            ("2025-02-09", DayKind::Weekend, None),
            ("2025-02-15", DayKind::Weekend, None),
            ("2025-10-08", DayKind::Holiday, Some("国庆节")),
            ("2025-10-11", DayKind::MakeupWorkday, Some("国庆节")),
            ("2024-06-10", DayKind::Holiday, Some("端午节")),
            ("2026-01-04", DayKind::MakeupWorkday, Some("元旦")),
            ("2026-02-23", DayKind::Holiday, Some("春节")),
            ("2026-09-20", DayKind::MakeupWorkday, Some("国庆节")),
            ("2027-01-01", DayKind::Workday, None),
        ];
        for (day, kind, name) in table {
            assert_eq!(calendar.day(date(day)), (kind, name), "{day}");
        }
        // The numbers of days off each year: 2024 has 28 (with weekends), 2025 and 2026 more.
        let days_off = |year: i32| {
            calendar
                .special
                .iter()
                .filter(|(day, special)| day.year() == year && special.kind == DayKind::Holiday)
                .count()
        };
        assert_eq!(days_off(2024), 1 + 8 + 3 + 5 + 3 + 3 + 7);
        assert_eq!(days_off(2025), 1 + 8 + 3 + 5 + 3 + 8);
        assert_eq!(days_off(2026), 3 + 9 + 3 + 5 + 3 + 3 + 7);
        assert!(calendar.covers(2026) && !calendar.covers(2027));
    }

    #[test]
    fn a_calendar_file_adds_a_year_and_names_every_bad_day() {
        let file = "- {date: 2027-01-01, kind: holiday, name: 元旦}\n- {date: 2027-02-06, kind: workday, name: 春节}\n- {date: 2026-12-31, kind: holiday, name: company day}\n";
        let calendar = Calendar::with_file(file).unwrap();
        assert!(calendar.covers(2027));
        assert_eq!(
            calendar.day(date("2027-01-01")),
            (DayKind::Holiday, Some("元旦"))
        );
        assert_eq!(
            calendar.day(date("2027-02-06")),
            (DayKind::MakeupWorkday, Some("春节"))
        );
        assert_eq!(calendar.day(date("2026-12-31")).0, DayKind::Holiday);
        assert_eq!(
            calendar.day(date("2025-01-28")).0,
            DayKind::Holiday,
            "built in still"
        );
        let json = r#"[{"date": "2027-10-01", "kind": "holiday", "name": "国庆节"}]"#;
        assert!(Calendar::with_file(json).unwrap().covers(2027));
        let problems = Calendar::with_file(
            "- {date: 2027-13-01, kind: holiday}\n- {date: 2027-01-02, kind: party}\n",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("day 1: date"), "{problems:?}");
        assert!(
            problems[1].starts_with("day 2 (2027-01-02): kind \"party\""),
            "{problems:?}"
        );
        assert!(Calendar::with_file("not: a list").is_err());
        assert_eq!(Calendar::years_needed(date("2026-12-02")), [2026, 2027]);
        assert_eq!(Calendar::years_needed(date("2026-06-02")), [2026]);
    }
}
