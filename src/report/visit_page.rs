//! The visit pages (`getweanalysisappidvisitpage`, daily): visits, visitors, stay, entries,
//! exits and shares of the pages WeChat lists (at most 200, by visits). The `reports.pages_top`
//! most visited are exported, each path once.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Settings;
use super::{datacube, Family, ReportSpec};
use crate::exposition::{bounded_label, Samples};
use crate::period::{Period, PeriodKind};
use crate::simulated::model::{noise, round4, Model, Refusal, Request};
use crate::wechat::wire::{check_ref_date, note, Answer, Dropped, Num};
use crate::wechat::{Call, WeChatError};

/// The visit page report.
pub struct VisitPage;

/// One page of the daily visit-page report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// `page_path`.
    pub path: String,
    /// `page_visit_pv`: visits.
    pub visit_pv: Option<f64>,
    /// `page_visit_uv`: visitors.
    pub visit_uv: Option<f64>,
    /// `page_staytime_pv`: average stay per visit, seconds.
    pub staytime_pv: Option<f64>,
    /// `entrypage_pv`: visits that entered on this page.
    pub entry_pv: Option<f64>,
    /// `exitpage_pv`: visits that left from this page.
    pub exit_pv: Option<f64>,
    /// `page_share_pv`: shares.
    pub share_pv: Option<f64>,
    /// `page_share_uv`: sharing users.
    pub share_uv: Option<f64>,
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

/// The longest page path exported, in characters.
const PATH_LENGTH: usize = 256;

/// The `n` pages with the most visits, most first, each path once.
pub fn top_pages(mut pages: Vec<Page>, n: usize) -> Vec<Page> {
    pages.sort_by(|a, b| {
        let visits = |page: &Page| page.visit_pv.unwrap_or(f64::NEG_INFINITY);
        visits(b)
            .total_cmp(&visits(a))
            .then_with(|| a.path.cmp(&b.path))
    });
    // WeChat may list a path twice (e.g. with different query strings stripped); keep the first.
    let mut seen = HashSet::new();
    pages.retain(|page| seen.insert(page.path.clone()));
    pages.truncate(n);
    pages
}

/// One family per field, each with `page`.
macro_rules! field {
    ($name:literal, $help:literal, $field:ident) => {
        Family {
            name: $name,
            help: concat!($help, " Top pages by visits."),
            samples: |pages: &Vec<Page>, _, out: &mut Samples<'_>| {
                for page in pages {
                    if let Some(value) = page.$field {
                        out.sample(&[("page", &page.path)], value);
                    }
                }
            },
        }
    };
}

impl ReportSpec for VisitPage {
    type Piece = Vec<Page>;
    type Snapshot = Vec<Page>;

    const NAME: &'static str = "visit_page";
    const KINDS: &'static [PeriodKind] = &[PeriodKind::Daily];
    const FAMILIES: &'static [Family<Vec<Page>>] = &[
        field!(
            "wechat_miniprogram_page_visit_pv",
            "Visits of the page (page_visit_pv) on the day.",
            visit_pv
        ),
        field!(
            "wechat_miniprogram_page_visit_uv",
            "Visitors of the page (page_visit_uv) on the day.",
            visit_uv
        ),
        field!(
            "wechat_miniprogram_page_stay_time_seconds",
            "Average stay per visit of the page (page_staytime_pv) on the day.",
            staytime_pv
        ),
        field!(
            "wechat_miniprogram_page_entry_pv",
            "Visits that entered on the page (entrypage_pv) on the day.",
            entry_pv
        ),
        field!(
            "wechat_miniprogram_page_exit_pv",
            "Visits that left from the page (exitpage_pv) on the day.",
            exit_pv
        ),
        field!(
            "wechat_miniprogram_page_share_pv",
            "Shares of the page (page_share_pv) on the day.",
            share_pv
        ),
        field!(
            "wechat_miniprogram_page_share_uv",
            "Users who shared the page (page_share_uv) on the day.",
            share_uv
        ),
    ];

    fn path(&self, _: PeriodKind) -> &'static str {
        "datacube/getweanalysisappidvisitpage"
    }

    fn max_series(&self, _: PeriodKind, reports: &Settings) -> usize {
        Self::FAMILIES.len() * reports.pages_top
    }

    fn calls(&self, period: Period, _: &Settings) -> Vec<Call> {
        vec![datacube::call(self.path(period.kind()), period)]
    }

    fn parse(&self, call: &Call, answer: Answer<'_>) -> Result<Option<Vec<Page>>, WeChatError> {
        let answer: PageAnswer = answer.read()?;
        if answer.list.is_empty() {
            return Ok(None);
        }
        check_ref_date(answer.ref_date.as_deref(), call.asks)?;
        let pages = answer.list.into_iter().filter_map(|page| {
            let path = bounded_label(page.page_path?.trim(), PATH_LENGTH);
            Some(Page {
                path: Some(path).filter(|path| !path.is_empty())?,
                visit_pv: page.page_visit_pv.0,
                visit_uv: page.page_visit_uv.0,
                staytime_pv: page.page_staytime_pv.0,
                entry_pv: page.entrypage_pv.0,
                exit_pv: page.exitpage_pv.0,
                share_pv: page.page_share_pv.0,
                share_uv: page.page_share_uv.0,
            })
        });
        let pages: Vec<Page> = pages.collect();
        let count = pages.len();
        let pages = top_pages(pages, usize::MAX);
        for _ in pages.len()..count {
            note(Dropped::Duplicate);
        }
        Ok(Some(pages))
    }

    fn snapshot(&self, _: Period, pieces: &[Option<&Vec<Page>>], reports: &Settings) -> Vec<Page> {
        top_pages(pieces[0].cloned().unwrap_or_default(), reports.pages_top)
    }

    fn simulate(&self, request: &Request<'_>) -> Result<Value, Refusal> {
        let answer = |model: &Model, period, now| self.answer(model, period, now);
        datacube::simulate(request, answer, |period| self.empty(period))
    }
}

impl VisitPage {
    /// Simulation: the published answer for `period`.
    fn answer(&self, model: &Model, period: Period, _: DateTime<Utc>) -> Value {
        let day = model.day(period.start());
        let appid = model.app.appid.as_str();
        let date = period.start();
        let mut pages: Vec<(&str, f64)> = PAGES
            .iter()
            .enumerate()
            .map(|(rank, path)| {
                let weight = 1.0 / (rank as f64 + 1.0).powf(1.1) * noise(appid, date, path, 0.1);
                (*path, weight)
            })
            .collect();
        let sum: f64 = pages.iter().map(|(_, w)| w).sum();
        pages.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<Value> = pages
            .iter()
            .enumerate()
            .map(|(rank, (path, weight))| {
                let visits = (day.visits * (weight / sum)).round();
                let entry = if rank == 0 { 0.7 } else { 0.3 / PAGES.len() as f64 };
                json!({
                    "page_path": path,
                    "page_visit_pv": visits as i64,
                    "page_visit_uv": (visits * 0.42).round() as i64,
                    "page_staytime_pv": round4(20.0 * noise(appid, date, &format!("{path}stay"), 0.5)),
                    "entrypage_pv": (day.sessions * entry).round() as i64,
                    "exitpage_pv": (visits * 0.31).round() as i64,
                    "page_share_pv": (visits * 0.004).round() as i64,
                    "page_share_uv": (visits * 0.003).round() as i64,
                })
            })
            .collect();
        json!({"ref_date": period.ref_date(), "list": list})
    }

    /// Simulation: the answer that holds nothing.
    fn empty(&self, period: Period) -> Value {
        json!({"ref_date": period.ref_date(), "list": []})
    }
}

/// Simulation: the pages of every app, most visited first (before noise).
const PAGES: [&str; 12] = [
    "pages/index/index",
    "pages/goods/detail",
    "pages/search/search",
    "pages/cart/cart",
    "pages/order/confirm",
    "pages/user/center",
    "pages/category/list",
    "pages/order/list",
    "pages/coupon/list",
    "pages/address/edit",
    "pages/article/detail",
    "pages/help/faq",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{parsed, rendered};

    #[test]
    fn visit_page_seed_example() {
        let body = r#"{"ref_date":"20170313","list":[
            {"page_path":"pages/main/main.html","page_visit_pv":213429,"page_visit_uv":55423,"page_staytime_pv":8.139198,
             "entrypage_pv":117922,"exitpage_pv":61304,"page_share_pv":180,"page_share_uv":166},
            {"page_path":"pages/search/search.html","page_visit_pv":65011,"page_visit_uv":24716,"page_staytime_pv":6.889634,
             "entrypage_pv":1811,"exitpage_pv":3198,"page_share_pv":0,"page_share_uv":0},
            {"page_visit_pv":1}
        ]}"#;
        let pages = parsed(&VisitPage, "20170313", body).unwrap().unwrap();
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].path, "pages/main/main.html");
        assert_eq!(pages[0].staytime_pv, Some(8.139198));
        assert_eq!(pages[1].share_uv, Some(0.0));
    }

    #[test]
    fn an_empty_list_means_not_ready() {
        let body = r#"{"ref_date":"20170313","list":[]}"#;
        assert_eq!(parsed(&VisitPage, "20170313", body), Ok(None));
    }

    #[test]
    fn top_pages_are_the_most_visited_without_duplicates() {
        let page = |path: &str, visits: Option<f64>| Page {
            path: path.into(),
            visit_pv: visits,
            ..Page::default()
        };
        let pages = top_pages(
            vec![
                page("a", Some(1.0)),
                page("b", Some(5.0)),
                page("c", None),
                page("b", Some(2.0)),
                page("d", Some(3.0)),
            ],
            3,
        );
        let paths: Vec<_> = pages.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["b", "d", "a"]);
    }

    #[test]
    fn page_paths_are_escaped() {
        let page = Page {
            path: "pages/a\"b\\c\nd".into(),
            visit_pv: Some(1.0),
            ..Page::default()
        };
        let text = rendered(&VisitPage, vec![page]);
        assert!(text.contains(r#"page="pages/a\"b\\c\nd"} 1"#), "{text}");
    }
}
