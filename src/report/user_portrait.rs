//! The user portrait (`getweanalysisappiduserportrait`): who the new and the active users of
//! the last day, 7 days or 30 days were, by province, city, gender, platform, device and age.
//!
//! One call per range of `reports.portrait_ranges`, each ending yesterday; the first decides
//! whether yesterday is published. Each half of the answer (`visit_uv_new`, `visit_uv`) is an
//! object of arrays of `{id, name, value}` (`devices` have no `id`); entries are keyed on
//! WeChat's `name`, as sent, and only the `reports.portrait_top` largest are kept per
//! (range, cohort, dimension). WeChat keeps no past portrait: `backfill` skips it.

use chrono::{Days, NaiveDate};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::Settings;
use super::{datacube, Family, ReportSpec};
use crate::exposition::{bounded_label, Samples};
use crate::period::{Period, PeriodKind};
use crate::shared::Name;
use crate::simulated::model::{noise, Model, Refusal, Request};
use crate::simulated::RefDateForm;
use crate::wechat::wire::{fields, note, Answer, Dropped, Num, Text};
use crate::wechat::{Call, WeChatError};

/// The user portrait report.
pub struct UserPortrait;

/// The longest portrait name exported, in characters.
const NAME_LENGTH: usize = 100;

/// The dimensions of a portrait: the array in WeChat's answer and the `dimension` label.
const DIMENSIONS: [(&str, &str); 6] = [
    ("province", "province"),
    ("city", "city"),
    ("genders", "gender"),
    ("platforms", "platform"),
    ("devices", "device"),
    ("ages", "age"),
];

/// The entries of one dimension: (name, users), largest first.
pub type Entries = Vec<(Name, f64)>;

/// One half of a portrait (new or active users): per dimension (`dimension` label), the
/// entries, largest first, each name once. Names are shared with every app that sends them
/// ([`crate::shared`]): a thousand apps hold one `广东省`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Half {
    /// (dimension, [(name, users)]) in the order of `DIMENSIONS`.
    pub dimensions: Vec<(&'static str, Entries)>,
}

/// The portrait of one range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Portrait {
    /// `visit_uv_new`: the new users.
    pub new: Half,
    /// `visit_uv`: the active users.
    pub active: Half,
}

/// What is exported: the portrait of each range (`range` label), each dimension cut to the
/// largest entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Portraits {
    /// (range label, portrait), in the order of `reports.portrait_ranges`.
    pub ranges: Vec<(&'static str, Portrait)>,
}

#[derive(Deserialize)]
struct PortraitAnswer<'a> {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default, borrow)]
    visit_uv_new: Option<&'a RawValue>,
    #[serde(default, borrow)]
    visit_uv: Option<&'a RawValue>,
}

/// The fields of an entry: its name, its value, and what old documentation named the value.
const ENTRY_FIELDS: [&str; 3] = ["name", "value", "access_source_visit_uv"];

/// The `range` label of a range of `days`.
fn range_label(days: u32) -> &'static str {
    match days {
        1 => "1d",
        7 => "7d",
        _ => "30d",
    }
}

/// Reads one half leniently, from the answer's text: an object of arrays; anything else
/// holds nothing, and so does an entry that is not an object with a string `name`.
fn half(half: Option<&RawValue>) -> Half {
    let keys = DIMENSIONS.map(|(key, _)| key);
    let arrays = half.and_then(|half| fields(half.get(), keys));
    let dimensions = DIMENSIONS.iter().zip(arrays.unwrap_or_default());
    let dimensions = dimensions.map(|((_, dimension), array)| {
        let items: Vec<&RawValue> = array
            .and_then(|array| serde_json::from_str(array.get()).ok())
            .unwrap_or_default();
        let entries = items.into_iter().filter_map(entry);
        (*dimension, largest(entries.collect(), usize::MAX))
    });
    Half {
        dimensions: dimensions.collect(),
    }
}

/// One entry `{id, name, value}` with a string `name` and a value.
fn entry(item: &RawValue) -> Option<(Name, f64)> {
    let [name, value, old] = fields(item.get(), ENTRY_FIELDS)?;
    let number =
        |raw: Option<&RawValue>| raw.and_then(|raw| serde_json::from_str::<Num>(raw.get()).ok()?.0);
    let value = number(value).or(number(old));
    let name: Option<Text> = serde_json::from_str(name?.get()).ok()?;
    let name = label(name?.0.trim());
    (!name.is_empty()).then_some((name, value?))
}

/// The shared `name` label of `text`: cut to `NAME_LENGTH` characters, control characters
/// made spaces.
fn label(text: &str) -> Name {
    let plain = text.chars().take(NAME_LENGTH + 1).count() <= NAME_LENGTH
        && !text.chars().any(char::is_control);
    match plain {
        true => crate::shared::name(text),
        false => crate::shared::name(&bounded_label(text, NAME_LENGTH)),
    }
}

/// The `n` largest entries, largest first (ties by name), each name once (the first kept).
fn largest(mut entries: Entries, n: usize) -> Entries {
    entries.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut seen = std::collections::HashSet::new();
    entries.retain(|(name, _)| {
        let first = seen.insert(name.clone());
        if !first {
            note(Dropped::Duplicate);
        }
        first
    });
    entries.truncate(n);
    entries
}

impl Half {
    fn is_empty(&self) -> bool {
        self.dimensions
            .iter()
            .all(|(_, entries)| entries.is_empty())
    }

    fn top(&self, n: usize) -> Half {
        let dimensions = self
            .dimensions
            .iter()
            .map(|(dimension, entries)| (*dimension, entries.iter().take(n).cloned().collect()));
        Half {
            dimensions: dimensions.collect(),
        }
    }
}

fn users(portraits: &Portraits, _: PeriodKind, out: &mut Samples<'_>) {
    for (range, portrait) in &portraits.ranges {
        for (cohort, half) in [("new", &portrait.new), ("active", &portrait.active)] {
            for (dimension, entries) in &half.dimensions {
                for (name, value) in entries {
                    let labels = [
                        ("range", *range),
                        ("cohort", cohort),
                        ("dimension", *dimension),
                        ("name", &**name),
                    ];
                    out.sample(&labels, *value);
                }
            }
        }
    }
}

impl ReportSpec for UserPortrait {
    type Piece = Portrait;
    type Snapshot = Portraits;

    const NAME: &'static str = "user_portrait";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const HISTORY: bool = false;
    const FAMILIES: &'static [Family<Portraits>] = &[Family {
        name: "wechat_miniprogram_portrait_uv",
        help: "Users of the range (1d, 7d or 30d ending on the day) in a portrait entry (name, as WeChat sends it) of a dimension, for new (visit_uv_new) or active (visit_uv) users; only the largest entries per range, cohort and dimension.",
        samples: users,
    }];

    fn path(&self, _: PeriodKind) -> &'static str {
        "datacube/getweanalysisappiduserportrait"
    }

    fn max_series(&self, _: PeriodKind, reports: &Settings) -> usize {
        // Per range, both cohorts and every dimension keep their largest entries.
        reports.portrait_top * DIMENSIONS.len() * 2 * reports.portrait_ranges.len()
    }

    fn calls(&self, period: Period, reports: &Settings) -> Vec<Call> {
        let path = self.path(period.kind());
        reports
            .portrait_ranges
            .iter()
            .map(|&days| {
                let begin = period.end() - Days::new(u64::from(days) - 1);
                let body = json!({
                    "begin_date": begin.format("%Y%m%d").to_string(),
                    "end_date": period.end_date(),
                });
                Call {
                    asks: period,
                    path,
                    part: days,
                    body: body.to_string(),
                }
            })
            .collect()
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Portrait>, WeChatError> {
        let answer: PortraitAnswer = answer.read()?;
        let portrait = Portrait {
            new: half(answer.visit_uv_new),
            active: half(answer.visit_uv),
        };
        if portrait.new.is_empty() && portrait.active.is_empty() {
            return Ok(None);
        }
        check_range(answer.ref_date.as_deref(), call)?;
        Ok(Some(portrait))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&Portrait>], reports: &Settings) -> Portraits {
        let ranges = reports.portrait_ranges.iter().zip(pieces);
        let ranges = ranges.filter_map(|(&days, portrait)| {
            let portrait = portrait.as_ref()?;
            let top = Portrait {
                new: portrait.new.top(reports.portrait_top),
                active: portrait.active.top(reports.portrait_top),
            };
            Some((range_label(days), top))
        });
        Portraits {
            ranges: ranges.collect(),
        }
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let (begin, end) = datacube::dates(request.body)?;
        let days = (end - begin).num_days() + 1;
        if !matches!(days, 1 | 7 | 30) || end != request.yesterday() {
            return Err((61501, "date range error"));
        }
        let period = Period::containing(PeriodKind::Daily, end);
        request.publish(
            period,
            || simulated(&request.model, begin, end),
            || json!({"ref_date": period.ref_date(), "visit_uv_new": {}, "visit_uv": {}}),
        )
    }
}

/// Checks that the answer's `ref_date`, when present, names the range asked: WeChat writes
/// it as the range (`20170611-20170617`), as its first day (the official example answers the
/// 7-day request 20170611..20170617 with `"ref_date": "20170611"`) or as its last day.
/// Anything else is an answer for another range.
fn check_range(ref_date: Option<&str>, call: &Call) -> Result<(), WeChatError> {
    let Some(text) = ref_date.map(str::trim) else {
        return Ok(());
    };
    let (begin, end) = range_of(call);
    let day = |date: NaiveDate| date.format("%Y%m%d").to_string();
    let range = format!("{}-{}", day(begin), day(end));
    if text == range || text == day(begin) || text == day(end) {
        return Ok(());
    }
    Err(WeChatError::Decode(format!(
        "answer is for ref_date {text:?}, not {range}"
    )))
}

/// The first and last day a call asks for: its range of `part` days ending on its day.
fn range_of(call: &Call) -> (NaiveDate, NaiveDate) {
    let end = call.asks.end();
    (end - Days::new(u64::from(call.part.max(1)) - 1), end)
}

/// The simulated portrait of the days `begin..=end`.
fn simulated(model: &Model, begin: NaiveDate, end: NaiveDate) -> Value {
    let days = (end - begin).num_days() + 1;
    let mut visitors = 0.0;
    let mut new_visitors = 0.0;
    let mut date = begin;
    while date <= end {
        visitors += model.day(date).visitors;
        new_visitors += model.day(date).new_visitors;
        date = date + Days::new(1);
    }
    let overlap = match days {
        1 => 1.0,
        7 => 0.42,
        _ => 0.21,
    };
    let day = |date: NaiveDate| date.format("%Y%m%d").to_string();
    let ref_date = match model.app.portrait_ref_date {
        _ if days == 1 => day(end),
        RefDateForm::FirstDay => day(begin),
        RefDateForm::LastDay => day(end),
        RefDateForm::Range => format!("{}-{}", day(begin), day(end)),
    };
    let salt = format!("portrait{days}");
    json!({
        "ref_date": ref_date,
        "visit_uv_new": simulated_half(model, end, (new_visitors * 0.93).round(), &format!("{salt}new")),
        "visit_uv": simulated_half(model, end, (visitors * overlap).round(), &salt),
    })
}

fn simulated_half(model: &Model, day: NaiveDate, users: f64, salt: &str) -> Value {
    let split = |names: &[&str], with_id: bool| -> Vec<Value> {
        let weights: Vec<f64> = names
            .iter()
            .enumerate()
            .map(|(rank, name)| {
                let jitter = noise(&model.app.appid, day, &format!("{salt}{name}"), 0.2);
                jitter / (rank as f64 + 1.0).powf(0.9)
            })
            .collect();
        let sum: f64 = weights.iter().sum();
        let entries = names.iter().zip(&weights).enumerate();
        entries
            .map(|(id, (name, weight))| {
                let value = (users * weight / sum).round() as i64;
                match with_id {
                    true => json!({"id": id + 1, "name": name, "value": value}),
                    false => json!({"name": name, "value": value}),
                }
            })
            .collect()
    };
    json!({
        "province": split(&PROVINCES, true),
        "city": split(&CITIES, true),
        "genders": split(&["男", "女", "未知"], true),
        "platforms": split(&["iPhone", "Android", "其他"], true),
        "devices": split(&DEVICES, false),
        "ages": split(&["25-29岁", "30-39岁", "18-24岁", "40-49岁", "50岁以上", "17岁以下", "未知"], true),
    })
}

/// Simulation: provinces, most users first.
const PROVINCES: [&str; 32] = [
    "广东省",
    "江苏省",
    "浙江省",
    "山东省",
    "河南省",
    "四川省",
    "湖北省",
    "北京市",
    "上海市",
    "福建省",
    "湖南省",
    "河北省",
    "安徽省",
    "陕西省",
    "辽宁省",
    "重庆市",
    "云南省",
    "广西壮族自治区",
    "江西省",
    "天津市",
    "山西省",
    "黑龙江省",
    "吉林省",
    "贵州省",
    "内蒙古自治区",
    "新疆维吾尔自治区",
    "甘肃省",
    "海南省",
    "宁夏回族自治区",
    "青海省",
    "西藏自治区",
    "其他",
];

/// Simulation: cities, more than a portrait keeps.
const CITIES: [&str; 40] = [
    "深圳市",
    "广州市",
    "上海市",
    "北京市",
    "杭州市",
    "成都市",
    "苏州市",
    "武汉市",
    "南京市",
    "重庆市",
    "东莞市",
    "西安市",
    "郑州市",
    "长沙市",
    "天津市",
    "佛山市",
    "青岛市",
    "宁波市",
    "合肥市",
    "济南市",
    "厦门市",
    "福州市",
    "无锡市",
    "昆明市",
    "沈阳市",
    "大连市",
    "南宁市",
    "哈尔滨市",
    "石家庄市",
    "贵阳市",
    "南昌市",
    "长春市",
    "太原市",
    "温州市",
    "泉州市",
    "金华市",
    "珠海市",
    "惠州市",
    "中山市",
    "常州市",
];

/// Simulation: device models (WeChat sends them without an `id`).
const DEVICES: [&str; 36] = [
    "iPhone 15",
    "iPhone 14",
    "iPhone 13",
    "iPhone 15 Pro",
    "HUAWEI Mate 60",
    "iPhone 12",
    "HUAWEI P60",
    "Xiaomi 14",
    "OPPO Reno11",
    "vivo X100",
    "HONOR 100",
    "Redmi K70",
    "iPhone 11",
    "HUAWEI nova 12",
    "vivo S18",
    "OPPO Find X7",
    "Xiaomi 13",
    "Redmi Note 13",
    "HONOR Magic6",
    "iPhone 14 Pro",
    "OnePlus 12",
    "realme GT5",
    "vivo iQOO 12",
    "HUAWEI Mate 50",
    "OPPO A2",
    "Redmi 13C",
    "HONOR X50",
    "vivo Y78",
    "iPad",
    "HUAWEI MatePad",
    "Xiaomi Pad 6",
    "iPhone SE",
    "Meizu 21",
    "nubia Z60",
    "ZTE Axon 60",
    "其他",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{parsed, rendered, ParseJson};

    fn portrait(body: &str) -> Option<Portrait> {
        parsed(&UserPortrait, "20170611", body).unwrap()
    }

    fn entries(half: &Half, dimension: &str) -> Vec<(String, f64)> {
        let (_, entries) = half
            .dimensions
            .iter()
            .find(|(d, _)| *d == dimension)
            .unwrap();
        let entries = entries
            .iter()
            .map(|(name, value)| (name.to_string(), *value));
        entries.collect()
    }

    #[test]
    fn the_documented_example_with_halves_as_objects_and_devices_without_id() {
        let body = r#"{"ref_date":"20170611",
            "visit_uv_new":{"province":[{"id":31,"name":"广东省","value":215}],"city":[{"id":3,"name":"广州","value":78}],
                "genders":[{"id":1,"name":"男","value":2146}],"platforms":[{"id":1,"name":"iPhone","value":27642}],
                "devices":[{"name":"OPPO R9","value":61}],"ages":[{"id":1,"name":"17岁以下","value":151}]},
            "visit_uv":{"province":[{"id":31,"name":"广东省","value":1341}],"city":[{"id":3,"name":"广州","value":234}],
                "genders":[{"id":1,"name":"男","value":14534}],"platforms":[{"id":1,"name":"iPhone","value":21750}],
                "devices":[{"name":"OPPO R9","value":617}],"ages":[{"id":1,"name":"17岁以下","value":3156}]}}"#;
        let read = portrait(body).unwrap();
        assert_eq!(
            entries(&read.new, "province"),
            [("广东省".to_string(), 215.0)]
        );
        assert_eq!(
            entries(&read.new, "device"),
            [("OPPO R9".to_string(), 61.0)]
        );
        assert_eq!(
            entries(&read.active, "age"),
            [("17岁以下".to_string(), 3156.0)]
        );
        assert_eq!(
            entries(&read.active, "gender"),
            [("男".to_string(), 14534.0)]
        );
    }

    /// The official example: the 7-day request 20170611..20170617, answered with the range's
    /// first day as `ref_date`.
    const OFFICIAL_EXAMPLE: &str = r#"{"ref_date":"20170611","visit_uv_new":{"province":[{"id":31,"name":"广东省","value":215}],"city":[{"id":3102,"name":"广州","value":78}],"genders":[{"id":1,"name":"男","value":2146}],"platforms":[{"id":1,"name":"iPhone","value":27642}],"devices":[{"name":"OPPO R9","value":61}],"ages":[{"id":1,"name":"17岁以下","value":151}]},"visit_uv":{"province":[{"id":31,"name":"广东省","value":1341}],"city":[{"id":3102,"name":"广州","value":234}],"genders":[{"id":1,"name":"男","value":14534}],"platforms":[{"id":1,"name":"iPhone","value":21750}],"devices":[{"name":"OPPO R9","value":617}],"ages":[{"id":1,"name":"17岁以下","value":3156}]}}"#;

    /// The calls of yesterday 2017-06-17, by range in days.
    fn call_of(days: u32) -> Call {
        let period = Period::parse_ref_date("20170617").unwrap();
        let calls = UserPortrait.calls(period, &Settings::default());
        calls.into_iter().find(|call| call.part == days).unwrap()
    }

    #[test]
    fn the_official_example_answers_the_seven_day_request_with_its_first_day() {
        let call = call_of(7);
        assert_eq!(
            call.body, r#"{"begin_date":"20170611","end_date":"20170617"}"#,
            "the official example's request"
        );
        let answer = crate::wechat::wire::answer(OFFICIAL_EXAMPLE.as_bytes())
            .unwrap()
            .unwrap();
        let read = UserPortrait.parse(&call, answer).unwrap().unwrap();
        assert_eq!(entries(&read.new, "city"), [("广州".to_string(), 78.0)]);
        assert_eq!(
            entries(&read.active, "age"),
            [("17岁以下".to_string(), 3156.0)]
        );
    }

    #[test]
    fn a_range_is_named_by_its_first_day_its_last_day_or_both_and_nothing_else() {
        let portrait = |ref_date: &str| json!({"ref_date": ref_date, "visit_uv": {"genders": [{"id": 1, "name": "男", "value": 1}]}});
        // (range in days, ref_date, accepted)
        let table = [
            (7, "20170611", true),
            (7, "20170617", true),
            (7, "20170611-20170617", true),
            (30, "20170519", true),
            (30, "20170617", true),
            (30, "20170519-20170617", true),
            (1, "20170617", true),
            (7, "20170612", false),
            (7, "20170610-20170616", false),
            (7, "20170618", false),
            (30, "20170611", false),
            (1, "20170616", false),
            (7, "201706", false),
        ];
        for (days, ref_date, accepted) in table {
            let parsed = UserPortrait.parse_json(&call_of(days), portrait(ref_date));
            assert_eq!(parsed.is_ok(), accepted, "{days} days, ref_date {ref_date}");
            if !accepted {
                assert!(matches!(parsed, Err(WeChatError::Decode(_))), "{ref_date}");
            }
        }
    }

    #[test]
    fn a_range_ref_date_the_old_value_field_and_odd_shapes_are_read() {
        // The 7-day call of 2017-06-17 (a Saturday: not a natural week).
        let call = UserPortrait
            .calls(
                Period::parse_ref_date("20170617").unwrap(),
                &Settings::default(),
            )
            .remove(1);
        let body = serde_json::json!({"ref_date": "20170611-20170617",
            "visit_uv_new": [], "visit_uv": {"city": [{"name": "杭州", "access_source_visit_uv": 9},
            {"name": "杭州", "value": 3}, {"value": 5}, {"name": "x", "value": "n/a"}], "ages": "none"}});
        let read = UserPortrait.parse_json(&call, body).unwrap().unwrap();
        assert_eq!(entries(&read.active, "city"), [("杭州".to_string(), 9.0)]);
        assert!(read.new.is_empty());
        let wrong = serde_json::json!({"ref_date": "20170610-20170616", "visit_uv": {"city": [{"name": "a", "value": 1}]}});
        assert!(matches!(
            UserPortrait.parse_json(&call, wrong),
            Err(WeChatError::Decode(_))
        ));
    }

    #[test]
    fn empty_halves_mean_not_ready() {
        let body = r#"{"ref_date":"20170611","visit_uv_new":{},"visit_uv":{"province":[]}}"#;
        assert_eq!(portrait(body), None);
    }

    #[test]
    fn only_the_largest_entries_are_kept_and_names_are_bounded() {
        let many: Vec<Value> = (0..300)
            .map(|n| json!({"name": format!("city{n:03}"), "value": n}))
            .collect();
        let long = "长".repeat(5000);
        let body = json!({"ref_date": "20170611", "visit_uv": {"city": many, "devices": [{"name": long, "value": 1}]}});
        let read = portrait(&body.to_string()).unwrap();
        let reports = Settings {
            portrait_top: 5,
            portrait_ranges: vec![1],
            ..Settings::default()
        };
        let period = Period::parse_ref_date("20170611").unwrap();
        let kept = UserPortrait.snapshot(period, &[Some(&read)], &reports);
        let text = rendered(&UserPortrait, kept);
        let cities: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("dimension=\"city\""))
            .collect();
        assert_eq!(cities.len(), 5);
        assert!(
            cities[0].contains(
                "range=\"1d\",cohort=\"active\",dimension=\"city\",name=\"city299\"} 299"
            ),
            "{}",
            cities[0]
        );
        let device = text
            .lines()
            .find(|l| l.contains("dimension=\"device\""))
            .unwrap();
        assert_eq!(device.chars().filter(|c| *c == '长').count(), NAME_LENGTH);
    }
}
