//! The visit trend (`getweanalysisapp{daily,weekly,monthly}visittrend`): opens, visits,
//! visitors, new visitors, stay time and depth of a day, natural week or natural month.
//!
//! It is published first: while a kind's trend is not out, the other reports of that kind
//! are not asked. An empty `list` means "not published yet".

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{datacube, Family, ReportSpec};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{round4, Model, Refusal, Request};
use crate::wechat::wire::{check_ref_date, Answer, Num};
use crate::wechat::{Call, WeChatError};

/// The visit trend report.
pub struct VisitTrend;

/// A visit trend for one period. Any field WeChat left out is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trend {
    /// `session_cnt`: opens.
    pub session_cnt: Option<f64>,
    /// `visit_pv`: visits.
    pub visit_pv: Option<f64>,
    /// `visit_uv`: visitors (de-duplicated over the period).
    pub visit_uv: Option<f64>,
    /// `visit_uv_new`: new visitors.
    pub visit_uv_new: Option<f64>,
    /// `stay_time_uv`: average stay per visitor, seconds.
    pub stay_time_uv: Option<f64>,
    /// `stay_time_session`: average stay per open, seconds.
    pub stay_time_session: Option<f64>,
    /// `visit_depth`: average pages per visit.
    pub visit_depth: Option<f64>,
}

#[derive(Deserialize)]
struct TrendItem {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    session_cnt: Num,
    #[serde(default)]
    visit_pv: Num,
    #[serde(default)]
    visit_uv: Num,
    #[serde(default)]
    visit_uv_new: Num,
    #[serde(default)]
    stay_time_uv: Num,
    #[serde(default)]
    stay_time_session: Num,
    #[serde(default)]
    visit_depth: Num,
}

#[derive(Deserialize)]
struct TrendAnswer {
    #[serde(default)]
    list: Vec<TrendItem>,
}

/// One family per field, each with `period`.
macro_rules! field {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            samples: |trend: &Trend, kind, out: &mut Samples<'_>| {
                if let Some(value) = trend.$field {
                    out.sample(&[("period", kind.as_str())], value);
                }
            },
        }
    };
}

impl ReportSpec for VisitTrend {
    type Piece = Trend;
    type Snapshot = Trend;

    const NAME: &'static str = "visit_trend";
    const KINDS: &'static [PeriodKind] = &PeriodKind::ALL;
    const GATE: bool = true;
    const FAMILIES: &'static [Family<Trend>] = &[
        field!(
            "wechat_miniprogram_sessions",
            "Opens of the Mini Program (session_cnt) in the period.",
            session_cnt
        ),
        field!(
            "wechat_miniprogram_visit_pv",
            "Visits (visit_pv) in the period.",
            visit_pv
        ),
        field!(
            "wechat_miniprogram_visit_uv",
            "Visitors (visit_uv), de-duplicated over the period.",
            visit_uv
        ),
        field!(
            "wechat_miniprogram_visit_uv_new",
            "New visitors (visit_uv_new) in the period.",
            visit_uv_new
        ),
        field!(
            "wechat_miniprogram_stay_time_uv_seconds",
            "Average stay per visitor (stay_time_uv) in the period.",
            stay_time_uv
        ),
        field!(
            "wechat_miniprogram_stay_time_session_seconds",
            "Average stay per open (stay_time_session) in the period.",
            stay_time_session
        ),
        field!(
            "wechat_miniprogram_visit_depth",
            "Average pages per visit (visit_depth) in the period.",
            visit_depth
        ),
    ];

    fn path(&self, kind: PeriodKind) -> &'static str {
        match kind {
            PeriodKind::Daily => "datacube/getweanalysisappiddailyvisittrend",
            PeriodKind::Weekly => "datacube/getweanalysisappidweeklyvisittrend",
            PeriodKind::Monthly => "datacube/getweanalysisappidmonthlyvisittrend",
        }
    }

    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        vec![datacube::call(self.path(period.kind()), period)]
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Trend>, WeChatError> {
        let answer: TrendAnswer = answer.read()?;
        let Some(item) = answer.list.into_iter().next() else {
            return Ok(None);
        };
        check_ref_date(item.ref_date.as_deref(), call.asks)?;
        Ok(Some(Trend {
            session_cnt: item.session_cnt.0,
            visit_pv: item.visit_pv.0,
            visit_uv: item.visit_uv.0,
            visit_uv_new: item.visit_uv_new.0,
            stay_time_uv: item.stay_time_uv.0,
            stay_time_session: item.stay_time_session.0,
            visit_depth: item.visit_depth.0,
        }))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&Trend>], _: &Settings) -> Trend {
        pieces[0].cloned().unwrap_or_default()
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let answer = |model: &Model, period, now| self.answer(model, period, now);
        datacube::simulate(request, answer, |period| self.empty(period))
    }
}

impl VisitTrend {
    /// Simulation: the published answer for `period`.
    fn answer(&self, model: &Model, period: Period, _: DateTime<Utc>) -> Value {
        let totals = model.totals(period);
        let day_visitors: f64 = model.days(period).iter().map(|d| d.visitors).sum();
        let stay = totals.stay_per_day_visitor * day_visitors;
        json!({"list": [{
            "ref_date": period.ref_date(),
            "session_cnt": totals.sessions as i64,
            "visit_pv": totals.visits as i64,
            "visit_uv": totals.visitors as i64,
            "visit_uv_new": totals.new_visitors as i64,
            "stay_time_uv": round4(stay / totals.visitors),
            "stay_time_session": round4(stay / totals.sessions),
            "visit_depth": round4(totals.visits / totals.sessions),
        }]})
    }

    /// Simulation: the answer that holds nothing.
    fn empty(&self, _: Period) -> Value {
        json!({"list": []})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{parsed, rendered};

    fn trend(ref_date: &str, body: &str) -> Option<Trend> {
        parsed(&VisitTrend, ref_date, body).unwrap()
    }

    #[test]
    fn daily_trend_seed_example() {
        let body = r#"{"list":[{"ref_date":"20170313","session_cnt":142549,"visit_pv":472351,
            "visit_uv":55500,"visit_uv_new":5464,"stay_time_session":0,"visit_depth":1.9838}]}"#;
        assert_eq!(
            trend("20170313", body),
            Some(Trend {
                session_cnt: Some(142549.0),
                visit_pv: Some(472351.0),
                visit_uv: Some(55500.0),
                visit_uv_new: Some(5464.0),
                // The seed leaves stay_time_uv out: missing, not zero.
                stay_time_uv: None,
                stay_time_session: Some(0.0),
                visit_depth: Some(1.9838),
            })
        );
    }

    #[test]
    fn weekly_and_monthly_trend_seed_examples() {
        let weekly = r#"{"list":[{"ref_date":"20170306-20170312","session_cnt":986780,"visit_pv":3251840,
            "visit_uv":189405,"visit_uv_new":45592,"stay_time_session":54.5346,"visit_depth":1.9735}]}"#;
        let trend_of_week = trend("20170306-20170312", weekly).unwrap();
        assert_eq!(trend_of_week.visit_uv, Some(189405.0));
        assert_eq!(trend_of_week.stay_time_session, Some(54.5346));
        let monthly = r#"{"list":[{"ref_date":"201702","session_cnt":126513,"visit_pv":426113,
            "visit_uv":48659,"visit_uv_new":6726,"stay_time_session":56.4112,"visit_depth":2.0189}]}"#;
        assert_eq!(trend("201702", monthly).unwrap().visit_depth, Some(2.0189));
    }

    #[test]
    fn float_fields_written_as_integers_and_strings_are_read() {
        let body = r#"{"list":[{"ref_date":"20170313","stay_time_session":211,"stay_time_uv":"12.5",
            "visit_depth":null,"visit_uv":"n/a"}]}"#;
        let trend = trend("20170313", body).unwrap();
        assert_eq!(trend.stay_time_session, Some(211.0));
        assert_eq!(trend.stay_time_uv, Some(12.5));
        assert_eq!(trend.visit_depth, None);
        assert_eq!(trend.visit_uv, None);
        assert_eq!(trend.session_cnt, None);
    }

    #[test]
    fn an_empty_list_means_not_ready_and_another_period_is_refused() {
        assert_eq!(trend("20170313", r#"{"list":[]}"#), None);
        assert_eq!(trend("20170313", r#"{}"#), None);
        let other = parsed(
            &VisitTrend,
            "20170313",
            r#"{"list":[{"ref_date":"20170312","visit_uv":5}]}"#,
        );
        assert!(matches!(other, Err(WeChatError::Decode(_))));
    }

    #[test]
    fn missing_fields_are_left_out_not_zeroed() {
        let trend = Trend {
            visit_uv: Some(55500.0),
            stay_time_session: Some(0.0),
            ..Trend::default()
        };
        let text = rendered(&VisitTrend, trend);
        assert!(text.contains("wechat_miniprogram_visit_uv{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\"} 55500\n"), "{text}");
        assert!(text.contains("wechat_miniprogram_stay_time_session_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\"} 0\n"));
        assert!(!text.contains("wechat_miniprogram_stay_time_uv_seconds"));
        assert!(!text.contains("wechat_miniprogram_sessions"));
    }
}
