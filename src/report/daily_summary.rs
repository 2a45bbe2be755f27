//! The daily summary (`getweanalysisappiddailysummarytrend`, daily): the cumulative number of
//! users up to the day (`visit_total`, a gauge that only grows) and the day's shares.
//!
//! An empty `list` means "not published yet".

use chrono::{DateTime, Days, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{datacube, Family, ReportSpec};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, Model, Refusal, Request};
use crate::wechat::wire::{check_ref_date, Answer, Num};
use crate::wechat::{Call, WeChatError};

/// The daily summary report.
pub struct DailySummary;

/// The daily summary of one day. Any field WeChat left out is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// `visit_total`: users up to and including the day.
    pub visit_total: Option<f64>,
    /// `share_pv`: shares on the day.
    pub share_pv: Option<f64>,
    /// `share_uv`: users who shared on the day.
    pub share_uv: Option<f64>,
}

#[derive(Deserialize)]
struct SummaryItem {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    visit_total: Num,
    #[serde(default)]
    share_pv: Num,
    #[serde(default)]
    share_uv: Num,
}

#[derive(Deserialize)]
struct SummaryAnswer {
    #[serde(default)]
    list: Vec<SummaryItem>,
}

/// One family per field, each with `period="daily"`.
macro_rules! field {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            help: $help,
            samples: |summary: &Summary, kind, out: &mut Samples<'_>| {
                if let Some(value) = summary.$field {
                    out.sample(&[("period", kind.as_str())], value);
                }
            },
        }
    };
}

impl ReportSpec for DailySummary {
    type Piece = Summary;
    type Snapshot = Summary;

    const NAME: &'static str = "daily_summary";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const FAMILIES: &'static [Family<Summary>] = &[
        field!(
            "wechat_miniprogram_cumulative_users",
            "Users of the Mini Program up to and including the day (visit_total of the daily summary); it only grows.",
            visit_total
        ),
        field!(
            "wechat_miniprogram_share_pv",
            "Shares of the Mini Program on the day (share_pv of the daily summary).",
            share_pv
        ),
        field!(
            "wechat_miniprogram_share_uv",
            "Users who shared the Mini Program on the day (share_uv of the daily summary).",
            share_uv
        ),
    ];

    fn path(&self, _: PeriodKind) -> &'static str {
        "datacube/getweanalysisappiddailysummarytrend"
    }

    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        vec![datacube::call(self.path(period.kind()), period)]
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Summary>, WeChatError> {
        let answer: SummaryAnswer = answer.read()?;
        let Some(item) = answer.list.into_iter().next() else {
            return Ok(None);
        };
        check_ref_date(item.ref_date.as_deref(), call.asks)?;
        Ok(Some(Summary {
            visit_total: item.visit_total.0,
            share_pv: item.share_pv.0,
            share_uv: item.share_uv.0,
        }))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&Summary>], _: &Settings) -> Summary {
        pieces[0].cloned().unwrap_or_default()
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let answer = |model: &Model, period, now| self.answer(model, period, now);
        datacube::simulate(request, answer, |period| self.empty(period))
    }
}

impl DailySummary {
    /// Simulation: the published answer for `period`.
    /// Users before the app's first simulated day, plus every day's new visitors since;
    /// shares follow the day's visits.
    fn answer(&self, model: &Model, period: Period, _: DateTime<Utc>) -> Value {
        let day = period.start();
        let mut total = (model.app.visitors * 20.0).round();
        let mut date = model.app.since;
        while date <= day {
            total += model.day(date).new_visitors;
            date = date + Days::new(1);
        }
        let visits = model.day(day).visits;
        let share_pv = (visits * 0.012 * noise(&model.app.appid, day, "share", 0.2)).round();
        json!({"list": [{
            "ref_date": period.ref_date(),
            "visit_total": total as i64,
            "share_pv": share_pv as i64,
            "share_uv": (share_pv * 0.71).round() as i64,
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
    use crate::report::tests::parsed;
    use crate::simulated::SimApp;

    fn summary(body: &str) -> Option<Summary> {
        parsed(&DailySummary, "20170313", body).unwrap()
    }

    #[test]
    fn daily_summary_documented_example() {
        let body =
            r#"{"list":[{"ref_date":"20170313","visit_total":391,"share_pv":572,"share_uv":383}]}"#;
        assert_eq!(
            summary(body),
            Some(Summary {
                visit_total: Some(391.0),
                share_pv: Some(572.0),
                share_uv: Some(383.0),
            })
        );
    }

    #[test]
    fn missing_fields_stay_missing_and_an_empty_list_is_not_ready() {
        let body = r#"{"list":[{"ref_date":"20170313","visit_total":"391"}]}"#;
        let read = summary(body).unwrap();
        assert_eq!(read.visit_total, Some(391.0));
        assert_eq!((read.share_pv, read.share_uv), (None, None));
        assert_eq!(summary(r#"{"list":[]}"#), None);
        let other = parsed(
            &DailySummary,
            "20170313",
            r#"{"list":[{"ref_date":"20170314","visit_total":1}]}"#,
        );
        assert!(matches!(other, Err(WeChatError::Decode(_))));
    }

    #[test]
    fn the_simulated_cumulative_users_grow_every_day() {
        let app = SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "s", 10_000.0);
        let model = Model { app: &app };
        let total = |ref_date: &str| {
            let day = Period::parse_ref_date(ref_date).unwrap();
            DailySummary.answer(&model, day, day.end_instant())["list"][0]["visit_total"]
                .as_i64()
                .unwrap()
        };
        assert!(total("20240602") > total("20240601"));
        assert!(total("20240601") > 200_000);
    }
}
