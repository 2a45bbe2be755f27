//! Launch performance (`wxaapi/log/get_performance`): the average total launch time, code
//! download time and first render time of a day, one call per phase.
//!
//! The answer carries its data as JSON inside a string (`default_time_data`), one entry per
//! day, `cost_time` in milliseconds; exported in seconds. The total launch time decides
//! whether the day is published. A call may span 30 days, so `backfill` asks 30 days of a
//! phase at once.

use chrono::Datelike;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{span, Family, ReportSpec};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, Model, Refusal, Request};
use crate::wechat::wire::{read_value, Answer, Num};
use crate::wechat::{Call, WeChatError};

/// The launch performance report.
pub struct LaunchTime;

/// The phases: WeChat's `cost_time_type` and the `phase` label.
const PHASES: [(u32, &str); 3] = [(1, "total"), (2, "download"), (3, "first_render")];

/// The launch times of one day, in milliseconds, by phase (`phase` label).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LaunchTimes {
    /// (phase, milliseconds), in the order of `PHASES`.
    pub phases: Vec<(&'static str, f64)>,
}

#[derive(Deserialize)]
struct PerformanceAnswer {
    #[serde(default)]
    default_time_data: Value,
}

#[derive(Deserialize)]
struct TimeData {
    #[serde(default)]
    list: Vec<TimeEntry>,
}

#[derive(Deserialize)]
struct TimeEntry {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    cost_time_type: Num,
    #[serde(default)]
    cost_time: Num,
}

/// The entries of an answer: `default_time_data` is JSON in a string (or, leniently, an
/// object); an empty string holds nothing.
fn entries(answer: Answer<'_>) -> Result<Vec<TimeEntry>, WeChatError> {
    let answer: PerformanceAnswer = answer.read()?;
    let data = match answer.default_time_data {
        Value::String(text) if text.trim().is_empty() => return Ok(Vec::new()),
        Value::String(text) => serde_json::from_str(&text)
            .map_err(|error| WeChatError::Decode(format!("default_time_data: {error}")))?,
        Value::Null => return Ok(Vec::new()),
        other => other,
    };
    Ok(read_value::<TimeData>(data)?.list)
}

/// The call of one phase over the days `first..=last`.
fn call(first: Period, last: Period, phase: u32) -> Call {
    let (start, end) = span::seconds(first, last);
    let body = json!({
        "cost_time_type": phase,
        "default_start_time": start,
        "default_end_time": end,
        "device": "@_all",
        "is_download_code": "@_all",
        "scene": "@_all",
        "networktype": "@_all",
    });
    Call {
        asks: first,
        path: "wxaapi/log/get_performance",
        part: phase,
        body: body.to_string(),
    }
}

/// The days a call spans, from its body.
fn call_days(call: &Call) -> Option<(Period, Period)> {
    let body: Value = serde_json::from_str(&call.body).ok()?;
    let start = body.get("default_start_time")?.as_i64()?;
    let end = body.get("default_end_time")?.as_i64()?;
    let (first, last) = span::days(start, end)?;
    let day = |date| Period::containing(PeriodKind::Daily, date);
    Some((day(first), day(last)))
}

/// The milliseconds of each day of the phase `phase` in `entries`, if believable.
fn times(entries: Vec<TimeEntry>, phase: u32) -> impl Iterator<Item = (Period, f64)> {
    entries.into_iter().filter_map(move |entry| {
        let day = Period::parse_ref_date(entry.ref_date.as_deref()?)?;
        let kind = entry.cost_time_type.0.map_or(phase, |kind| kind as u32);
        let milliseconds = entry.cost_time.0.filter(|ms| *ms >= 0.0)?;
        (day.kind() == PeriodKind::Daily && kind == phase).then_some((day, milliseconds))
    })
}

fn seconds(times: &LaunchTimes, _: PeriodKind, out: &mut Samples<'_>) {
    for (phase, milliseconds) in &times.phases {
        out.sample(&[("phase", phase)], milliseconds / 1000.0);
    }
}

impl ReportSpec for LaunchTime {
    type Piece = f64;
    type Snapshot = LaunchTimes;

    const NAME: &'static str = "launch_time";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const FAMILIES: &'static [Family<LaunchTimes>] = &[Family {
        name: "wechat_miniprogram_launch_time_seconds",
        help: "Average launch time of the day by phase: total (cost_time_type 1), code download (2) and first render (3), from get_performance.",
        samples: seconds,
    }];

    fn path(&self, _: PeriodKind) -> &'static str {
        "wxaapi/log/get_performance"
    }

    fn max_series(&self, _: PeriodKind, _: &Settings) -> usize {
        PHASES.len()
    }

    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        PHASES
            .iter()
            .map(|(phase, _)| call(period, period, *phase))
            .collect()
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<f64>, WeChatError> {
        let found = times(entries(answer)?, call.part).find(|(day, _)| *day == call.asks);
        Ok(found.map(|(_, milliseconds)| milliseconds))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&f64>], _: &Settings) -> LaunchTimes {
        let phases = PHASES.iter().zip(pieces);
        let phases = phases.filter_map(|((_, phase), ms)| Some((*phase, **ms.as_ref()?)));
        LaunchTimes {
            phases: phases.collect(),
        }
    }

    fn history_calls(&self, periods: &[Period], _: &Settings) -> Vec<Call> {
        let spans = span::spans(periods);
        let phases = PHASES.iter();
        phases
            .flat_map(|(phase, _)| {
                spans
                    .iter()
                    .map(|(first, last)| call(*first, *last, *phase))
            })
            .collect()
    }

    fn parse_history(
        &self,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<Vec<(Call, f64)>, WeChatError> {
        let Some((first, last)) = call_days(call) else {
            return Ok(Vec::new());
        };
        let within = times(entries(answer)?, call.part)
            .filter(|(day, _)| first <= *day && *day <= last)
            .map(|(day, milliseconds)| (self::call(day, day, call.part), milliseconds));
        Ok(within.collect())
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let body = request.body;
        let number = |key: &str| body.get(key).and_then(Value::as_i64);
        let (first, last) = span::requested(
            number("default_start_time"),
            number("default_end_time"),
            request.yesterday(),
        )?;
        let phase = number("cost_time_type").filter(|phase| (1..=3).contains(phase));
        let phase = phase.ok_or((47001, "data format error"))?;
        let last = Period::containing(PeriodKind::Daily, last);
        let answer = |list: Vec<Value>| {
            let data = json!({ "list": list }).to_string();
            json!({"default_time_data": data, "compare_time_data": "", "errcode": 0})
        };
        if !request.is_published(last) && first == last.start() {
            return request.not_ready(|| answer(Vec::new()));
        }
        let mut list = Vec::new();
        let mut day = Period::containing(PeriodKind::Daily, first);
        while day <= last {
            if request.has(day) {
                let ms = simulated(&request.model, day, phase);
                list.push(
                    json!({"ref_date": day.ref_date(), "cost_time_type": phase, "cost_time": ms}),
                );
            }
            day = day.next();
        }
        Ok(answer(list))
    }
}

/// The simulated milliseconds of a phase on a day: slower on weekends, when more people
/// open the Mini Program.
fn simulated(model: &Model, day: Period, phase: i64) -> i64 {
    let base = match phase {
        1 => 2400.0,
        2 => 900.0,
        _ => 1100.0,
    };
    let weekend = if day.start().weekday().number_from_monday() >= 6 {
        1.08
    } else {
        1.0
    };
    let salt = format!("launch{phase}");
    (base * weekend * noise(&model.app.appid, day.start(), &salt, 0.06)).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{rendered, ParseJson};

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    #[test]
    fn the_documented_example_holds_json_in_a_string() {
        let answer = json!({"default_time_data": "{\"list\":[{\"ref_date\":\"20191029\",\"cost_time_type\":2,\"cost_time\":1533}]}",
            "compare_time_data": "", "errcode": 0});
        let calls = LaunchTime.calls(day("20191029"), &Settings::default());
        assert_eq!(
            LaunchTime.parse_json(&calls[1], answer.clone()),
            Ok(Some(1533.0))
        );
        // The entry is for phase 2: the total (phase 1) is not in it.
        assert_eq!(LaunchTime.parse_json(&calls[0], answer), Ok(None));
    }

    #[test]
    fn an_empty_list_an_empty_string_and_another_day_hold_nothing() {
        let call = &LaunchTime.calls(day("20191029"), &Settings::default())[0];
        for data in [
            json!("{\"list\":[]}"),
            json!(""),
            json!("{\"list\":[{\"ref_date\":\"20191028\",\"cost_time_type\":1,\"cost_time\":9}]}"),
            json!({"list": [{"ref_date": "20191029", "cost_time_type": 1, "cost_time": -5}]}),
        ] {
            let answer = json!({ "default_time_data": data });
            assert_eq!(LaunchTime.parse_json(call, answer), Ok(None), "{data}");
        }
        let broken = json!({"default_time_data": "{\"list\":["});
        assert!(matches!(
            LaunchTime.parse_json(call, broken),
            Err(WeChatError::Decode(_))
        ));
    }

    #[test]
    fn a_history_call_spans_thirty_days_and_splits_by_day() {
        let days: Vec<Period> = std::iter::successors(Some(day("20240101")), |p| Some(p.next()))
            .take(40)
            .collect();
        let calls = LaunchTime.history_calls(&days, &Settings::default());
        assert_eq!(calls.len(), 2 * 3, "two spans, three phases");
        let answer = json!({"default_time_data": json!({"list": [
            {"ref_date": "20240102", "cost_time_type": 1, "cost_time": 2000},
            {"ref_date": "20240301", "cost_time_type": 1, "cost_time": 1},
        ]}).to_string()});
        let pieces = LaunchTime.parse_history_json(&calls[0], answer).unwrap();
        assert_eq!(
            pieces,
            [(
                LaunchTime.calls(day("20240102"), &Settings::default())[0].clone(),
                2000.0
            )]
        );
    }

    #[test]
    fn milliseconds_are_exported_as_seconds_by_phase() {
        let times = LaunchTimes {
            phases: vec![("total", 2400.0), ("first_render", 1100.0)],
        };
        let text = rendered(&LaunchTime, times);
        assert!(text.contains("wechat_miniprogram_launch_time_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",phase=\"total\"} 2.4\n"), "{text}");
        assert!(!text.contains("phase=\"download\""));
    }
}
