//! The reports: one module each, listed once in [`REGISTRY`].
//!
//! A report is everything the exporter knows about one of WeChat's analytics: the calls that
//! fetch a period (path and body), how an answer is read (private wire types, lenient), what
//! is kept of a period (its snapshot), the metric families it is exported as, and how the
//! simulated API answers it. Each report module implements [`ReportSpec`]; the poller,
//! `backfill`, the metrics, the landing page and the simulation iterate [`Report::all`] and
//! never name a report.
//!
//! The same steps serve the running agent and `backfill`: [`Report::calls`] lists the calls
//! of a period, [`Report::parse`] reads each answer into a piece, and [`Report::assemble`]
//! turns the pieces into what is exported, or into nothing when the first call found the
//! period unpublished.
//!
//! # Adding a report
//!
//! 1. Write `src/report/<name>.rs`: a unit struct implementing [`ReportSpec`], with its wire
//!    types, snapshot, families and simulated answer, and tests that parse WeChat's documented
//!    examples. [`visit_trend`] is the shortest model; [`retention`] shows a report that needs
//!    several calls per period.
//! 2. Add `pub mod <name>;` below and one line to [`REGISTRY`].
//!
//! Nothing else needs to know the report exists.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::config::Reports;
use crate::exposition::{Exposition, Samples};
use crate::period::{Period, PeriodKind};
use crate::simulation::model::Model;
use crate::wechat::{Call, WeChatError};

pub mod datacube;
mod erased;
pub mod retention;
pub mod visit_distribution;
pub mod visit_page;
pub mod visit_trend;

pub use erased::{AnyReport, Piece, SnapshotData};

/// Every report, in the order they are polled and exported.
static REGISTRY: &[&dyn AnyReport] = &[
    &visit_trend::VisitTrend,
    &retention::Retention,
    &visit_distribution::VisitDistribution,
    &visit_page::VisitPage,
];

/// What a report module implements: everything about one of WeChat's reports.
pub trait ReportSpec: Sync + 'static {
    /// What one call's answer holds, once read.
    type Piece: Send + Sync + 'static;
    /// What is exported of one period.
    type Snapshot: fmt::Debug + Send + Sync + 'static;

    /// The value of the `report` label.
    const NAME: &'static str;
    /// The period kinds WeChat offers the report for.
    const KINDS: &'static [PeriodKind];
    /// The families the report is exported as, in order.
    const FAMILIES: &'static [Family<Self::Snapshot>];
    /// Whether WeChat publishes this report first for each of its kinds: while it is not
    /// published, the other reports of the kind are not asked.
    const GATE: bool = false;

    /// The API path (after the base URL) of the report for `kind`.
    fn path(&self, kind: PeriodKind) -> &'static str;
    /// The calls that fetch `period`. The first decides whether the period is published.
    fn calls(&self, period: Period, reports: &Reports) -> Vec<Call>;
    /// Reads the answer to `call` (a JSON object without an errcode): `None` when it holds
    /// nothing, which means "not published" (never a zero).
    fn parse(&self, call: &Call, answer: Value) -> Result<Option<Self::Piece>, WeChatError>;
    /// What is exported of `period`, from the pieces of its calls, in the order of
    /// [`ReportSpec::calls`]; the first is always there.
    fn snapshot(
        &self,
        period: Period,
        pieces: &[Option<&Self::Piece>],
        reports: &Reports,
    ) -> Self::Snapshot;

    /// Simulation: the period a request body asks for, or why WeChat refuses it.
    fn requested(&self, kind: PeriodKind, body: &Value) -> Result<Period, Refusal>;
    /// Simulation: the answer for a published `period` of `model`'s app, at `now`.
    fn simulate(&self, model: &Model, period: Period, now: DateTime<Utc>) -> Value;
    /// Simulation: the answer that holds nothing (before publication, or before the app).
    fn simulate_empty(&self, period: Period) -> Value;
}

/// One metric family of a report: its name, its HELP and how a snapshot writes its samples.
pub struct Family<S> {
    /// The metric name.
    pub name: &'static str,
    /// What it measures; the HELP adds that the data is cached from WeChat.
    pub help: &'static str,
    /// Writes the samples of one snapshot of the given kind (the app's labels come first).
    pub samples: fn(&S, PeriodKind, &mut Samples<'_>),
}

/// The sentence that ends the HELP of every family of WeChat data.
pub const CACHED: &str = "Cached daily/weekly/monthly data from the WeChat datacube API, fetched once per published period.";

/// Why the simulated API refuses a request: WeChat's errcode and message.
pub type Refusal = (i64, &'static str);

/// A report of the registry; ordered as the registry lists them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Report(u8);

impl Report {
    /// Every report, in the order they are polled and exported.
    pub fn all() -> impl Iterator<Item = Report> {
        (0..REGISTRY.len()).map(|index| Report(index as u8))
    }

    /// The report whose `report` label is `name`.
    pub fn by_name(name: &str) -> Option<Report> {
        Report::all().find(|report| report.name() == name)
    }

    /// The report and period kind that WeChat serves at `path`.
    pub fn by_path(path: &str) -> Option<(Report, PeriodKind)> {
        Report::all().find_map(|report| {
            let kinds = report.kinds().iter();
            kinds
                .copied()
                .find(|kind| report.path(*kind) == path)
                .map(|kind| (report, kind))
        })
    }

    /// The pieces of a period, read, into what is exported; `None` when the first call found
    /// nothing (the period is not published). The one assembly the agent and `backfill`
    /// share.
    pub fn assemble(
        self,
        period: Period,
        pieces: &[Option<&Piece>],
        reports: &Reports,
    ) -> Option<Arc<dyn SnapshotData>> {
        pieces.first().copied().flatten()?;
        self.snapshot(period, pieces, reports)
    }

    /// Writes the report's families for every app, each family whole: for each family, the
    /// samples of every app and period kind held.
    pub fn render(self, apps: &[AppData], out: &mut dyn Exposition) {
        for family in 0..self.family_count() {
            let (name, help) = self.family(family);
            out.family(name, format!("{help} {CACHED}"));
            for app in apps {
                for &kind in self.kinds() {
                    if let Some(held) = app.held.get(&(self, kind)) {
                        let mut samples = Samples::new(out, &app.appid, &app.name);
                        self.write(family, &*held.snapshot, kind, &mut samples);
                    }
                }
            }
        }
    }
}

impl std::ops::Deref for Report {
    type Target = dyn AnyReport;

    fn deref(&self) -> &Self::Target {
        REGISTRY[usize::from(self.0)]
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A period held for export, and when it was fetched.
#[derive(Clone, Debug)]
pub struct Held {
    /// The period the values belong to.
    pub period: Period,
    /// When WeChat answered it.
    pub fetched_at: DateTime<Utc>,
    /// What is exported.
    pub snapshot: Arc<dyn SnapshotData>,
}

/// What the exporter holds of one app.
#[derive(Clone, Debug, Default)]
pub struct AppData {
    /// The `app` label.
    pub name: String,
    /// The `appid` label.
    pub appid: String,
    /// Whether the app's last attempt succeeded.
    pub up: bool,
    /// The period held per (report, kind).
    pub held: BTreeMap<(Report, PeriodKind), Held>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exposition::Text;
    use crate::wechat::wire;

    /// What the report named `name` reads from `body`, asked for the period `ref_date` by its
    /// first call: `None` when the answer holds nothing.
    pub fn parsed<T: Clone + 'static>(
        name: &str,
        ref_date: &str,
        body: &str,
    ) -> Result<Option<T>, WeChatError> {
        let report = Report::by_name(name).unwrap();
        let period = Period::parse_ref_date(ref_date).unwrap();
        let call = report.calls(period, &Reports::default()).remove(0);
        let Some(answer) = wire::answer(body.as_bytes())? else {
            return Ok(None);
        };
        Ok(report
            .parse(&call, answer)?
            .map(|piece| piece.downcast_ref::<T>().unwrap().clone()))
    }

    /// The families of `report` for one app (shop, wx1234567890abcdef) holding `snapshot` as
    /// its daily period.
    pub fn rendered(report: Report, snapshot: impl SnapshotData) -> String {
        let held = Held {
            period: Period::parse_ref_date("20240310").unwrap(),
            fetched_at: DateTime::from_timestamp(1_710_000_000, 0).unwrap(),
            snapshot: Arc::new(snapshot),
        };
        let app = AppData {
            name: "shop".into(),
            appid: "wx1234567890abcdef".into(),
            up: true,
            held: BTreeMap::from([((report, PeriodKind::Daily), held)]),
        };
        let mut out = String::new();
        report.render(&[app], &mut Text::new(&mut out));
        out
    }

    /// The whole conversion, as the agent and `backfill` make it: each call's body read by
    /// the report, the pieces assembled, the snapshot rendered. Calls without a body here
    /// answer empty.
    fn converted(name: &str, ref_date: &str, bodies: &[&str]) -> Option<String> {
        let report = Report::by_name(name).unwrap();
        let period = Period::parse_ref_date(ref_date).unwrap();
        let reports = Reports::default();
        let pieces: Vec<Option<Piece>> = report
            .calls(period, &reports)
            .iter()
            .enumerate()
            .map(|(number, call)| {
                let body = bodies.get(number).copied().unwrap_or("{}");
                let answer = wire::answer(body.as_bytes()).unwrap()?;
                report.parse(call, answer).unwrap()
            })
            .collect();
        let pieces: Vec<Option<&Piece>> = pieces.iter().map(Option::as_ref).collect();
        let snapshot = report.assemble(period, &pieces, &reports)?;
        let held = Held {
            period,
            fetched_at: DateTime::from_timestamp(0, 0).unwrap(),
            snapshot,
        };
        let app = AppData {
            name: "shop".into(),
            appid: "wx1".into(),
            up: true,
            held: BTreeMap::from([((report, period.kind()), held)]),
        };
        let mut out = String::new();
        report.render(&[app], &mut Text::new(&mut out));
        Some(out)
    }

    #[test]
    fn every_report_converts_its_answer_into_its_samples() {
        // (report, period, the answers of its calls in order, samples expected, absent)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let table: &[Case] = &[
            (
                "visit_trend",
                "20170306-20170312",
                &[
                    r#"{"list":[{"ref_date":"20170306-20170312","visit_uv":189405,"stay_time_session":"54.5"}]}"#,
                ],
                &[
                    r#"wechat_miniprogram_visit_uv{appid="wx1",app="shop",period="weekly"} 189405"#,
                    r#"wechat_miniprogram_stay_time_session_seconds{appid="wx1",app="shop",period="weekly"} 54.5"#,
                ],
                &[
                    "wechat_miniprogram_sessions",
                    "wechat_miniprogram_visit_depth",
                ],
            ),
            (
                "retention",
                "20170313",
                &[
                    r#"{"ref_date":"20170313","visit_uv_new":[{"key":0,"value":50},{"key":1,"value":0}],"visit_uv":[{"key":0,"value":500}]}"#,
                    r#"{"ref_date":"20170312","visit_uv_new":[{"key":0,"value":40},{"key":1,"value":10}],"visit_uv":[{"key":0,"value":400},{"key":1,"value":100}]}"#,
                ],
                &[
                    r#"wechat_miniprogram_retention_uv{appid="wx1",app="shop",period="daily",cohort="new",lag="0"} 50"#,
                    r#"wechat_miniprogram_retention_uv{appid="wx1",app="shop",period="daily",cohort="active",lag="1"} 100"#,
                    r#"wechat_miniprogram_retention_ratio{appid="wx1",app="shop",period="daily",cohort="new",lag="1"} 0.25"#,
                    r#"wechat_miniprogram_retention_cohort_timestamp_seconds{appid="wx1",app="shop",period="daily",lag="1"} 1489248000"#,
                ],
                // Lag 1 of the newest cohort (sent as 0) is not lag 1; older cohorts answered empty.
                &[r#"lag="2""#, "cohort=\"new\",lag=\"1\"} 0\n"],
            ),
            (
                "visit_distribution",
                "20170313",
                &[
                    r#"{"ref_date":"20170313","list":[{"index":"access_source_session_cnt","item_list":[{"key":3,"value":7}]},{"index":"access_depth_info","item_list":[{"key":7,"value":2}]}]}"#,
                ],
                &[
                    r#"wechat_miniprogram_access_source_sessions{appid="wx1",app="shop",key="3",source="chat"} 7"#,
                    r#"wechat_miniprogram_visit_depth_distribution{appid="wx1",app="shop",key="7",bucket=">10"} 2"#,
                ],
                &[
                    "wechat_miniprogram_access_source_uv",
                    "wechat_miniprogram_stay_time_distribution",
                ],
            ),
            (
                "visit_page",
                "20170313",
                &[
                    r#"{"ref_date":"20170313","list":[{"page_path":"pages/a","page_visit_pv":3,"page_share_uv":0}]}"#,
                ],
                &[
                    r#"wechat_miniprogram_page_visit_pv{appid="wx1",app="shop",page="pages/a"} 3"#,
                    r#"wechat_miniprogram_page_share_uv{appid="wx1",app="shop",page="pages/a"} 0"#,
                ],
                &["wechat_miniprogram_page_visit_uv"],
            ),
        ];
        let mut covered = std::collections::BTreeSet::new();
        for (name, ref_date, bodies, expected, absent) in table {
            let text = converted(name, ref_date, bodies).unwrap();
            for line in *expected {
                assert!(
                    text.lines().any(|l| l == *line),
                    "{name}: no {line} in\n{text}"
                );
            }
            for needle in *absent {
                assert!(!text.contains(needle), "{name}: {needle} in\n{text}");
            }
            // An answer that holds nothing for the first call: not published, nothing exported.
            assert_eq!(converted(name, ref_date, &[]), None, "{name}");
            covered.insert(*name);
        }
        let every: std::collections::BTreeSet<&str> = Report::all().map(|r| r.name()).collect();
        assert_eq!(
            covered, every,
            "every report of the registry is in the table"
        );
    }

    #[test]
    fn every_path_maps_back_to_its_report_and_names_are_unique() {
        let mut names = std::collections::BTreeSet::new();
        for report in Report::all() {
            assert!(names.insert(report.name()), "{report} twice");
            assert_eq!(Report::by_name(report.name()), Some(report));
            for kind in report.kinds() {
                assert_eq!(Report::by_path(report.path(*kind)), Some((report, *kind)));
            }
        }
        let page = Report::by_name("visit_page").unwrap();
        assert_eq!(page.kinds(), [PeriodKind::Daily]);
        assert_eq!(Report::by_path("datacube/nothing"), None);
    }
}
