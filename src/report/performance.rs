//! Performance data (`wxa/business/performance/boot`): the console's open rate, launch
//! stages, page switch time, memory and memory anomalies of a day, one call per module.
//!
//! Each module answers tables (`id`, `zh`, lines of `{refdate, value}` fields); every value
//! is a decimal string and WeChat documents neither the table ids nor their units, so the
//! exported value is WeChat's number as sent, under its table id. Modules are independent:
//! the day is published once any of them has it. A call may span 30 days, so `backfill` asks
//! 30 days of a module at once.

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{span, Family, Publication, ReportSpec};
use crate::exposition::{bounded_label, Samples};
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, Model, Refusal, Request};
use crate::wechat::wire::{note, Answer, Dropped, Signed};
use crate::wechat::{Call, WeChatError};

/// The performance data report.
pub struct Performance;

/// The modules: WeChat's number and the `module` label.
const MODULES: [(u32, &str); 5] = [
    (10016, "open_rate"),
    (10017, "launch_stages"),
    (10021, "page_switch"),
    (10022, "memory"),
    (10023, "memory_anomaly"),
];

/// The longest table id exported, in characters.
const INDICATOR_LENGTH: usize = 64;

/// The indicators of one module on one day: (table id, value), each id once.
pub type Indicators = Vec<(String, f64)>;

/// What is exported of a day: the indicators of each module that had the day.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Modules {
    /// (module label, indicators), in the order of `MODULES`.
    pub modules: Vec<(&'static str, Indicators)>,
}

#[derive(Deserialize)]
struct BootAnswer {
    #[serde(default)]
    data: Option<BootData>,
}

#[derive(Deserialize)]
struct BootData {
    #[serde(default)]
    body: Option<BootBody>,
}

#[derive(Deserialize)]
struct BootBody {
    #[serde(default)]
    tables: Vec<Table>,
}

#[derive(Deserialize)]
struct Table {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    fields: Vec<Field>,
}

#[derive(Deserialize)]
struct Field {
    #[serde(default)]
    refdate: Option<String>,
    #[serde(default)]
    value: Signed,
}

/// Every (day, table id, value) of an answer; a table id is kept once per day (its first
/// value).
fn values(answer: Answer<'_>) -> Result<Vec<(Period, String, f64)>, WeChatError> {
    let answer: BootAnswer = answer.read()?;
    let tables = answer
        .data
        .and_then(|data| data.body)
        .map(|body| body.tables);
    let mut found: Vec<(Period, String, f64)> = Vec::new();
    for table in tables.into_iter().flatten() {
        let Some(id) = table
            .id
            .map(|id| bounded_label(id.trim(), INDICATOR_LENGTH))
        else {
            continue;
        };
        for field in table.lines.into_iter().flat_map(|line| line.fields) {
            let day = field.refdate.as_deref().and_then(Period::parse_ref_date);
            let (Some(day), Some(value)) = (day, field.value.0) else {
                continue;
            };
            let seen = found.iter().any(|(d, i, _)| *d == day && *i == id);
            if seen {
                note(Dropped::Duplicate);
            } else if day.kind() == PeriodKind::Daily && !id.is_empty() {
                found.push((day, id.clone(), value));
            }
        }
    }
    Ok(found)
}

/// The call of one module over the days `first..=last`.
fn call(first: Period, last: Period, module: u32) -> Call {
    let (start, end) = span::seconds(first, last);
    let all = |field: &str| json!({"field": field, "value": "-1"});
    let body = json!({
        "module": module.to_string(),
        "time": {"begin_timestamp": start, "end_timestamp": end},
        "params": [all("networktype"), all("device_level"), all("device")],
    });
    Call {
        asks: first,
        path: "wxa/business/performance/boot",
        part: module,
        body: body.to_string(),
    }
}

/// The days a call spans, from its body.
fn call_days(call: &Call) -> Option<(Period, Period)> {
    let body: Value = serde_json::from_str(&call.body).ok()?;
    let time = body.get("time")?;
    let start = time.get("begin_timestamp")?.as_i64()?;
    let end = time.get("end_timestamp")?.as_i64()?;
    let (first, last) = span::days(start, end)?;
    let day = |date| Period::containing(PeriodKind::Daily, date);
    Some((day(first), day(last)))
}

fn indicators(modules: &Modules, _: PeriodKind, out: &mut Samples<'_>) {
    for (module, indicators) in &modules.modules {
        for (indicator, value) in indicators {
            out.sample(&[("module", module), ("indicator", indicator)], *value);
        }
    }
}

impl ReportSpec for Performance {
    type Piece = Indicators;
    type Snapshot = Modules;

    const NAME: &'static str = "performance";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const PUBLICATION: Publication = Publication::AnyCall;
    const FAMILIES: &'static [Family<Modules>] = &[Family {
        name: "wechat_miniprogram_performance",
        help: "Performance data of the day from the console's performance/boot API, by module (open_rate 10016, launch_stages 10017, page_switch 10021, memory 10022, memory_anomaly 10023) and indicator (WeChat's table id). WeChat sends the values as decimal strings and documents no unit: the value is WeChat's number as sent.",
        samples: indicators,
    }];

    fn path(&self, _: PeriodKind) -> &'static str {
        "wxa/business/performance/boot"
    }

    fn max_series(&self, _: PeriodKind, _: &Settings) -> usize {
        // The indicator tables of the modules as the simulation answers them (WeChat
        // documents no fixed list): 1 + 2 + 1 + 2 + 1.
        7
    }

    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        let modules = MODULES.iter();
        modules
            .map(|(module, _)| call(period, period, *module))
            .collect()
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Indicators>, WeChatError> {
        let found: Indicators = values(answer)?
            .into_iter()
            .filter(|(day, _, _)| *day == call.asks)
            .map(|(_, id, value)| (id, value))
            .collect();
        Ok((!found.is_empty()).then_some(found))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&Indicators>], _: &Settings) -> Modules {
        let modules = MODULES.iter().zip(pieces);
        let modules = modules.filter_map(|((_, module), found)| Some((*module, (*found)?.clone())));
        Modules {
            modules: modules.collect(),
        }
    }

    fn history_calls(&self, periods: &[Period], _: &Settings) -> Vec<Call> {
        let spans = span::spans(periods);
        let modules = MODULES.iter();
        modules
            .flat_map(|(module, _)| {
                spans
                    .iter()
                    .map(|(first, last)| call(*first, *last, *module))
            })
            .collect()
    }

    fn parse_history(
        &self,
        call: &Call,
        answer: Answer<'_>,
    ) -> Result<Vec<(Call, Indicators)>, WeChatError> {
        let Some((first, last)) = call_days(call) else {
            return Ok(Vec::new());
        };
        let mut by_day: Vec<(Period, Indicators)> = Vec::new();
        for (day, id, value) in values(answer)? {
            if day < first || day > last {
                continue;
            }
            match by_day.iter_mut().find(|(d, _)| *d == day) {
                Some((_, found)) => found.push((id, value)),
                None => by_day.push((day, vec![(id, value)])),
            }
        }
        let pieces = by_day.into_iter();
        Ok(pieces
            .map(|(day, found)| (self::call(day, day, call.part), found))
            .collect())
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let body = request.body;
        let time = |key: &str| body.get("time")?.get(key)?.as_i64();
        let (first, last) = span::requested(
            time("begin_timestamp"),
            time("end_timestamp"),
            request.yesterday(),
        )?;
        let module = body
            .get("module")
            .and_then(Value::as_str)
            .and_then(|m| m.parse::<u32>().ok());
        let module = module.filter(|m| MODULES.iter().any(|(known, _)| known == m));
        let module = module.ok_or((47001, "data format error"))?;
        let last = Period::containing(PeriodKind::Daily, last);
        let answer = |tables: Vec<Value>| json!({"errcode": 0, "data": {"body": {"tables": tables, "count": 1}}});
        if !request.is_published(last) && first == last.start() {
            return request.not_ready(|| answer(Vec::new()));
        }
        let tables = simulated_tables(&request.model, module, first, last, |day| request.has(day));
        Ok(answer(tables))
    }
}

/// The simulated tables of a module over `first..=last`, with the days the app `has`.
fn simulated_tables(
    model: &Model,
    module: u32,
    first: NaiveDate,
    last: Period,
    has: impl Fn(Period) -> bool,
) -> Vec<Value> {
    let indicators: &[(&str, &str, f64)] = match module {
        10016 => &[("open_rate", "打开率", 0.93)],
        10017 => &[
            ("download_pkg", "代码包下载", 620.0),
            ("first_render", "首次渲染", 880.0),
        ],
        10021 => &[("costtime", "页面切换耗时", 310.0)],
        10022 => &[
            ("memory", "内存均值", 314.0),
            ("memorydiff", "内存增量", 42.0),
        ],
        _ => &[("memory_warning_rate", "内存告警率", 0.012)],
    };
    let mut tables = Vec::new();
    for (id, zh, base) in indicators {
        let mut fields = Vec::new();
        let mut day = Period::containing(PeriodKind::Daily, first);
        while day <= last {
            if has(day) {
                let weekend = if day.start().weekday().number_from_monday() >= 6 {
                    1.05
                } else {
                    1.0
                };
                let value = base * weekend * noise(&model.app.appid, day.start(), id, 0.05);
                let text = if *base < 1.0 {
                    format!("{value:.4}")
                } else {
                    format!("{value:.0}")
                };
                fields.push(json!({"refdate": day.ref_date(), "value": text}));
            }
            day = day.next();
        }
        tables.push(json!({"id": id, "zh": zh, "lines": [{"fields": fields}]}));
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{rendered, ParseJson};

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    #[test]
    fn the_documented_example_has_its_value_as_a_string() {
        let answer = json!({"errcode":0,"data":{"body":{"tables":[{"id":"memory","zh":"内存均值",
            "lines":[{"fields":[{"refdate":"20210103","value":"314"}]}]}],"count":1}}});
        let calls = Performance.calls(day("20210103"), &Settings::default());
        assert_eq!(calls[3].part, 10022);
        assert!(
            calls[3].body.contains("\"module\":\"10022\""),
            "{}",
            calls[3].body
        );
        assert_eq!(
            Performance.parse_json(&calls[3], answer),
            Ok(Some(vec![("memory".to_string(), 314.0)]))
        );
    }

    #[test]
    fn no_table_another_day_or_an_unreadable_value_hold_nothing() {
        let call = &Performance.calls(day("20210103"), &Settings::default())[0];
        for answer in [
            json!({"errcode": 0}),
            json!({"data": {"body": {"tables": []}}}),
            json!({"data": {"body": {"tables": [{"id": "x", "lines": [{"fields": [{"refdate": "20210102", "value": "1"}]}]}]}}}),
            json!({"data": {"body": {"tables": [{"id": "x", "lines": [{"fields": [{"refdate": "20210103", "value": "n/a"}]}]}]}}}),
        ] {
            assert_eq!(
                Performance.parse_json(call, answer.clone()),
                Ok(None),
                "{answer}"
            );
        }
    }

    #[test]
    fn a_repeated_table_keeps_its_first_value() {
        let call = &Performance.calls(day("20210103"), &Settings::default())[0];
        let line = |value: &str| json!({"fields": [{"refdate": "20210103", "value": value}]});
        let answer = json!({"data": {"body": {"tables": [
            {"id": "rate", "lines": [line("0.9"), line("0.8")]},
            {"id": "rate", "lines": [line("0.7")]},
        ]}}});
        assert_eq!(
            Performance.parse_json(call, answer),
            Ok(Some(vec![("rate".to_string(), 0.9)]))
        );
    }

    #[test]
    fn indicators_are_exported_by_module() {
        let modules = Modules {
            modules: vec![("memory", vec![("memory".into(), 314.0)])],
        };
        let text = rendered(&Performance, modules);
        assert!(text.contains("wechat_miniprogram_performance{appid=\"wx1234567890abcdef\",app=\"shop\",module=\"memory\",indicator=\"memory\"} 314\n"), "{text}");
    }
}
