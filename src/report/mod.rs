//! The reports: one module each, listed once in `REGISTRY`.
//!
//! A report is everything the exporter knows about one of WeChat's analytics: the calls that
//! fetch a period (path and body), how an answer is read (private wire types, lenient), what
//! is kept of a period (its snapshot), the metric families it is exported as, and how the
//! simulated API answers it. Each report module implements [`ReportSpec`]; the poller,
//! `backfill`, the metrics, the landing page and the simulation iterate [`Report::all`] and
//! never name a report.
//!
//! The same steps serve the running agent, the state on disk, `backfill` and the tests:
//! [`Report::calls`] lists the calls of a period, [`Pieces::read`] (from [`Report::pieces`])
//! reads each answer into the report's own piece, and [`Pieces::assemble`] turns the pieces
//! into the [`Snapshot`] exported, or into nothing when the first call found the period
//! unpublished. Outside this folder a report's types never appear.
//!
//! # Adding a report
//!
//! 1. Write `src/report/<name>.rs`: a unit struct implementing [`ReportSpec`], with its wire
//!    types, snapshot, families and simulated answer, and tests that parse WeChat's documented
//!    examples. [`visit_trend`] is the shortest model; [`retention`] shows a report that needs
//!    several calls per period.
//! 2. Add `pub mod <name>;` below and one line to `REGISTRY`.
//!
//! Nothing else needs to know the report exists.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::exposition::{Exposition, Samples};
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{Refusal, Request};
use crate::wechat::wire::Answer;
use crate::wechat::{Call, WeChatError};

pub mod daily_summary;
pub mod datacube;
mod erased;
pub mod js_errors;
pub mod launch_time;
pub mod performance;
pub mod quota;
pub mod retention;
mod settings;
pub mod span;
pub mod user_portrait;
pub mod visit_distribution;
pub mod visit_page;
pub mod visit_trend;

use erased::ErasedReport;
pub use erased::{typed as typed_snapshot, Pieces, Snapshot};
pub use settings::{Overrides, ReportSet, Settings};

/// Every report, in the order they are polled and exported.
static REGISTRY: &[&dyn ErasedReport] = &[
    &visit_trend::VisitTrend,
    &retention::Retention,
    &visit_distribution::VisitDistribution,
    &visit_page::VisitPage,
    &daily_summary::DailySummary,
    &user_portrait::UserPortrait,
    &launch_time::LaunchTime,
    &performance::Performance,
    &js_errors::JsErrors,
    &quota::Quota,
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
    /// Whether the report is polled only when listed in `reports.enabled` (it is left out of
    /// the default list).
    const OPT_IN: bool = false;
    /// What tells that a period is published.
    const PUBLICATION: Publication = Publication::First;
    /// Whether WeChat answers past periods, for `backfill`.
    const HISTORY: bool = true;

    /// The API path (after the base URL) of the report for `kind`.
    fn path(&self, kind: PeriodKind) -> &'static str;
    /// The calls that fetch `period`. The first decides whether the period is published.
    fn calls(&self, period: Period, reports: &Settings) -> Vec<Call>;
    /// Reads the answer to `call` (a JSON object without an errcode): `None` when it holds
    /// nothing, which means "not published" (never a zero).
    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Self::Piece>, WeChatError>;
    /// What is exported of `period`, from the pieces of its calls, in the order of
    /// [`ReportSpec::calls`]; the first is always there.
    fn snapshot(
        &self,
        period: Period,
        pieces: &[Option<&Self::Piece>],
        reports: &Settings,
    ) -> Self::Snapshot;

    /// How often the current period is fetched again, for a report that is not published
    /// once per period (the API quota); `None` for the others.
    fn refresh(&self, _reports: &Settings) -> Option<std::time::Duration> {
        None
    }

    /// The most series one held period of `kind` exports under `reports` (what
    /// `check-config --cost` counts): by default one per family.
    fn max_series(&self, _kind: PeriodKind, _reports: &Settings) -> usize {
        Self::FAMILIES.len()
    }

    /// The calls that fetch every period of `periods` (of one kind, oldest first) for
    /// `backfill`; by default the calls of each period. A report whose API answers ranges
    /// asks for them in as few calls as it can; one without history asks nothing.
    fn history_calls(&self, periods: &[Period], reports: &Settings) -> Vec<Call> {
        periods
            .iter()
            .flat_map(|period| self.calls(*period, reports))
            .collect()
    }

    /// Reads the answer to one of [`ReportSpec::history_calls`] into the pieces it holds, each
    /// under the call of [`ReportSpec::calls`] it stands for; by default the one piece of the
    /// call itself.
    fn parse_history(
        &self,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<Vec<(Call, Self::Piece)>, WeChatError> {
        let piece = self.parse(call, answer)?;
        Ok(piece
            .map(|piece| (call.clone(), piece))
            .into_iter()
            .collect())
    }

    /// Simulation: WeChat's answer to a call to the report's path, or its refusal (an
    /// errcode), once the token is checked.
    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal>;
}

/// What tells that a period of a report is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publication {
    /// The answer to the first call: without it, the period is not published and the other
    /// calls are not made.
    First,
    /// An answer to any call (the calls fetch parts that WeChat may or may not have).
    AnyCall,
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

    /// An empty store of the report's pieces, to read answers into and assemble periods
    /// from.
    pub fn pieces(self) -> Pieces {
        self.spec().pieces()
    }

    /// The newest period of `kind` the report may hold at `now`: the latest completed one,
    /// or, for a report fetched again during its period (the quota), the current one.
    pub fn newest(self, kind: PeriodKind, now: DateTime<Utc>, settings: &Settings) -> Period {
        newest(kind, now, self.refresh(settings).is_some())
    }

    /// Whether the report is polled with these settings.
    pub fn is_enabled(self, reports: &Settings) -> bool {
        reports.is_enabled(self)
    }

    /// The report's bit in a [`ReportSet`].
    fn bit(self) -> u32 {
        1 << self.0
    }

    /// Whether `backfill` fetches the report with these settings.
    pub fn is_backfilled(self, reports: &Settings) -> bool {
        self.is_enabled(reports) && self.has_history()
    }

    /// Writes the report's families for every app, each family whole: for each family, the
    /// samples of every app and period kind held.
    pub fn render(self, apps: &[&AppData], out: &mut dyn Exposition) {
        let spec = self.spec();
        for family in 0..spec.family_count() {
            let (name, help) = spec.family(family);
            out.family(name, format!("{help} {CACHED}"));
            for app in apps {
                for &kind in self.kinds() {
                    if let Some(held) = app.held.get(&(self, kind)) {
                        let mut samples = Samples::new(out, &app.appid, &app.name);
                        held.snapshot.write(family, kind, &mut samples);
                    }
                }
            }
        }
    }

    fn spec(self) -> &'static dyn ErasedReport {
        REGISTRY[usize::from(self.0)]
    }

    /// The `report` label.
    pub fn name(self) -> &'static str {
        self.spec().name()
    }

    /// The period kinds WeChat offers the report for.
    pub fn kinds(self) -> &'static [PeriodKind] {
        self.spec().kinds()
    }

    /// Whether the report goes first for its kinds ([`ReportSpec::GATE`]).
    pub fn gates(self) -> bool {
        self.spec().gates()
    }

    /// Whether the report is left out of `reports.enabled` by default.
    pub fn opt_in(self) -> bool {
        self.spec().opt_in()
    }

    /// What tells that a period is published.
    pub fn publication(self) -> Publication {
        self.spec().publication()
    }

    /// Whether WeChat answers past periods, for `backfill`.
    pub fn has_history(self) -> bool {
        self.spec().has_history()
    }

    /// How often the current period is fetched again, if it is ([`ReportSpec::refresh`]).
    pub fn refresh(self, settings: &Settings) -> Option<std::time::Duration> {
        self.spec().refresh(settings)
    }

    /// The most series one held period of `kind` exports ([`ReportSpec::max_series`]).
    pub fn max_series(self, kind: PeriodKind, settings: &Settings) -> usize {
        self.spec().max_series(kind, settings)
    }

    /// The calls of a backfill of `periods` ([`ReportSpec::history_calls`]).
    pub fn history_calls(self, periods: &[Period], settings: &Settings) -> Vec<Call> {
        self.spec().history_calls(periods, settings)
    }

    /// The API path (after the base URL) for `kind`.
    pub fn path(self, kind: PeriodKind) -> &'static str {
        self.spec().path(kind)
    }

    /// The calls that fetch `period`; the first decides whether it is published.
    pub fn calls(self, period: Period, settings: &Settings) -> Vec<Call> {
        self.spec().calls(period, settings)
    }

    /// Simulation: WeChat's answer to a call to the report's path, or its refusal.
    pub fn simulate(self, request: &Request<'_>) -> Result<Value, Refusal> {
        self.spec().simulate(request)
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

/// The newest period of `kind` a report may hold at `now`: the latest completed one, or the
/// current one for a report fetched again while its period lasts (`refreshes`). The one
/// place that decides it, for the schedule and for the state read back.
pub fn newest(kind: PeriodKind, now: DateTime<Utc>, refreshes: bool) -> Period {
    if refreshes {
        Period::containing(kind, crate::period::beijing_date(now))
    } else {
        Period::latest_completed(kind, now)
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
    pub snapshot: Arc<dyn Snapshot>,
}

/// How a job (one report and period kind of an app) stands: the state set
/// `wechat_miniprogram_report_status` exports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// The newest period is held.
    Ok,
    /// The newest period is not published yet, or not asked yet.
    #[default]
    Waiting,
    /// The last attempt ended in an error.
    Failing,
    /// WeChat refuses the report's API to this app (48001, 61007, 76022).
    Unauthorized,
}

impl State {
    /// Every state, in the order they are exported.
    pub const ALL: [State; 4] = [
        State::Ok,
        State::Waiting,
        State::Failing,
        State::Unauthorized,
    ];

    /// The `status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Waiting => "waiting",
            State::Failing => "failing",
            State::Unauthorized => "unauthorized",
        }
    }
}

/// What the exporter holds of one app.
#[derive(Clone, Debug, Default)]
pub struct AppData {
    /// The `app` label.
    pub name: String,
    /// The `appid` label.
    pub appid: String,
    /// The app's own labels (`[apps.NAME.labels]`), exported on `wechat_miniprogram_app_info`.
    pub labels: Vec<(String, String)>,
    /// Whether the app's access token and its visit trend (the gate) can be had.
    pub up: bool,
    /// The period held per (report, kind).
    pub held: BTreeMap<(Report, PeriodKind), Held>,
    /// How each job stands.
    pub states: BTreeMap<(Report, PeriodKind), State>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exposition::Text;
    use crate::wechat::wire;

    /// What `report` reads from `body`, asked for the period `ref_date` by its first call:
    /// `None` when the answer holds nothing.
    pub fn parsed<R: ReportSpec>(
        report: &R,
        ref_date: &str,
        body: &str,
    ) -> Result<Option<R::Piece>, WeChatError> {
        let period = Period::parse_ref_date(ref_date).unwrap();
        let call = report.calls(period, &Settings::default()).remove(0);
        let Some(answer) = wire::answer(body.as_bytes())? else {
            return Ok(None);
        };
        report.parse(&call, answer)
    }

    /// A report's parsers fed a JSON value, as the text WeChat would send for it.
    pub trait ParseJson: ReportSpec {
        /// [`ReportSpec::parse`] of `value` sent as text.
        fn parse_json(
            &self,
            call: &Call,
            value: Value,
        ) -> Result<Option<Self::Piece>, WeChatError> {
            let text = value.to_string();
            let answer = wire::answer(text.as_bytes())?.expect("an answer, not 61503");
            self.parse(call, answer)
        }

        /// [`ReportSpec::parse_history`] of `value` sent as text.
        fn parse_history_json(
            &self,
            call: &Call,
            value: Value,
        ) -> Result<Vec<(Call, Self::Piece)>, WeChatError> {
            let text = value.to_string();
            let answer = wire::answer(text.as_bytes())?.expect("an answer, not 61503");
            self.parse_history(call, answer)
        }
    }

    impl<R: ReportSpec> ParseJson for R {}

    /// The families of `R` for one app (shop, wx1234567890abcdef) holding `snapshot` as its
    /// daily period.
    pub fn rendered<R: ReportSpec>(_: &R, snapshot: R::Snapshot) -> String {
        let report = Report::by_name(R::NAME).unwrap();
        let held = Held {
            period: Period::parse_ref_date("20240310").unwrap(),
            fetched_at: DateTime::from_timestamp(1_710_000_000, 0).unwrap(),
            snapshot: erased::typed::<R>(snapshot),
        };
        let app = AppData {
            name: "shop".into(),
            appid: "wx1234567890abcdef".into(),
            up: true,
            held: BTreeMap::from([((report, PeriodKind::Daily), held)]),
            ..Default::default()
        };
        let mut out = String::new();
        report.render(&[&app], &mut Text::new(&mut out));
        out
    }

    /// The whole conversion, as the agent and `backfill` make it: each call's body read by
    /// the report, the pieces assembled, the snapshot rendered. Calls without a body here
    /// answer empty.
    fn converted(name: &str, ref_date: &str, bodies: &[&str]) -> Option<String> {
        let report = Report::by_name(name).unwrap();
        let period = Period::parse_ref_date(ref_date).unwrap();
        let reports = Settings::default();
        let mut pieces = report.pieces();
        for (number, call) in report.calls(period, &reports).iter().enumerate() {
            let body = bodies.get(number).copied().unwrap_or("{}");
            if let Some(answer) = wire::answer(body.as_bytes()).unwrap() {
                pieces.read(0, call, answer).unwrap();
            }
        }
        let snapshot = pieces.assemble(0, period, &reports)?;
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
            ..Default::default()
        };
        let mut out = String::new();
        report.render(&[&app], &mut Text::new(&mut out));
        Some(out)
    }

    /// (report, period, the answers of its calls in order, samples expected, absent)
    type Case = (
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );

    /// One case per report of the registry: its answers converted into its samples.
    const CASES: &[Case] = &[
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
        (
            "daily_summary",
            "20170313",
            &[r#"{"list":[{"ref_date":"20170313","visit_total":391,"share_pv":572}]}"#],
            &[
                r#"wechat_miniprogram_cumulative_users{appid="wx1",app="shop",period="daily"} 391"#,
                r#"wechat_miniprogram_share_pv{appid="wx1",app="shop",period="daily"} 572"#,
            ],
            &["wechat_miniprogram_share_uv"],
        ),
        (
            "user_portrait",
            "20170611",
            &[
                r#"{"ref_date":"20170611","visit_uv_new":{"genders":[{"id":1,"name":"男","value":2}]},"visit_uv":{}}"#,
                "{}",
                r#"{"ref_date":"20170513-20170611","visit_uv":{"devices":[{"name":"OPPO R9","value":61}]}}"#,
            ],
            &[
                r#"wechat_miniprogram_portrait_uv{appid="wx1",app="shop",range="1d",cohort="new",dimension="gender",name="男"} 2"#,
                r#"wechat_miniprogram_portrait_uv{appid="wx1",app="shop",range="30d",cohort="active",dimension="device",name="OPPO R9"} 61"#,
            ],
            &[r#"range="7d""#],
        ),
        (
            "launch_time",
            "20191029",
            &[
                r#"{"default_time_data":"{\"list\":[{\"ref_date\":\"20191029\",\"cost_time_type\":1,\"cost_time\":2533}]}"}"#,
                r#"{"default_time_data":""}"#,
                r#"{"default_time_data":"{\"list\":[{\"ref_date\":\"20191029\",\"cost_time_type\":3,\"cost_time\":1100}]}"}"#,
            ],
            &[
                r#"wechat_miniprogram_launch_time_seconds{appid="wx1",app="shop",phase="total"} 2.533"#,
                r#"wechat_miniprogram_launch_time_seconds{appid="wx1",app="shop",phase="first_render"} 1.1"#,
            ],
            &[r#"phase="download""#],
        ),
        (
            "performance",
            "20210103",
            &[
                "{}",
                "{}",
                "{}",
                r#"{"errcode":0,"data":{"body":{"tables":[{"id":"memory","zh":"内存均值","lines":[{"fields":[{"refdate":"20210103","value":"314"}]}]}],"count":1}}}"#,
            ],
            &[
                r#"wechat_miniprogram_performance{appid="wx1",app="shop",module="memory",indicator="memory"} 314"#,
            ],
            &[r#"module="open_rate""#],
        ),
        (
            "js_errors",
            "20210125",
            &[
                r#"{"success":true,"data":[{"errorMsgMd5":"a8d4ea4b2e2d40a1","errorMsg":"boom","uv":1,"pv":2}],"totalCount":739,"errcode":0}"#,
                r#"{"success":true,"data":[],"totalCount":0,"errcode":0}"#,
            ],
            &[
                r#"wechat_miniprogram_js_error_groups{appid="wx1",app="shop",error_type="app"} 739"#,
                r#"wechat_miniprogram_js_error_groups{appid="wx1",app="shop",error_type="plugin"} 0"#,
                r#"wechat_miniprogram_js_error_pv{appid="wx1",app="shop",error_type="app",error_id="a8d4ea4b2e2d"} 2"#,
                r#"wechat_miniprogram_js_error_info{appid="wx1",app="shop",error_type="app",error_id="a8d4ea4b2e2d",message="boom"} 1"#,
            ],
            &[r#"error_type="framework""#],
        ),
        (
            "quota",
            "20240605",
            &[r#"{"errcode":0,"quota":{"daily_limit":5000,"used":7,"remain":4993}}"#],
            &[
                r#"wechat_miniprogram_api_quota_daily_limit{appid="wx1",app="shop",endpoint="getweanalysisappiddailyvisittrend"} 5000"#,
                r#"wechat_miniprogram_api_quota_remaining{appid="wx1",app="shop",endpoint="getweanalysisappiddailyvisittrend"} 4993"#,
            ],
            &[r#"endpoint="getweanalysisappidweeklyvisittrend""#],
        ),
    ];

    #[test]
    fn every_report_converts_its_answer_into_its_samples() {
        let mut covered = std::collections::BTreeSet::new();
        for (name, ref_date, bodies, expected, absent) in CASES {
            let text =
                converted(name, ref_date, bodies).unwrap_or_else(|| panic!("{name}: nothing"));
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
