//! The status pages, plain HTML that reads without JavaScript: `/` sums the apps up (how many
//! are up, down, waiting for WeChat to publish, starting, with reports WeChat refuses them)
//! and lists them failing first, one line each;
//! `/apps/NAME` details one app, report by report.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};

use crate::period::beijing;
use crate::report::State as JobState;
use crate::store::{AppOverview, Store};

/// Where the pages link to.
pub struct Links {
    /// The telemetry path.
    pub metrics: String,
}

/// How an app stands, worst first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    Down,
    Starting,
    Waiting,
    Up,
}

impl Standing {
    fn of(app: &AppOverview) -> Standing {
        if !app.ready {
            Standing::Starting
        } else if !app.up {
            Standing::Down
        } else if app
            .jobs
            .values()
            .any(|job| job.next_attempt.is_some() && job.last_error.is_none())
        {
            Standing::Waiting
        } else {
            Standing::Up
        }
    }

    fn html(self) -> &'static str {
        match self {
            Standing::Down => "<span class=\"down\">down</span>",
            Standing::Starting => "<span>starting</span>",
            Standing::Waiting => "<span class=\"wait\">waiting for WeChat</span>",
            Standing::Up => "<span class=\"ok\">up</span>",
        }
    }
}

fn head(page: &mut String, title: &str, links: &Links) {
    let _ = write!(
        page,
        concat!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title>\n",
            "<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}",
            "td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}th{{background:#f4f4f4}}",
            ".down{{color:#b00}}.ok{{color:#070}}.wait{{color:#a60}}</style></head><body>\n",
            "<h1>{}</h1>\n",
            "<p><a href=\"/\">Status</a> &middot; <a href=\"{}\">Metrics</a> &middot; ",
            "<a href=\"/healthz\">Health</a> &middot; <a href=\"/readyz\">Readiness</a></p>\n",
            "<p>Version {}. Times are Beijing time (UTC+8).</p>\n"
        ),
        escape(title),
        escape(title),
        escape(&links.metrics),
        env!("CARGO_PKG_VERSION")
    );
}

/// "1 Mini Program", "3 Mini Programs".
fn mini_programs(count: usize) -> String {
    match count {
        1 => "1 Mini Program".to_string(),
        count => format!("{count} Mini Programs"),
    }
}

/// `/`: the summary and one line per app, failing apps first.
pub async fn landing(State((store, links)): State<(Arc<Store>, Arc<Links>)>) -> Html<String> {
    let mut apps: Vec<(Standing, AppOverview)> = store
        .overview()
        .into_iter()
        .map(|app| (Standing::of(&app), app))
        .collect();
    apps.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    let mut page = String::with_capacity(1024 + apps.len() * 320);
    head(&mut page, "WeChat Mini Program Exporter", &links);
    let count = |standing| apps.iter().filter(|(s, _)| *s == standing).count();
    let unauthorized = apps
        .iter()
        .filter(|(_, app)| {
            app.jobs
                .values()
                .any(|job| job.state == JobState::Unauthorized)
        })
        .count();
    let _ = writeln!(
        page,
        "<p class=\"summary\">{}: <b>{} up</b>, <b class=\"down\">{} down</b>, <b class=\"wait\">{} waiting for WeChat to publish</b>, {} starting, <b class=\"wait\">{} with unauthorized reports</b>.</p>",
        mini_programs(apps.len()),
        count(Standing::Up),
        count(Standing::Down),
        count(Standing::Waiting),
        count(Standing::Starting),
        unauthorized
    );
    page.push_str("<table>\n<tr><th>app</th><th>appid</th><th>state</th><th>reports held</th><th>next attempt</th><th>problem</th></tr>\n");
    for (standing, app) in &apps {
        let held = app.jobs.values().filter(|job| job.held.is_some()).count();
        let next = app.jobs.values().filter_map(|job| job.next_attempt).min();
        let problem = app
            .crash
            .as_deref()
            .or_else(|| app.jobs.values().find_map(|job| job.last_error.as_deref()))
            .unwrap_or("");
        let _ = writeln!(
            page,
            "<tr><td><a href=\"/apps/{}\">{}</a></td><td>{}</td><td>{}</td><td>{held} of {}</td><td>{}</td><td class=\"down\">{}</td></tr>",
            escape(&app.name),
            escape(&app.name),
            escape(&app.appid),
            standing.html(),
            app.jobs.len(),
            time(next),
            escape(problem)
        );
    }
    page.push_str("</table>\n</body></html>\n");
    Html(page)
}

/// `/apps/NAME`: every report and period of one app.
pub async fn app(
    State((store, links)): State<(Arc<Store>, Arc<Links>)>,
    Path(name): Path<String>,
) -> Response {
    let Some(app) = store.overview().into_iter().find(|app| app.name == name) else {
        return (StatusCode::NOT_FOUND, "no such app\n").into_response();
    };
    let mut page = String::new();
    head(&mut page, &format!("{} ({})", app.name, app.appid), &links);
    let _ = writeln!(page, "<p>State: {}.</p>", Standing::of(&app).html());
    if let Some(crash) = &app.crash {
        let _ = writeln!(page, "<p class=\"down\">{}</p>", escape(crash));
    }
    page.push_str("<table>\n<tr><th>report</th><th>period</th><th>status</th><th>held</th><th>last success</th><th>next attempt</th><th>last error</th></tr>\n");
    if app.jobs.is_empty() {
        page.push_str("<tr><td colspan=\"7\">no attempt yet</td></tr>\n");
    }
    for ((report, kind), status) in &app.jobs {
        let _ = writeln!(
            page,
            "<tr><td>{report}</td><td>{kind}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"down\">{}</td></tr>",
            status.state.as_str(),
            status.held.map(|p| p.to_string()).unwrap_or_else(|| "none yet".into()),
            time(status.last_success),
            time(status.next_attempt),
            escape(status.last_error.as_deref().unwrap_or("")),
        );
    }
    page.push_str("</table>\n</body></html>\n");
    Html(page).into_response()
}

fn time(instant: Option<DateTime<Utc>>) -> String {
    instant
        .map(|t| {
            t.with_timezone(&beijing())
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_one_mini_program_in_the_singular() {
        assert_eq!(mini_programs(1), "1 Mini Program");
        assert_eq!(mini_programs(0), "0 Mini Programs");
        assert_eq!(mini_programs(3), "3 Mini Programs");
    }
}
