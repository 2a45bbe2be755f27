//! The visit distribution (`getweanalysisappidvisitdistribution`, daily): opens and visitors
//! by source group, visits by stay time and by depth.
//!
//! The answer is a list of indexes, each with items `{key, value}`. The keys of
//! `access_source_*` are source groups, which are exported with their name; stay-time and
//! depth keys are buckets. Unknown indexes are kept in the snapshot and not exported; unknown
//! keys are exported as `unknown`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{datacube, Family, ReportSpec};
use crate::exposition::Samples;
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, Model, Refusal, Request};
use crate::wechat::wire::{check_ref_date, integer, note, Answer, Dropped, Num};
use crate::wechat::{Call, WeChatError};

/// The visit distribution report.
pub struct VisitDistribution;

/// One item of a distribution: WeChat's key and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct DistributionItem {
    /// WeChat's key (a source group or a bucket number).
    pub key: i64,
    /// The item's value, when WeChat sent one.
    pub value: Option<f64>,
    /// The per-item `access_source_visit_uv` that old documentation describes.
    pub visit_uv: Option<f64>,
}

/// A daily visit distribution: index name (e.g. `access_staytime_info`) to its items.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    /// Every index WeChat sent, unknown ones included, with its items in WeChat's order.
    pub indexes: BTreeMap<String, Vec<DistributionItem>>,
}

#[derive(Deserialize)]
struct ItemWire {
    #[serde(default)]
    key: Num,
    #[serde(default)]
    value: Num,
    #[serde(default)]
    access_source_visit_uv: Num,
}

#[derive(Deserialize)]
struct IndexWire {
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    item_list: Vec<ItemWire>,
}

#[derive(Deserialize)]
struct DistributionAnswer {
    #[serde(default)]
    ref_date: Option<String>,
    #[serde(default)]
    list: Vec<IndexWire>,
}

/// The source group names of `access_source_*` keys, in snake_case: the seed's key table
/// (1..36) and the newer keys seen in the service's tables (12, 28, 37..57).
pub fn source_name(key: i64) -> &'static str {
    SOURCE_NAMES
        .iter()
        .find(|(known, _)| *known == key)
        .map_or("unknown", |(_, name)| name)
}

/// The source groups by key.
const SOURCE_NAMES: [(i64, &str); 57] = [
    (1, "history_list"),
    (2, "search"),
    (3, "chat"),
    (4, "scan_qr_code"),
    (5, "official_account_profile"),
    (6, "chat_top_bar"),
    (7, "system_desktop"),
    (8, "mini_program_profile"),
    (9, "nearby_mini_programs"),
    (10, "other"),
    (11, "template_message"),
    (12, "customer_service_message"),
    (13, "official_account_menu"),
    (14, "app_share"),
    (15, "payment_done_page"),
    (16, "long_press_qr_code"),
    (17, "qr_code_from_album"),
    (18, "official_account_article"),
    (19, "wallet"),
    (20, "card_bag"),
    (21, "card_in_mini_program"),
    (22, "other_mini_program"),
    (23, "back_from_other_mini_program"),
    (24, "card_store_list"),
    (25, "search_shortcut"),
    (26, "customer_service_message"),
    (27, "official_account_push"),
    (28, "chat_menu"),
    (29, "task_bar_recent"),
    (30, "menu_dot_long_press"),
    (31, "wifi_connected_page"),
    (32, "city_services"),
    (33, "wechat_ads"),
    (34, "other_mobile_app"),
    (35, "discover_my_mini_programs"),
    (36, "task_bar_my_mini_programs"),
    (37, "wechat_circles"),
    (38, "phone_top_up"),
    (39, "h5"),
    (40, "plugin"),
    (41, "people_are_using"),
    (42, "discover_page"),
    (43, "floating_window"),
    (44, "people_nearby"),
    (45, "top_stories"),
    (46, "moments"),
    (47, "wecom"),
    (48, "channels"),
    (49, "favorites"),
    (50, "red_packets"),
    (51, "game_center"),
    (52, "shake"),
    (53, "official_account_shopping_message"),
    (54, "scan_object"),
    (55, "mini_program_orders"),
    (56, "mini_program_live"),
    (57, "group_tools"),
];

/// The bucket of an `access_staytime_info` key.
pub fn stay_time_bucket(key: i64) -> &'static str {
    match key {
        1 => "0-2s",
        2 => "3-5s",
        3 => "6-10s",
        4 => "11-20s",
        5 => "20-30s",
        6 => "30-50s",
        7 => "50-100s",
        8 => ">100s",
        _ => "unknown",
    }
}

/// The bucket of an `access_depth_info` key.
pub fn depth_bucket(key: i64) -> &'static str {
    match key {
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        5 => "5",
        6 => "6-10",
        7 => ">10",
        _ => "unknown",
    }
}

impl Distribution {
    fn items(&self, index: &str) -> impl Iterator<Item = &DistributionItem> {
        self.indexes.get(index).into_iter().flatten()
    }

    /// Visitors by source: the service answers a separate index; old documentation
    /// describes a per-item field of the opens index.
    fn visitors_by_source(&self) -> Vec<(i64, f64)> {
        match self.indexes.get("access_source_visit_uv") {
            Some(items) => items
                .iter()
                .filter_map(|item| Some((item.key, item.value?)))
                .collect(),
            None => self
                .items("access_source_session_cnt")
                .filter_map(|item| Some((item.key, item.visit_uv?)))
                .collect(),
        }
    }
}

fn keyed(out: &mut Samples<'_>, key: i64, name: (&str, &str), value: f64) {
    out.sample(&[("key", &key.to_string()), name], value);
}

fn source_sessions(distribution: &Distribution, _: PeriodKind, out: &mut Samples<'_>) {
    for item in distribution.items("access_source_session_cnt") {
        if let Some(value) = item.value {
            keyed(out, item.key, ("source", source_name(item.key)), value);
        }
    }
}

fn source_visitors(distribution: &Distribution, _: PeriodKind, out: &mut Samples<'_>) {
    for (key, value) in distribution.visitors_by_source() {
        keyed(out, key, ("source", source_name(key)), value);
    }
}

fn buckets(
    distribution: &Distribution,
    index: &str,
    bucket: fn(i64) -> &'static str,
    out: &mut Samples<'_>,
) {
    for item in distribution.items(index) {
        if let Some(value) = item.value {
            keyed(out, item.key, ("bucket", bucket(item.key)), value);
        }
    }
}

impl ReportSpec for VisitDistribution {
    type Piece = Distribution;
    type Snapshot = Distribution;

    const NAME: &'static str = "visit_distribution";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const FAMILIES: &'static [Family<Distribution>] = &[
        Family {
            name: "wechat_miniprogram_access_source_sessions",
            help: "Opens on the day by source group (access_source_session_cnt; key is WeChat's, source its name).",
            samples: source_sessions,
        },
        Family {
            name: "wechat_miniprogram_access_source_uv",
            help: "Visitors on the day by source group (access_source_visit_uv).",
            samples: source_visitors,
        },
        Family {
            name: "wechat_miniprogram_stay_time_distribution",
            help: "Visits on the day by stay-time bucket (access_staytime_info).",
            samples: |distribution, _, out| {
                buckets(distribution, "access_staytime_info", stay_time_bucket, out)
            },
        },
        Family {
            name: "wechat_miniprogram_visit_depth_distribution",
            help: "Visits on the day by pages-visited bucket (access_depth_info).",
            samples: |distribution, _, out| {
                buckets(distribution, "access_depth_info", depth_bucket, out)
            },
        },
    ];

    fn path(&self, _: PeriodKind) -> &'static str {
        "datacube/getweanalysisappidvisitdistribution"
    }

    fn max_series(&self, _: PeriodKind, _: &Settings) -> usize {
        // Sessions and uv per documented source, a share per stay-time and depth bucket.
        2 * SOURCE_NAMES.len() + STAY.len() + DEPTH.len()
    }

    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        vec![datacube::call(self.path(period.kind()), period)]
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Distribution>, WeChatError> {
        let answer: DistributionAnswer = answer.read()?;
        if answer.list.is_empty() {
            return Ok(None);
        }
        check_ref_date(answer.ref_date.as_deref(), call.asks)?;
        let mut indexes: BTreeMap<String, Vec<DistributionItem>> = BTreeMap::new();
        for index in answer.list {
            let Some(name) = index.index else { continue };
            // An index or a key given twice: the first item of a key is kept.
            let items = indexes.entry(name).or_default();
            for item in index.item_list {
                let Some(key) = integer(item.key.0) else {
                    continue;
                };
                if items.iter().any(|kept| kept.key == key) {
                    note(Dropped::Duplicate);
                    continue;
                }
                items.push(DistributionItem {
                    key,
                    value: item.value.0,
                    visit_uv: item.access_source_visit_uv.0,
                });
            }
        }
        Ok(Some(Distribution { indexes }))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&Distribution>], _: &Settings) -> Distribution {
        pieces[0].cloned().unwrap_or_default()
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let answer = |model: &Model, period, now| self.answer(model, period, now);
        datacube::simulate(request, answer, |period| self.empty(period))
    }
}

impl VisitDistribution {
    /// Simulation: the published answer for `period`.
    fn answer(&self, model: &Model, period: Period, _: DateTime<Utc>) -> Value {
        let day = model.day(period.start());
        let appid = model.app.appid.as_str();
        let date = period.start();
        let split = |total: f64, weights: &[(i64, f64)], salt: &str| -> Vec<Value> {
            let raw: Vec<(i64, f64)> = weights
                .iter()
                .map(|(key, weight)| {
                    let jitter = noise(appid, date, &format!("{salt}{key}"), 0.15);
                    (*key, weight * jitter)
                })
                .collect();
            let sum: f64 = raw.iter().map(|(_, w)| w).sum();
            raw.iter()
                .map(|(key, weight)| json!({"key": key, "value": (total * weight / sum).round() as i64}))
                .collect()
        };
        json!({
            "ref_date": period.ref_date(),
            "list": [
                {"index": "access_source_session_cnt", "item_list": split(day.sessions, &SOURCES, "src")},
                {"index": "access_staytime_info", "item_list": split(day.sessions, &STAY, "stay")},
                {"index": "access_depth_info", "item_list": split(day.sessions, &DEPTH, "depth")},
                {"index": "access_source_visit_uv", "item_list": split(day.visitors, &SOURCES, "srcuv")},
            ]
        })
    }

    /// Simulation: the answer that holds nothing.
    fn empty(&self, period: Period) -> Value {
        json!({"ref_date": period.ref_date(), "list": []})
    }
}

/// Simulation: the share of each source group.
const SOURCES: [(i64, f64); 14] = [
    (1, 38.0),
    (2, 9.0),
    (3, 14.0),
    (4, 6.0),
    (5, 2.5),
    (6, 5.0),
    (7, 4.0),
    (8, 1.5),
    (10, 2.0),
    (11, 1.2),
    (14, 3.0),
    (18, 4.5),
    (22, 2.2),
    (33, 6.0),
];

/// Simulation: the share of each stay-time bucket.
const STAY: [(i64, f64); 8] = [
    (1, 8.0),
    (2, 11.0),
    (3, 15.0),
    (4, 19.0),
    (5, 14.0),
    (6, 13.0),
    (7, 11.0),
    (8, 9.0),
];

/// Simulation: the share of each depth bucket.
const DEPTH: [(i64, f64); 7] = [
    (1, 36.0),
    (2, 27.0),
    (3, 16.0),
    (4, 9.0),
    (5, 5.0),
    (6, 5.0),
    (7, 2.0),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{parsed, rendered};

    fn distribution(body: &str) -> Option<Distribution> {
        parsed(&VisitDistribution, "20170313", body).unwrap()
    }

    fn item(key: i64, value: f64) -> DistributionItem {
        DistributionItem {
            key,
            value: Some(value),
            visit_uv: None,
        }
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
        let distribution = distribution(body).unwrap();
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
    fn an_empty_list_means_not_ready() {
        assert_eq!(distribution(r#"{"list":[]}"#), None);
    }

    #[test]
    fn an_index_or_a_key_given_twice_keeps_the_first_item_and_counts_the_rest() {
        let body = r#"{"ref_date":"20170313","list":[
            {"index":"access_depth_info","item_list":[{"key":1,"value":10},{"key":1,"value":11}]},
            {"index":"access_depth_info","item_list":[{"key":1,"value":12},{"key":2,"value":20}]}
        ]}"#;
        let (parsed, tally) = crate::wechat::wire::tally(|| distribution(body));
        let depth = &parsed.unwrap().indexes["access_depth_info"];
        assert_eq!(*depth, vec![item(1, 10.0), item(2, 20.0)]);
        assert_eq!(tally.duplicate, 2);
    }

    #[test]
    fn distribution_keys_get_names_and_unknown_ones_are_kept_as_unknown() {
        let distribution = Distribution {
            indexes: BTreeMap::from([
                (
                    "access_source_session_cnt".to_string(),
                    vec![item(1, 10.0), item(99, 1.0)],
                ),
                ("access_source_visit_uv".to_string(), vec![item(1, 7.0)]),
                ("access_staytime_info".to_string(), vec![item(8, 5.0)]),
                ("access_depth_info".to_string(), vec![item(6, 4.0)]),
                ("brand_new_index".to_string(), vec![item(1, 3.0)]),
            ]),
        };
        let text = rendered(&VisitDistribution, distribution);
        for line in [
            "wechat_miniprogram_access_source_sessions{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"1\",source=\"history_list\"} 10",
            "wechat_miniprogram_access_source_sessions{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"99\",source=\"unknown\"} 1",
            "wechat_miniprogram_access_source_uv{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"1\",source=\"history_list\"} 7",
            "wechat_miniprogram_stay_time_distribution{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"8\",bucket=\">100s\"} 5",
            "wechat_miniprogram_visit_depth_distribution{appid=\"wx1234567890abcdef\",app=\"shop\",key=\"6\",bucket=\"6-10\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("brand_new_index"));
    }
}
