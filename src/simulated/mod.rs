//! The simulated Mini Programs and their numbers: what the simulated WeChat API
//! ([`crate::simulation`]) serves and what each report's simulated answer is made of. A leaf:
//! it knows the calendar and nothing of the exporter, so the reports may use it.

use std::collections::BTreeMap;

use chrono::{NaiveDate, Weekday};

use crate::calendar::DayKind;

pub mod model;

/// How an app answers for a period that is not published yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// An answer that holds nothing (an empty list) and no error.
    EmptyList,
    /// errcode 61503.
    Errcode,
}

/// How an app's answers write the `ref_date` of a range of days (the user portrait's 7 and
/// 30 days): WeChat's own example answers the 7-day request 20170611..20170617 with its first
/// day, `"20170611"`; others have seen the last day and the range written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefDateForm {
    /// The range's first day, as the official example (the default).
    FirstDay,
    /// The range's last day.
    LastDay,
    /// The range written out, `20170611-20170617`.
    Range,
}

/// A simulated Mini Program.
#[derive(Clone, Debug)]
pub struct SimApp {
    /// A name for configuration files.
    pub name: String,
    /// Its AppID.
    pub appid: String,
    /// Its AppSecret.
    pub secret: String,
    /// Typical daily visitors.
    pub visitors: f64,
    /// The Beijing hour at which a period is published, the day after it ends.
    pub publish_hour: u32,
    /// The answer before publication.
    pub not_ready: NotReady,
    /// The first day with data; earlier periods answer empty.
    pub since: NaiveDate,
    /// Days whose visitors are multiplied by a factor (a drop, for alert tests).
    pub dips: BTreeMap<NaiveDate, f64>,
    /// Minutes after `publish_hour` at which the app's periods are usually published.
    pub publish_minute: u32,
    /// How much the publication moves from day to day: up to this many minutes earlier or
    /// later, deterministically per day.
    pub publish_spread: u32,
    /// Publication days (the day after a period ends) when WeChat publishes this many
    /// minutes later than usual.
    pub late: BTreeMap<NaiveDate, u32>,
    /// How its portrait answers write the `ref_date` of 7 and 30 days.
    pub portrait_ref_date: RefDateForm,
    /// How its traffic follows China's working calendar.
    pub profile: Profile,
}

/// How an app's traffic follows the kind of day (China's working calendar).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Profile {
    /// A weekly rhythm only, busier at the weekend; holidays change nothing.
    #[default]
    Plain,
    /// Used at work: weekends and holidays fall to less than half, make-up workdays are
    /// workdays.
    Business,
    /// Used in leisure time: weekends are busier, holidays busier still.
    Leisure,
}

impl Profile {
    /// The visitors of a day of `kind` on `weekday`, against a Thursday's.
    pub fn factor(self, kind: DayKind, weekday: Weekday) -> f64 {
        let rhythm = match weekday {
            Weekday::Mon => 0.94,
            Weekday::Tue => 0.96,
            Weekday::Wed => 0.98,
            Weekday::Thu => 1.0,
            Weekday::Fri => 1.06,
            Weekday::Sat => 1.22,
            Weekday::Sun => 1.16,
        };
        match (self, kind) {
            (Profile::Plain, _) => rhythm,
            (Profile::Business, DayKind::Workday) => rhythm.min(1.06),
            (Profile::Business, DayKind::MakeupWorkday) => 0.95,
            (Profile::Business, DayKind::Weekend) => 0.45,
            (Profile::Business, DayKind::Holiday) => 0.35,
            (Profile::Leisure, DayKind::Workday) => rhythm.min(1.06),
            (Profile::Leisure, DayKind::MakeupWorkday) => 0.92,
            (Profile::Leisure, DayKind::Weekend) => 1.35,
            (Profile::Leisure, DayKind::Holiday) => 1.7,
        }
    }
}

impl SimApp {
    /// A simulated app with data since 2024-01-01, published at 10:00.
    pub fn new(name: &str, appid: &str, secret: &str, visitors: f64) -> SimApp {
        SimApp {
            name: name.into(),
            appid: appid.into(),
            secret: secret.into(),
            visitors,
            publish_hour: 10,
            not_ready: NotReady::EmptyList,
            since: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            dips: BTreeMap::new(),
            publish_minute: 0,
            publish_spread: 0,
            late: BTreeMap::new(),
            portrait_ref_date: RefDateForm::FirstDay,
            profile: Profile::Plain,
        }
    }
}

/// The three Mini Programs of the demo: a shop used in leisure time, a news app used at
/// work, and a ticket app on a plain weekly rhythm.
pub fn demo_apps() -> Vec<SimApp> {
    let mut shop = SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "demo-secret-shop", 52_000.0);
    shop.not_ready = NotReady::EmptyList;
    shop.profile = Profile::Leisure;
    let mut news = SimApp::new("news", "wx7c3d9e1f0a2b4c65", "demo-secret-news", 180_000.0);
    news.not_ready = NotReady::Errcode;
    news.profile = Profile::Business;
    news.portrait_ref_date = RefDateForm::Range;
    let mut tickets = SimApp::new(
        "tickets",
        "wx0f9e8d7c6b5a4f32",
        "demo-secret-tickets",
        4_800.0,
    );
    tickets.publish_hour = 15;
    tickets.portrait_ref_date = RefDateForm::LastDay;
    vec![shop, news, tickets]
}

/// `n` more simulated apps, for trying the exporter at scale: `app0000`, `app0001`…, with
/// appids `wx` + 16 hex digits of their number and secrets `demo-secret-<number>`.
pub fn generated_apps(n: usize) -> Vec<SimApp> {
    (0..n)
        .map(|i| {
            let mut app = SimApp::new(
                &format!("app{i:04}"),
                &format!("wx{:016x}", 0x00c0_ffee_0000_u64 + i as u64),
                &format!("demo-secret-{i:04}"),
                500.0 + (i % 97) as f64 * 300.0,
            );
            let forms = [
                RefDateForm::FirstDay,
                RefDateForm::Range,
                RefDateForm::LastDay,
            ];
            app.portrait_ref_date = forms[i % forms.len()];
            app
        })
        .collect()
}
