//! JS errors (`wxaapi/log/jserr_list`): how many error groups a day had, by type (app code,
//! plugin, framework), and the groups with the most pv.
//!
//! One call per type and page of 30 (WeChat refuses a larger `limit`), ordered by pv,
//! descending, until `reports.js_errors_top` groups are covered. A group is named by the
//! first 12 hex digits of its `errorMsgMd5`; its message, free text, is exported only as a
//! short excerpt (first line, 100 characters) in `js_error_info`. Details and real-time logs
//! carry personal data and are never fetched.

use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{Family, ReportSpec};
use crate::exposition::{bounded_label, Samples};
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, Model, Refusal, Request};
use crate::wechat::wire::{note, Answer, Dropped, Num};
use crate::wechat::{Call, WeChatError};

/// The JS errors report.
pub struct JsErrors;

/// The error types: WeChat's `errType` and the `error_type` label.
const TYPES: [(u32, &str); 3] = [(1, "app"), (2, "plugin"), (3, "framework")];

/// The most groups WeChat answers per call.
const PAGE: usize = 30;

/// The longest message excerpt exported, in characters.
const MESSAGE_LENGTH: usize = 100;

/// One error group.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The first 12 hex digits of `errorMsgMd5`.
    pub id: String,
    /// The first line of `errorMsg`, cut to 100 characters.
    pub message: String,
    /// Occurrences on the day.
    pub pv: Option<f64>,
    /// Users who hit it on the day.
    pub uv: Option<f64>,
}

/// One page of groups of one type.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorPage {
    /// `totalCount`: the groups of the type on the day.
    pub total: Option<f64>,
    /// The groups of the page.
    pub groups: Vec<Group>,
}

/// What is exported of a day, per type: (label, groups in all, the top groups).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Errors {
    /// (error_type, totalCount, the groups with the most pv, most first).
    pub types: Vec<(&'static str, Option<f64>, Vec<Group>)>,
}

#[derive(Deserialize)]
struct ListAnswer {
    #[serde(default)]
    data: Vec<GroupWire>,
    #[serde(rename = "totalCount", default)]
    total_count: Num,
}

#[derive(Deserialize)]
struct GroupWire {
    #[serde(rename = "errorMsgMd5", default)]
    error_msg_md5: Option<String>,
    #[serde(rename = "errorMsg", default)]
    error_msg: Option<String>,
    #[serde(default)]
    pv: Num,
    #[serde(default)]
    uv: Num,
}

/// The `error_id` of a group: the first 12 hex digits of its md5, lower case.
fn error_id(md5: &str) -> Option<String> {
    let id: String = md5.trim().chars().take(12).collect();
    (id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

fn group(wire: GroupWire) -> Option<Group> {
    let id = error_id(wire.error_msg_md5.as_deref()?)?;
    let text = wire.error_msg.unwrap_or_default();
    let first_line = text.lines().next().unwrap_or_default().trim();
    let count = |n: Num| n.0.filter(|n| *n >= 0.0);
    Some(Group {
        id,
        message: bounded_label(first_line, MESSAGE_LENGTH),
        pv: count(wire.pv),
        uv: count(wire.uv),
    })
}

/// The call of one page of one type for `period`.
fn call(period: Period, error_type: u32, page: usize, top: usize) -> Call {
    let day = period.start().format("%Y-%m-%d").to_string();
    let body = json!({
        "appVersion": "0",
        "errType": error_type.to_string(),
        "startTime": day,
        "endTime": day,
        "keyword": "",
        "openid": "",
        "orderby": "pv",
        "desc": "1",
        "offset": page * PAGE,
        "limit": (top - page * PAGE).min(PAGE),
    });
    Call {
        asks: period,
        path: "wxaapi/log/jserr_list",
        part: error_type * 100 + page as u32,
        body: body.to_string(),
    }
}

fn labelled<'a>(error_type: &'a str, group: &'a Group) -> [(&'static str, &'a str); 2] {
    [("error_type", error_type), ("error_id", &group.id)]
}

fn totals(errors: &Errors, _: PeriodKind, out: &mut Samples<'_>) {
    for (error_type, total, _) in &errors.types {
        if let Some(total) = total {
            out.sample(&[("error_type", error_type)], *total);
        }
    }
}

fn each_group(
    errors: &Errors,
    out: &mut Samples<'_>,
    mut write: impl FnMut(&str, &Group, &mut Samples<'_>),
) {
    for (error_type, _, groups) in &errors.types {
        for group in groups {
            write(error_type, group, out);
        }
    }
}

impl ReportSpec for JsErrors {
    type Piece = ErrorPage;
    type Snapshot = Errors;

    const NAME: &'static str = "js_errors";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const FAMILIES: &'static [Family<Errors>] = &[
        Family {
            name: "wechat_miniprogram_js_error_groups",
            help: "JS error groups of the day by type (app, plugin, framework): totalCount of jserr_list.",
            samples: totals,
        },
        Family {
            name: "wechat_miniprogram_js_error_pv",
            help: "Occurrences on the day of a JS error group with the most pv (error_id: the first 12 hex digits of errorMsgMd5).",
            samples: |errors, _, out| {
                each_group(errors, out, |error_type, group, out| {
                    if let Some(pv) = group.pv {
                        out.sample(&labelled(error_type, group), pv);
                    }
                })
            },
        },
        Family {
            name: "wechat_miniprogram_js_error_uv",
            help: "Users who hit a JS error group with the most pv on the day.",
            samples: |errors, _, out| {
                each_group(errors, out, |error_type, group, out| {
                    if let Some(uv) = group.uv {
                        out.sample(&labelled(error_type, group), uv);
                    }
                })
            },
        },
        Family {
            name: "wechat_miniprogram_js_error_info",
            help: "The message of a JS error group with the most pv (its first line, cut to 100 characters); always 1.",
            samples: |errors, _, out| {
                each_group(errors, out, |error_type, group, out| {
                    let [kind, id] = labelled(error_type, group);
                    out.sample(&[kind, id, ("message", &group.message)], 1.0);
                })
            },
        },
    ];

    fn path(&self, _: PeriodKind) -> &'static str {
        "wxaapi/log/jserr_list"
    }

    fn max_series(&self, _: PeriodKind, reports: &Settings) -> usize {
        // The group count per type, and pv, uv and the message of each group kept.
        TYPES.len() * (1 + 3 * reports.js_errors_top)
    }

    fn calls(&self, period: Period, reports: &Settings) -> Vec<Call> {
        let top = reports.js_errors_top.max(1);
        let pages = top.div_ceil(PAGE);
        let types = TYPES.iter();
        types
            .flat_map(|(error_type, _)| {
                (0..pages).map(move |page| call(period, *error_type, page, top))
            })
            .collect()
    }

    fn parse(&self, _: &Call, answer: Answer<'_>) -> Result<Option<ErrorPage>, WeChatError> {
        let answer: ListAnswer = answer.read()?;
        let total = answer.total_count.0.filter(|total| *total >= 0.0);
        if total.is_none() && answer.data.is_empty() {
            return Ok(None);
        }
        let mut groups: Vec<Group> = Vec::new();
        for group in answer.data.into_iter().filter_map(group) {
            if groups.iter().any(|kept| kept.id == group.id) {
                note(Dropped::Duplicate);
            } else {
                groups.push(group);
            }
        }
        Ok(Some(ErrorPage { total, groups }))
    }

    fn snapshot(
        &self,
        period: Period,
        pieces: &[Option<&ErrorPage>],
        reports: &Settings,
    ) -> Errors {
        let calls = self.calls(period, reports);
        let types = TYPES.iter().map(|(error_type, label)| {
            let pages: Vec<&ErrorPage> = calls
                .iter()
                .zip(pieces)
                .filter(|(call, _)| call.part / 100 == *error_type)
                .filter_map(|(_, page)| *page)
                .collect();
            let total = pages.first().and_then(|page| page.total);
            let groups = pages.iter().flat_map(|page| page.groups.iter().cloned());
            (*label, total, top(groups.collect(), reports.js_errors_top))
        });
        Errors {
            types: types
                .filter(|(_, total, groups)| total.is_some() || !groups.is_empty())
                .collect(),
        }
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let body = request.body;
        let text = |key: &str| body.get(key).and_then(Value::as_str);
        let day = |key: &str| text(key).and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok());
        let (Some(start), Some(end)) = (day("startTime"), day("endTime")) else {
            return Err((61500, "date format error"));
        };
        let error_type = text("errType")
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| *t <= 3);
        let number = |key: &str| body.get(key).and_then(Value::as_u64);
        let (Some(error_type), Some(offset), Some(limit)) =
            (error_type, number("offset"), number("limit"))
        else {
            return Err((47001, "data format error"));
        };
        if limit > PAGE as u64 {
            return Err((40097, "invalid args: limit must not exceed 30"));
        }
        if start != end {
            return Err((61501, "date range error"));
        }
        let period = Period::containing(PeriodKind::Daily, start);
        let empty = || json!({"success": true, "data": [], "totalCount": 0, "errcode": 0});
        request.publish(
            period,
            || simulated(&request.model, start, error_type, offset, limit),
            empty,
        )
    }
}

/// The `n` groups with the most pv, most first (ties by id), each id once.
fn top(mut groups: Vec<Group>, n: usize) -> Vec<Group> {
    let pv = |group: &Group| group.pv.unwrap_or(f64::NEG_INFINITY);
    groups.sort_by(|a, b| pv(b).total_cmp(&pv(a)).then_with(|| a.id.cmp(&b.id)));
    let mut seen = std::collections::HashSet::new();
    groups.retain(|group| seen.insert(group.id.clone()));
    groups.truncate(n);
    groups
}

/// The simulated groups of a type on a day, by pv: 45 groups of the app's own code, none of
/// plugins, 4 of the framework; messages with quotes, backslashes and stack lines.
fn simulated(model: &Model, day: NaiveDate, error_type: u32, offset: u64, limit: u64) -> Value {
    let count = match error_type {
        1 => 45,
        2 => 0,
        3 => 4,
        _ => 49,
    };
    let visitors = model.day(day).visitors;
    let mut groups: Vec<(f64, Value)> = (0..count)
        .map(|n| {
            let salt = format!("jserr{error_type}-{n}");
            let share = 0.02 / (n as f64 + 1.0) * noise(&model.app.appid, day, &salt, 0.3);
            let pv = (visitors * share).round().max(1.0);
            let uv = (pv * 0.6).round().max(1.0);
            let message = MESSAGES[n % MESSAGES.len()].replace("{n}", &n.to_string());
            let md5 = format!("{:08x}{:024x}", 0x5eed_0000 + error_type * 1000 + n as u32, n);
            let group = json!({
                "errorMsgMd5": md5, "errorMsg": message, "uv": uv as i64, "pv": pv as i64,
                "errorStackMd5": md5, "errorStack": format!("{message}\n    at appservice.js:{n}:17"),
                "pvPercent": format!("{:.1}%", share * 100.0), "uvPercent": format!("{:.1}%", share * 60.0),
            });
            (pv, group)
        })
        .collect();
    groups.sort_by(|a, b| b.0.total_cmp(&a.0));
    let page: Vec<Value> = groups
        .into_iter()
        .map(|(_, group)| group)
        .skip(offset as usize)
        .take(limit as usize)
        .collect();
    json!({"success": true, "data": page, "totalCount": count, "errcode": 0})
}

/// Simulation: messages as apps throw them.
const MESSAGES: [&str; 5] = [
    "TypeError: Cannot read property 'length' of undefined\n    at pages/cart/cart.js:{n}:5",
    "SyntaxError: Unexpected token \" in JSON at position {n}",
    "Error: file C:\\tmp\\upload{n}.png not found",
    "MiniProgramError: request:fail timeout {n}\r\n    at wx.request",
    "ReferenceError: goods{n} is not defined",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{parsed, rendered, ParseJson};

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    #[test]
    fn the_documented_example_is_read() {
        let body = r#"{"success":true,"data":[{"errorMsgMd5":"a8d4ea4b2e2d40a1b3c19ca2a4b8ed69",
            "errorMsg":"thirdScriptError\nCannot read property 'length' of undefined","uv":1,"pv":2,
            "errorStackMd5":"fffff","errorStack":"at x","pvPercent":"0.1%","uvPercent":"1.1%"}],
            "totalCount":739,"errcode":0}"#;
        let page = parsed(&JsErrors, "20210125", body).unwrap().unwrap();
        assert_eq!(page.total, Some(739.0));
        assert_eq!(
            page.groups,
            [Group {
                id: "a8d4ea4b2e2d".into(),
                message: "thirdScriptError".into(),
                pv: Some(2.0),
                uv: Some(1.0),
            }]
        );
    }

    #[test]
    fn calls_ask_by_pv_thirty_at_most_with_dashed_dates() {
        let reports = Settings {
            js_errors_top: 45,
            ..Settings::default()
        };
        let calls = JsErrors.calls(day("20210125"), &reports);
        assert_eq!(calls.len(), 3 * 2);
        let body: Value = serde_json::from_str(&calls[1].body).unwrap();
        assert_eq!(body["errType"], "1");
        assert_eq!(body["startTime"], "2021-01-25");
        assert_eq!(
            (body["orderby"].as_str(), body["desc"].as_str()),
            (Some("pv"), Some("1"))
        );
        assert_eq!(
            (body["offset"].as_u64(), body["limit"].as_u64()),
            (Some(30), Some(15))
        );
    }

    #[test]
    fn the_simulation_refuses_more_than_thirty_and_follows_the_weekly_rhythm() {
        let app = crate::simulated::SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "s", 10_000.0);
        let answer = |date: &str, limit: u64| {
            let mut body: Value =
                serde_json::from_str(&JsErrors.calls(day(date), &Settings::default())[0].body)
                    .unwrap();
            body["limit"] = json!(limit);
            let request = Request {
                model: Model { app: &app },
                kind: PeriodKind::Daily,
                body: &body,
                now: chrono::DateTime::parse_from_rfc3339("2024-07-01T12:00:00+08:00")
                    .unwrap()
                    .to_utc(),
            };
            JsErrors.simulate(&request)
        };
        assert_eq!(answer("20240615", 31).unwrap_err().0, 40097);
        let pv = |date: &str| answer(date, 30).unwrap()["data"][0]["pv"].as_f64().unwrap();
        // Saturday against the Monday before: more visitors, more errors.
        assert!(pv("20240615") > pv("20240610"));
        assert_eq!(
            answer("20240615", 30).unwrap()["data"]
                .as_array()
                .unwrap()
                .len(),
            30
        );
        assert_eq!(answer("20240615", 30).unwrap()["totalCount"], 45);
    }

    #[test]
    fn no_errors_is_a_count_of_zero_and_no_count_is_not_ready() {
        let zero = r#"{"success":true,"data":[],"totalCount":0,"errcode":0}"#;
        let page = parsed(&JsErrors, "20210125", zero).unwrap().unwrap();
        assert_eq!(page.total, Some(0.0));
        let nothing = r#"{"success":true,"data":[]}"#;
        assert_eq!(parsed(&JsErrors, "20210125", nothing), Ok(None));
    }

    #[test]
    fn hostile_messages_give_valid_bounded_labels_and_ids_are_checked() {
        let long = "x".repeat(10_000);
        let answer = json!({"totalCount": 3, "data": [
            {"errorMsgMd5": "0123456789ABCDEF", "errorMsg": format!("quote \" back \\ {long}\nsecond line"), "pv": 5, "uv": 1},
            {"errorMsgMd5": "not-hex-at-all!!", "errorMsg": "dropped", "pv": 9},
            {"errorMsgMd5": "0123456789abcdef99", "errorMsg": "same id, fewer pv", "pv": 1},
        ]});
        let call = &JsErrors.calls(day("20210125"), &Settings::default())[0];
        let page = JsErrors.parse_json(call, answer).unwrap().unwrap();
        let errors = JsErrors.snapshot(day("20210125"), &[Some(&page)], &Settings::default());
        let text = rendered(&JsErrors, errors);
        let info: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wechat_miniprogram_js_error_info{"))
            .collect();
        assert_eq!(info.len(), 1, "{text}");
        assert!(
            info[0].contains("error_id=\"0123456789ab\",message=\"quote \\\" back \\\\ xxx"),
            "{}",
            info[0]
        );
        assert!(info[0].len() < 250, "{}", info[0]);
        assert!(text.contains("wechat_miniprogram_js_error_groups{appid=\"wx1234567890abcdef\",app=\"shop\",error_type=\"app\"} 3\n"));
        assert!(text.contains("wechat_miniprogram_js_error_pv{appid=\"wx1234567890abcdef\",app=\"shop\",error_type=\"app\",error_id=\"0123456789ab\"} 5\n"));
    }
}
