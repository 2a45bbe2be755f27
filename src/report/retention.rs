//! Retention (`getweanalysisapp{daily,weekly,monthly}retaininfo`): of the new and the active
//! users of a period (a cohort, key 0), how many came back k periods later (key k).
//!
//! WeChat answers one cohort per call, with every documented key, and sends the keys that
//! have not elapsed yet as 0. So the value of lag k is only known from the cohort k periods
//! back: a period's retention takes lag k from that cohort (key 0 and key k, nothing else),
//! one call per lag, the newest cohort first. Without the newest cohort the period is not
//! published; an older cohort with no data (the app is younger) leaves its lag out.

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

/// The retention report.
pub struct Retention;

/// The retention keys WeChat documents for each kind: days, weeks or months after the cohort.
pub fn lags(kind: PeriodKind) -> &'static [u32] {
    match kind {
        PeriodKind::Daily => &[0, 1, 2, 3, 4, 5, 6, 7, 14, 30],
        PeriodKind::Weekly => &[0, 1, 2, 3, 4],
        PeriodKind::Monthly => &[0, 1],
    }
}

/// One cohort's answer: key (periods after the cohort) to user count, for new and active
/// users. Key 0 is the cohort itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cohort {
    /// `visit_uv_new`: the cohort of new users.
    pub new: BTreeMap<u32, f64>,
    /// `visit_uv`: the cohort of active users.
    pub active: BTreeMap<u32, f64>,
}

/// The retention of one lag: from cohort `cohort`, its size (key 0) and how many came back
/// `lag` periods later (key `lag`), for new and for active users.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionLag {
    /// Periods after the cohort.
    pub lag: u32,
    /// The cohort the values come from: the period `lag` periods before the one held.
    pub cohort: Period,
    /// Key 0 and key `lag` of `visit_uv_new`.
    pub new: (Option<f64>, Option<f64>),
    /// Key 0 and key `lag` of `visit_uv`.
    pub active: (Option<f64>, Option<f64>),
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

/// The keys of one half of a cohort: a key given twice keeps its first value, and a key k
/// above a non-zero key 0 (more users came back than the cohort had) cannot be true and is
/// dropped. (WeChat's own weekly example has key 0 at 0 and key 1 above it: that is kept,
/// and no share is computed from it.)
fn keys(list: Vec<KeyValue>) -> BTreeMap<u32, f64> {
    let mut keys = BTreeMap::new();
    for item in list {
        let key = integer(item.key.0).and_then(|key| u32::try_from(key).ok());
        let (Some(key), Some(value)) = (key, item.value.0) else {
            continue;
        };
        if keys.contains_key(&key) {
            note(Dropped::Duplicate);
            continue;
        }
        keys.insert(key, value);
    }
    if let Some(&size) = keys.get(&0).filter(|size| **size > 0.0) {
        let before = keys.len();
        keys.retain(|&key, value| key == 0 || *value <= size);
        for _ in keys.len()..before {
            note(Dropped::Invalid);
        }
    }
    keys
}

/// Builds the per-lag retention of the period `held` from the cohort fetched for each lag.
///
/// Lag k takes key k (and key 0, the cohort size) of the cohort k periods before `held`, and
/// nothing else: a cohort too young to have a key never contributes it, even as a 0.
pub fn retention_view(held: Period, cohorts: &[(u32, Option<&Cohort>)]) -> Vec<RetentionLag> {
    cohorts
        .iter()
        .filter_map(|&(lag, cohort)| {
            let cohort_keys = cohort?;
            let pair = |keys: &BTreeMap<u32, f64>| (keys.get(&0).copied(), keys.get(&lag).copied());
            let view = RetentionLag {
                lag,
                cohort: held.back(lag),
                new: pair(&cohort_keys.new),
                active: pair(&cohort_keys.active),
            };
            (view.new.1.is_some() || view.active.1.is_some()).then_some(view)
        })
        .collect()
}

fn each_lag(
    lags: &[RetentionLag],
    kind: PeriodKind,
    out: &mut Samples<'_>,
    mut sample: impl FnMut(&RetentionLag, &[(&str, &str)], &mut Samples<'_>),
) {
    for lag in lags {
        let lag_text = lag.lag.to_string();
        sample(
            lag,
            &[("period", kind.as_str()), ("lag", lag_text.as_str())],
            out,
        );
    }
}

#[allow(clippy::ptr_arg)] // a family writes from the snapshot type itself
fn kept(lags: &Vec<RetentionLag>, kind: PeriodKind, out: &mut Samples<'_>) {
    each_lag(lags, kind, out, |lag, labels, out| {
        for (cohort, (_, kept)) in [("new", lag.new), ("active", lag.active)] {
            if let Some(kept) = kept {
                out.sample(&[labels[0], ("cohort", cohort), labels[1]], kept);
            }
        }
    });
}

#[allow(clippy::ptr_arg)] // a family writes from the snapshot type itself
fn ratio(lags: &Vec<RetentionLag>, kind: PeriodKind, out: &mut Samples<'_>) {
    each_lag(lags, kind, out, |lag, labels, out| {
        for (cohort, pair) in [("new", lag.new), ("active", lag.active)] {
            if let (Some(size), Some(kept)) = pair {
                if lag.lag >= 1 && size > 0.0 {
                    out.sample(&[labels[0], ("cohort", cohort), labels[1]], kept / size);
                }
            }
        }
    });
}

#[allow(clippy::ptr_arg)] // a family writes from the snapshot type itself
fn cohort_start(lags: &Vec<RetentionLag>, kind: PeriodKind, out: &mut Samples<'_>) {
    each_lag(lags, kind, out, |lag, labels, out| {
        out.sample(labels, lag.cohort.start_instant().timestamp() as f64);
    });
}

impl ReportSpec for Retention {
    type Piece = Cohort;
    type Snapshot = Vec<RetentionLag>;

    const NAME: &'static str = "retention";
    const KINDS: &'static [PeriodKind] = &PeriodKind::ALL;
    const FAMILIES: &'static [Family<Vec<RetentionLag>>] = &[
        Family {
            name: "wechat_miniprogram_retention_uv",
            help: "Users of a cohort (new: visit_uv_new, active: visit_uv) who came back lag periods later; lag 0 is the cohort size. Each lag comes from the newest cohort old enough to have it.",
            samples: kept,
        },
        Family {
            name: "wechat_miniprogram_retention_ratio",
            help: "Share (0-1) of a cohort that came back lag periods later: key lag / key 0 of the same cohort.",
            samples: ratio,
        },
        Family {
            name: "wechat_miniprogram_retention_cohort_timestamp_seconds",
            help: "Start (00:00 Beijing time) of the cohort whose retention is exported for this lag.",
            samples: cohort_start,
        },
    ];

    fn path(&self, kind: PeriodKind) -> &'static str {
        match kind {
            PeriodKind::Daily => "datacube/getweanalysisappiddailyretaininfo",
            PeriodKind::Weekly => "datacube/getweanalysisappidweeklyretaininfo",
            PeriodKind::Monthly => "datacube/getweanalysisappidmonthlyretaininfo",
        }
    }

    fn max_series(&self, kind: PeriodKind, _: &Settings) -> usize {
        // Per key: the uv of both cohorts and the cohort's start; the ratio of both beyond 0.
        let keys = lags(kind).len();
        2 * keys + keys + 2 * (keys - 1)
    }

    /// One call per lag, for its cohort; a cohort's call is the same whichever period asks
    /// it (`backfill` makes it once).
    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        let path = self.path(period.kind());
        lags(period.kind())
            .iter()
            .map(|&lag| datacube::call(path, period.back(lag)))
            .collect()
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Cohort>, WeChatError> {
        let answer: RetentionAnswer = answer.read()?;
        if answer.visit_uv_new.is_empty() && answer.visit_uv.is_empty() {
            return Ok(None);
        }
        check_ref_date(answer.ref_date.as_deref(), call.asks)?;
        Ok(Some(Cohort {
            new: keys(answer.visit_uv_new),
            active: keys(answer.visit_uv),
        }))
    }

    fn snapshot(
        &self,
        period: Period,
        pieces: &[Option<&Cohort>],
        _: &Settings,
    ) -> Vec<RetentionLag> {
        let cohorts: Vec<(u32, Option<&Cohort>)> = lags(period.kind())
            .iter()
            .copied()
            .zip(pieces.iter().copied())
            .collect();
        retention_view(period, &cohorts)
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let answer = |model: &Model, period, now| self.answer(model, period, now);
        datacube::simulate(request, answer, |period| self.empty(period))
    }
}

impl Retention {
    /// Simulation: the published answer for `period`.
    /// Keys that have not elapsed by the last published day are sent as 0, as the real
    /// service does.
    fn answer(&self, model: &Model, cohort: Period, now: DateTime<Utc>) -> Value {
        let last_day = model.latest_published_day(now);
        let totals = model.totals(cohort);
        let appid = model.app.appid.as_str();
        let keys = |size: f64, base: f64, decay: f64, salt: &str| -> Vec<Value> {
            lags(cohort.kind())
                .iter()
                .map(|&key| {
                    // Key k counts returns in the period k after the cohort, known once it is published.
                    let returns_period = (0..key).fold(cohort, |period, _| period.next());
                    let elapsed = returns_period.end() <= last_day;
                    let value = if key == 0 {
                        size
                    } else if elapsed {
                        let share = base
                            * f64::from(key).powf(-decay)
                            * noise(appid, cohort.start(), &format!("{salt}{key}"), 0.06);
                        (size * share).round()
                    } else {
                        0.0
                    };
                    json!({"key": key, "value": value as i64})
                })
                .collect()
        };
        json!({
            "ref_date": cohort.ref_date(),
            "visit_uv_new": keys(totals.new_visitors, 0.28, 0.45, "new"),
            "visit_uv": keys(totals.visitors, 0.46, 0.3, "active"),
        })
    }

    /// Simulation: the answer that holds nothing.
    fn empty(&self, period: Period) -> Value {
        json!({"ref_date": period.ref_date(), "visit_uv_new": [], "visit_uv": []})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{parsed, rendered};

    fn cohort(ref_date: &str, body: &str) -> Option<Cohort> {
        parsed(&Retention, ref_date, body).unwrap()
    }

    fn day(text: &str) -> Period {
        Period::parse_ref_date(text).unwrap()
    }

    fn keyed(new: &[(u32, f64)], active: &[(u32, f64)]) -> Cohort {
        Cohort {
            new: new.iter().copied().collect(),
            active: active.iter().copied().collect(),
        }
    }

    #[test]
    fn retention_seed_examples() {
        let daily = r#"{"ref_date":"20170313","visit_uv_new":[{"key":0,"value":5464}],"visit_uv":[{"key":0,"value":55500}]}"#;
        let retention = cohort("20170313", daily).unwrap();
        assert_eq!(retention.new, BTreeMap::from([(0, 5464.0)]));
        assert_eq!(retention.active, BTreeMap::from([(0, 55500.0)]));

        let weekly = r#"{"ref_date":"20170306-20170312","visit_uv_new":[{"key":0,"value":0},{"key":1,"value":16853}],
            "visit_uv":[{"key":0,"value":0},{"key":1,"value":99310}]}"#;
        let retention = cohort("20170306-20170312", weekly).unwrap();
        assert_eq!(retention.new, BTreeMap::from([(0, 0.0), (1, 16853.0)]));
        assert_eq!(retention.active.get(&1), Some(&99310.0));

        let monthly = r#"{"ref_date":"201702","visit_uv_new":[{"key":0,"value":346249}],"visit_uv":[{"key":0,"value":346249}]}"#;
        assert_eq!(
            cohort("201702", monthly).unwrap().new.get(&0),
            Some(&346249.0)
        );
    }

    #[test]
    fn empty_lists_mean_not_ready() {
        let body = r#"{"ref_date":"20170313","visit_uv_new":[],"visit_uv":[]}"#;
        assert_eq!(cohort("20170313", body), None);
    }

    #[test]
    fn a_share_above_one_or_a_key_given_twice_is_dropped_and_counted() {
        let body = r#"{"ref_date":"20170313","visit_uv_new":[{"key":0,"value":100},{"key":1,"value":150},
            {"key":2,"value":40},{"key":2,"value":45},{"key":3,"value":-4}],"visit_uv":[{"key":0,"value":1e300}]}"#;
        let (retention, tally) = crate::wechat::wire::tally(|| cohort("20170313", body));
        let retention = retention.unwrap();
        assert_eq!(retention.new, BTreeMap::from([(0, 100.0), (2, 40.0)]));
        assert!(retention.active.is_empty());
        assert_eq!(
            (tally.invalid, tally.duplicate),
            (3, 1),
            "150 > 100, -4, 1e300; key 2 twice"
        );
    }

    #[test]
    fn retention_items_without_a_usable_key_or_value_are_dropped() {
        let body = r#"{"visit_uv_new":[{"key":"1","value":3},{"key":-1,"value":3},{"key":2},{"value":9},{"key":1.5,"value":2}],"visit_uv":[]}"#;
        let retention = cohort("20170313", body).unwrap();
        assert_eq!(retention.new, BTreeMap::from([(1, 3.0)]));
        assert!(retention.active.is_empty());
    }

    #[test]
    fn each_lag_comes_from_the_cohort_that_many_periods_back() {
        let held = day("20240310");
        let today = keyed(&[(0, 100.0)], &[(0, 1000.0)]);
        // WeChat sends keys 2..7 as zeros for a cohort only one day old: ignored.
        let yesterday = keyed(
            &[(0, 90.0), (1, 30.0), (2, 0.0), (7, 0.0)],
            &[(0, 900.0), (1, 300.0)],
        );
        let week_ago = keyed(&[(0, 80.0), (7, 8.0)], &[(0, 800.0), (7, 40.0)]);
        let view = retention_view(
            held,
            &[
                (0, Some(&today)),
                (1, Some(&yesterday)),
                (7, Some(&week_ago)),
            ],
        );
        assert_eq!(view.len(), 3);
        assert_eq!(
            view[1],
            RetentionLag {
                lag: 1,
                cohort: day("20240309"),
                new: (Some(90.0), Some(30.0)),
                active: (Some(900.0), Some(300.0)),
            }
        );
        assert_eq!(view[2].cohort, day("20240303"));
        assert_eq!(view[2].new, (Some(80.0), Some(8.0)));
        assert!(view.iter().all(|lag| lag.lag != 2));
    }

    #[test]
    fn a_cohort_without_its_key_gives_no_lag() {
        let today = keyed(&[(0, 100.0)], &[(0, 1000.0)]);
        let young = keyed(&[(0, 90.0)], &[(0, 900.0)]);
        let view = retention_view(
            day("20240310"),
            &[(0, Some(&today)), (3, Some(&young)), (4, None)],
        );
        assert_eq!(view.iter().map(|lag| lag.lag).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn weekly_and_monthly_lags_step_back_by_weeks_and_months() {
        let week = Period::containing(
            PeriodKind::Weekly,
            chrono::NaiveDate::from_ymd_opt(2024, 3, 4).unwrap(),
        );
        let four = keyed(&[(4, 1.0)], &[]);
        assert_eq!(
            retention_view(week, &[(4, Some(&four))])[0]
                .cohort
                .ref_date(),
            "20240205-20240211"
        );
        let one = keyed(&[], &[(1, 1.0)]);
        assert_eq!(
            retention_view(day("202403"), &[(1, Some(&one))])[0]
                .cohort
                .ref_date(),
            "202402"
        );
    }

    #[test]
    fn the_calls_of_a_period_are_its_cohorts_newest_first() {
        let calls = Retention.calls(day("20240310"), &Settings::default());
        let asked: Vec<String> = calls.iter().map(|call| call.asks.ref_date()).collect();
        assert_eq!(asked[..3], ["20240310", "20240309", "20240308"]);
        assert_eq!(asked.last().unwrap(), "20240209");
        assert_eq!(calls.len(), lags(PeriodKind::Daily).len());
    }

    #[test]
    fn the_simulation_sends_keys_not_yet_elapsed_as_zero() {
        let app = crate::simulated::SimApp::new("shop", "wx5a1e0c2b7d9f3e41", "s", 10_000.0);
        let model = Model { app: &app };
        // Published up to June 3 (10:00 Beijing on June 4).
        let now = model.published_at(day("20240603"));
        let answer = Retention.answer(&model, day("20240601"), now);
        let values: Vec<i64> = answer["visit_uv_new"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| kv["value"].as_i64().unwrap())
            .collect();
        assert!(
            values[0] > 0 && values[1] > 0 && values[2] > 0,
            "{values:?}"
        );
        assert_eq!(&values[3..], [0, 0, 0, 0, 0, 0, 0]);
        assert!(values[1] < values[0] && values[2] < values[1]);
    }

    #[test]
    fn ratios_need_a_lag_of_at_least_one_and_a_cohort_size() {
        let held = day("20240310");
        let lags = vec![
            RetentionLag {
                lag: 0,
                cohort: held,
                new: (Some(100.0), Some(100.0)),
                active: (Some(0.0), Some(0.0)),
            },
            RetentionLag {
                lag: 1,
                cohort: held.prev(),
                new: (Some(90.0), Some(45.0)),
                active: (Some(0.0), Some(3.0)),
            },
        ];
        let text = rendered(&Retention, lags);
        let ratios: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wechat_miniprogram_retention_ratio{"))
            .collect();
        assert_eq!(ratios, ["wechat_miniprogram_retention_ratio{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\",cohort=\"new\",lag=\"1\"} 0.5"]);
        assert!(text.contains("wechat_miniprogram_retention_cohort_timestamp_seconds{appid=\"wx1234567890abcdef\",app=\"shop\",period=\"daily\",lag=\"1\"} 1709913600\n"), "{text}");
    }
}
