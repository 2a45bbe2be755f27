//! WeChat's wire format, private to the client: JSON in, domain types out.
//!
//! Parsing is lenient where WeChat is loose and strict where it matters. Any numeric field may
//! be missing, `null`, a float written as an integer (`"stay_time_session": 211`) or a numeric
//! string; a field that cannot be read becomes `None`, never 0, and never fails the report.
//! `errcode` may be a number or a string. An empty list (or 61503) means "not published yet".
//! A body that is not JSON, or an answer for another period, is a decode error.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    Answer, Data, Distribution, DistributionItem, Page, Report, Retention, Trend, WeChatError,
};
use crate::period::Period;

/// The errcode WeChat uses for "data not ready".
const NOT_READY: i64 = 61503;

/// A number as WeChat may write it; anything unreadable is `None`.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Num(Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Num(number(&Value::deserialize(deserializer)?)))
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|number| number.is_finite())
}

/// An access-token answer, from WeChat or from an external token service.
#[derive(Deserialize)]
pub(super) struct TokenAnswer {
    #[serde(default)]
    pub access_token: Option<String>,
    #[serde(default)]
    pub expires_in: Num,
}

impl TokenAnswer {
    /// A bare token with no lifetime, as a plain token file holds it.
    pub fn bare(token: &str) -> TokenAnswer {
        TokenAnswer {
            access_token: Some(token.to_string()),
            expires_in: Num(None),
        }
    }

    /// The lifetime WeChat granted, in seconds, if it said one.
    pub fn expires_in(&self) -> Option<u64> {
        self.expires_in
            .0
            .filter(|seconds| *seconds > 0.0)
            .map(|seconds| seconds as u64)
    }
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

#[derive(Deserialize)]
struct KeyValue {
    #[serde(default)]
    key: Num,
    #[serde(default)]
    value: Num,
}

#[derive(Deserialize)]
struct RetentionAnswer {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    visit_uv_new: Vec<KeyValue>,
    #[serde(default)]
    visit_uv: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct DistributionItemWire {
    #[serde(default)]
    key: Num,
    #[serde(default)]
    value: Num,
    #[serde(default)]
    access_source_visit_uv: Num,
}

#[derive(Deserialize)]
struct DistributionIndexWire {
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    item_list: Vec<DistributionItemWire>,
}

#[derive(Deserialize)]
struct DistributionAnswer {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    list: Vec<DistributionIndexWire>,
}

#[derive(Deserialize)]
struct PageWire {
    #[serde(default)]
    page_path: Option<String>,
    #[serde(default)]
    page_visit_pv: Num,
    #[serde(default)]
    page_visit_uv: Num,
    #[serde(default)]
    page_staytime_pv: Num,
    #[serde(default)]
    entrypage_pv: Num,
    #[serde(default)]
    exitpage_pv: Num,
    #[serde(default)]
    page_share_pv: Num,
    #[serde(default)]
    page_share_uv: Num,
}

#[derive(Deserialize)]
struct PageAnswer {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    list: Vec<PageWire>,
}

/// Reads a body as a JSON object; anything else (HTML, truncated JSON, an array) is a decode
/// error.
fn object(body: &[u8]) -> Result<Value, WeChatError> {
    match serde_json::from_slice(body).map_err(decode_error)? {
        value @ Value::Object(_) => Ok(value),
        other => Err(WeChatError::Decode(format!(
            "expected a JSON object, got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the errcode of an answer: `Err` for a non-zero one, `Ok(true)` for "not ready".
fn check_errcode(answer: &Value) -> Result<bool, WeChatError> {
    let errcode = answer
        .get("errcode")
        .and_then(number)
        .map(|code| code as i64);
    match errcode {
        None | Some(0) => Ok(false),
        Some(NOT_READY) => Ok(true),
        Some(errcode) => Err(WeChatError::Api {
            errcode,
            errmsg: match answer.get("errmsg") {
                Some(Value::String(text)) => text.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            },
        }),
    }
}

fn read<T: serde::de::DeserializeOwned>(answer: Value) -> Result<T, WeChatError> {
    serde_json::from_value(answer).map_err(decode_error)
}

/// Parses a token answer, or the errcode it carries.
pub(super) fn parse_token(body: &[u8]) -> Result<TokenAnswer, WeChatError> {
    let answer = object(body)?;
    check_errcode(&answer)?;
    read(answer)
}

fn decode_error(error: serde_json::Error) -> WeChatError {
    WeChatError::Decode(error.to_string())
}

/// Checks that an answer's `ref_date`, when present, names the period asked for.
fn check_ref_date(ref_date: Option<&str>, period: Period) -> Result<(), WeChatError> {
    match ref_date {
        Some(text) if Period::parse_ref_date(text) != Some(period) => Err(WeChatError::Decode(
            format!("answer is for ref_date {text:?}, not {}", period.ref_date()),
        )),
        _ => Ok(()),
    }
}

/// Parses the answer to a datacube call for `report` and `period`.
pub(super) fn parse_answer(
    report: Report,
    period: Period,
    body: &[u8],
) -> Result<Answer, WeChatError> {
    let answer = object(body)?;
    if check_errcode(&answer)? {
        return Ok(Answer::NotReady);
    }
    let data = match report {
        Report::VisitTrend => {
            let answer: TrendAnswer = read(answer)?;
            let mut items = answer.list.into_iter();
            let Some(item) = items.next() else {
                return Ok(Answer::NotReady);
            };
            check_ref_date(item.ref_date.as_deref(), period)?;
            Data::Trend(Trend {
                session_cnt: item.session_cnt.0,
                visit_pv: item.visit_pv.0,
                visit_uv: item.visit_uv.0,
                visit_uv_new: item.visit_uv_new.0,
                stay_time_uv: item.stay_time_uv.0,
                stay_time_session: item.stay_time_session.0,
                visit_depth: item.visit_depth.0,
            })
        }
        Report::Retention => {
            let answer: RetentionAnswer = read(answer)?;
            if answer.visit_uv_new.is_empty() && answer.visit_uv.is_empty() {
                return Ok(Answer::NotReady);
            }
            check_ref_date(answer.ref_date.as_deref(), period)?;
            Data::Retention(Retention {
                new: retention_keys(answer.visit_uv_new),
                active: retention_keys(answer.visit_uv),
            })
        }
        Report::VisitDistribution => {
            let answer: DistributionAnswer = read(answer)?;
            if answer.list.is_empty() {
                return Ok(Answer::NotReady);
            }
            check_ref_date(answer.ref_date.as_deref(), period)?;
            let mut indexes: BTreeMap<String, Vec<DistributionItem>> = BTreeMap::new();
            for index in answer.list {
                let Some(name) = index.index else { continue };
                let items = indexes.entry(name).or_default();
                items.extend(index.item_list.into_iter().filter_map(|item| {
                    Some(DistributionItem {
                        key: integer(item.key.0)?,
                        value: item.value.0,
                        visit_uv: item.access_source_visit_uv.0,
                    })
                }));
            }
            Data::Distribution(Distribution { indexes })
        }
        Report::VisitPage => {
            let answer: PageAnswer = read(answer)?;
            if answer.list.is_empty() {
                return Ok(Answer::NotReady);
            }
            check_ref_date(answer.ref_date.as_deref(), period)?;
            Data::Pages(
                answer
                    .list
                    .into_iter()
                    .filter_map(|page| {
                        Some(Page {
                            path: page.page_path.filter(|path| !path.is_empty())?,
                            visit_pv: page.page_visit_pv.0,
                            visit_uv: page.page_visit_uv.0,
                            staytime_pv: page.page_staytime_pv.0,
                            entry_pv: page.entrypage_pv.0,
                            exit_pv: page.exitpage_pv.0,
                            share_pv: page.page_share_pv.0,
                            share_uv: page.page_share_uv.0,
                        })
                    })
                    .collect(),
            )
        }
    };
    Ok(Answer::Ready(data))
}

/// A whole number, if `value` is one.
fn integer(value: Option<f64>) -> Option<i64> {
    value.filter(|v| v.fract() == 0.0).map(|v| v as i64)
}

fn retention_keys(list: Vec<KeyValue>) -> BTreeMap<u32, f64> {
    list.into_iter()
        .filter_map(|item| {
            let key = u32::try_from(integer(item.key.0)?).ok()?;
            Some((key, item.value.0?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(ref_date: &str) -> Period {
        Period::parse_ref_date(ref_date).unwrap()
    }

    fn parse(report: Report, ref_date: &str, body: &str) -> Result<Answer, WeChatError> {
        parse_answer(report, period(ref_date), body.as_bytes())
    }

    fn ready(report: Report, ref_date: &str, body: &str) -> Data {
        match parse(report, ref_date, body) {
            Ok(Answer::Ready(data)) => data,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn daily_trend_seed_example() {
        let body = r#"{"list":[{"ref_date":"20170313","session_cnt":142549,"visit_pv":472351,
            "visit_uv":55500,"visit_uv_new":5464,"stay_time_session":0,"visit_depth":1.9838}]}"#;
        let Data::Trend(trend) = ready(Report::VisitTrend, "20170313", body) else {
            panic!()
        };
        assert_eq!(
            trend,
            Trend {
                session_cnt: Some(142549.0),
                visit_pv: Some(472351.0),
                visit_uv: Some(55500.0),
                visit_uv_new: Some(5464.0),
                // The seed leaves stay_time_uv out: missing, not zero.
                stay_time_uv: None,
                stay_time_session: Some(0.0),
                visit_depth: Some(1.9838),
            }
        );
    }

    #[test]
    fn weekly_and_monthly_trend_seed_examples() {
        let weekly = r#"{"list":[{"ref_date":"20170306-20170312","session_cnt":986780,"visit_pv":3251840,
            "visit_uv":189405,"visit_uv_new":45592,"stay_time_session":54.5346,"visit_depth":1.9735}]}"#;
        let Data::Trend(trend) = ready(Report::VisitTrend, "20170306-20170312", weekly) else {
            panic!()
        };
        assert_eq!(trend.visit_uv, Some(189405.0));
        assert_eq!(trend.stay_time_session, Some(54.5346));
        let monthly = r#"{"list":[{"ref_date":"201702","session_cnt":126513,"visit_pv":426113,
            "visit_uv":48659,"visit_uv_new":6726,"stay_time_session":56.4112,"visit_depth":2.0189}]}"#;
        let Data::Trend(trend) = ready(Report::VisitTrend, "201702", monthly) else {
            panic!()
        };
        assert_eq!(trend.visit_depth, Some(2.0189));
    }

    #[test]
    fn float_fields_written_as_integers_and_strings_are_read() {
        let body = r#"{"list":[{"ref_date":"20170313","stay_time_session":211,"stay_time_uv":"12.5",
            "visit_depth":null,"visit_uv":"n/a"}]}"#;
        let Data::Trend(trend) = ready(Report::VisitTrend, "20170313", body) else {
            panic!()
        };
        assert_eq!(trend.stay_time_session, Some(211.0));
        assert_eq!(trend.stay_time_uv, Some(12.5));
        assert_eq!(trend.visit_depth, None);
        assert_eq!(trend.visit_uv, None);
        assert_eq!(trend.session_cnt, None);
    }

    #[test]
    fn empty_lists_mean_not_ready() {
        assert_eq!(
            parse(Report::VisitTrend, "20170313", r#"{"list":[]}"#),
            Ok(Answer::NotReady)
        );
        assert_eq!(
            parse(Report::VisitTrend, "20170313", r#"{}"#),
            Ok(Answer::NotReady)
        );
        assert_eq!(
            parse(
                Report::VisitPage,
                "20170313",
                r#"{"ref_date":"20170313","list":[]}"#
            ),
            Ok(Answer::NotReady)
        );
        assert_eq!(
            parse(Report::VisitDistribution, "20170313", r#"{"list":[]}"#),
            Ok(Answer::NotReady)
        );
        assert_eq!(
            parse(
                Report::Retention,
                "20170313",
                r#"{"ref_date":"20170313","visit_uv_new":[],"visit_uv":[]}"#
            ),
            Ok(Answer::NotReady)
        );
    }

    #[test]
    fn errcode_61503_means_not_ready_and_may_be_a_string() {
        assert_eq!(
            parse(
                Report::VisitTrend,
                "20170313",
                r#"{"errcode":61503,"errmsg":"data not ready"}"#
            ),
            Ok(Answer::NotReady)
        );
        assert_eq!(
            parse(Report::Retention, "20170313", r#"{"errcode":"61503"}"#),
            Ok(Answer::NotReady)
        );
    }

    #[test]
    fn errcodes_become_errors_whether_number_or_string() {
        for body in [
            r#"{"errcode":40001,"errmsg":"invalid credential"}"#,
            r#"{"errcode":"40001","errmsg":"invalid credential"}"#,
        ] {
            assert_eq!(
                parse(Report::VisitTrend, "20170313", body),
                Err(WeChatError::Api {
                    errcode: 40001,
                    errmsg: "invalid credential".into()
                })
            );
        }
        assert!(matches!(
            parse(Report::VisitPage, "20170313", r#"{"errcode":-1}"#),
            Err(WeChatError::Api { errcode: -1, .. })
        ));
        // errcode 0 with data is a success.
        let body = r#"{"errcode":0,"errmsg":"ok","list":[{"ref_date":"20170313","visit_uv":5}]}"#;
        assert!(matches!(
            parse(Report::VisitTrend, "20170313", body),
            Ok(Answer::Ready(_))
        ));
    }

    #[test]
    fn garbage_and_truncated_bodies_are_decode_errors() {
        for body in [
            "<html>502 Bad Gateway</html>",
            r#"{"list":[{"ref_date":"2017"#,
            "",
            "[1,2]",
        ] {
            assert!(
                matches!(
                    parse(Report::VisitTrend, "20170313", body),
                    Err(WeChatError::Decode(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn an_answer_for_another_period_is_refused() {
        let body = r#"{"list":[{"ref_date":"20170312","visit_uv":5}]}"#;
        assert!(matches!(
            parse(Report::VisitTrend, "20170313", body),
            Err(WeChatError::Decode(_))
        ));
    }

    #[test]
    fn retention_seed_examples() {
        let daily = r#"{"ref_date":"20170313","visit_uv_new":[{"key":0,"value":5464}],"visit_uv":[{"key":0,"value":55500}]}"#;
        let Data::Retention(retention) = ready(Report::Retention, "20170313", daily) else {
            panic!()
        };
        assert_eq!(retention.new, BTreeMap::from([(0, 5464.0)]));
        assert_eq!(retention.active, BTreeMap::from([(0, 55500.0)]));

        let weekly = r#"{"ref_date":"20170306-20170312","visit_uv_new":[{"key":0,"value":0},{"key":1,"value":16853}],
            "visit_uv":[{"key":0,"value":0},{"key":1,"value":99310}]}"#;
        let Data::Retention(retention) = ready(Report::Retention, "20170306-20170312", weekly)
        else {
            panic!()
        };
        assert_eq!(retention.new, BTreeMap::from([(0, 0.0), (1, 16853.0)]));
        assert_eq!(retention.active.get(&1), Some(&99310.0));

        let monthly = r#"{"ref_date":"201702","visit_uv_new":[{"key":0,"value":346249}],"visit_uv":[{"key":0,"value":346249}]}"#;
        let Data::Retention(retention) = ready(Report::Retention, "201702", monthly) else {
            panic!()
        };
        assert_eq!(retention.new.get(&0), Some(&346249.0));
    }

    #[test]
    fn retention_items_without_a_usable_key_or_value_are_dropped() {
        let body = r#"{"visit_uv_new":[{"key":"1","value":3},{"key":-1,"value":3},{"key":2},{"value":9},{"key":1.5,"value":2}],"visit_uv":[]}"#;
        let Data::Retention(retention) = ready(Report::Retention, "20170313", body) else {
            panic!()
        };
        assert_eq!(retention.new, BTreeMap::from([(1, 3.0)]));
        assert!(retention.active.is_empty());
    }

    #[test]
    fn distribution_seed_example_with_an_unknown_index_and_the_visitor_index() {
        let body = r#"{"ref_date":"20170313","list":[
            {"index":"access_source_session_cnt","item_list":[{"key":10,"value":5},{"key":1,"value":116578,"access_source_visit_uv":100}]},
            {"index":"access_staytime_info","item_list":[{"key":8,"value":16329},{"key":1,"value":4511}]},
            {"index":"access_depth_info","item_list":[{"key":5,"value":217},{"key":1,"value":43201}]},
            {"index":"access_source_visit_uv","item_list":[{"key":1,"value":90000}]},
            {"index":"something_new","item_list":[{"key":99,"value":1}]},
            {"item_list":[{"key":1,"value":1}]}
        ]}"#;
        let Data::Distribution(distribution) = ready(Report::VisitDistribution, "20170313", body)
        else {
            panic!()
        };
        assert_eq!(distribution.indexes.len(), 5);
        let sources = &distribution.indexes["access_source_session_cnt"];
        assert_eq!(
            sources[1],
            DistributionItem {
                key: 1,
                value: Some(116578.0),
                visit_uv: Some(100.0)
            }
        );
        assert_eq!(sources[0].visit_uv, None);
        assert_eq!(distribution.indexes["something_new"][0].key, 99);
        assert_eq!(
            distribution.indexes["access_source_visit_uv"][0].value,
            Some(90000.0)
        );
    }

    #[test]
    fn visit_page_seed_example() {
        let body = r#"{"ref_date":"20170313","list":[
            {"page_path":"pages/main/main.html","page_visit_pv":213429,"page_visit_uv":55423,"page_staytime_pv":8.139198,
             "entrypage_pv":117922,"exitpage_pv":61304,"page_share_pv":180,"page_share_uv":166},
            {"page_path":"pages/search/search.html","page_visit_pv":65011,"page_visit_uv":24716,"page_staytime_pv":6.889634,
             "entrypage_pv":1811,"exitpage_pv":3198,"page_share_pv":0,"page_share_uv":0},
            {"page_visit_pv":1}
        ]}"#;
        let Data::Pages(pages) = ready(Report::VisitPage, "20170313", body) else {
            panic!()
        };
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].path, "pages/main/main.html");
        assert_eq!(pages[0].staytime_pv, Some(8.139198));
        assert_eq!(pages[1].share_uv, Some(0.0));
    }

    #[test]
    fn token_answers_are_read_and_token_errors_reported() {
        let token = parse_token(br#"{"access_token":"ACCESS","expires_in":7200}"#).unwrap();
        assert_eq!(token.access_token.as_deref(), Some("ACCESS"));
        assert_eq!(token.expires_in(), Some(7200));
        assert!(matches!(
            parse_token(br#"{"errcode":40125,"errmsg":"invalid appsecret"}"#),
            Err(WeChatError::Api { errcode: 40125, .. })
        ));
    }
}
