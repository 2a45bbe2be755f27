//! `check-config --cost` against what the agent does: the calls a mixed fleet makes over a
//! simulated week in steady state, counted by the simulation, against the cost computed from
//! the configuration.

use std::collections::BTreeMap;

use crate::common::{self, beijing, Exporter};

use wechat_miniprogram_exporter::cost::{group, of_config, GROUPS};
use wechat_miniprogram_exporter::simulation::SimApp;

/// shop with the defaults, news with three reports and the classic token, blog with every
/// report (the quota too), more JS errors and one portrait range.
fn fleet() -> (Vec<SimApp>, &'static str) {
    let mut apps = common::two_apps();
    apps.push(SimApp::new(
        "blog",
        "wx3333333333333333",
        "secret-blog-0123456789",
        800.0,
    ));
    let edits = "[apps.news.reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_page\"]\n\
        [apps.blog.reports]\nenabled = [\"visit_trend\", \"retention\", \"visit_distribution\", \"visit_page\", \"daily_summary\", \"user_portrait\", \"launch_time\", \"performance\", \"js_errors\", \"quota\"]\n\
        js_errors_top = 45\nportrait_ranges = [\"7d\"]\n";
    (apps, edits)
}

#[tokio::test]
async fn the_cost_of_a_mixed_fleet_is_what_the_agent_calls_over_a_week_within_five_percent() {
    let (apps, edits) = fleet();
    // The apps learn their publication hour over four days, then a week is counted.
    let start = beijing("2024-06-01 12:00");
    let app = Exporter::new(apps.clone(), start)
        .edit(move |toml| {
            toml.replace(
                "appid = \"wx2222222222222222\"\n",
                "appid = \"wx2222222222222222\"\ntoken_source = \"token\"\n",
            ) + edits
        })
        .start()
        .await;
    app.settle().await;
    let mut instant = start;
    let counted = beijing("2024-06-05 12:00");
    while instant < counted {
        instant += chrono::Duration::minutes(30);
        app.advance_to(instant).await;
    }
    let from = app.sim.calls().len();
    while instant < counted + chrono::Duration::days(7) {
        instant += chrono::Duration::minutes(30);
        app.advance_to(instant).await;
    }
    let costs = of_config(&app.config);
    let mut fleet_counted = 0.0;
    let mut fleet_computed = 0.0;
    assert_eq!(costs.len(), apps.len());
    for sim in &apps {
        let cost = costs.iter().find(|cost| cost.app == sim.name).unwrap();
        let mut per_group: BTreeMap<&str, f64> = GROUPS.iter().map(|group| (*group, 0.0)).collect();
        for call in app.calls_since(from) {
            if call.appid.as_deref() == Some(sim.appid.as_str()) {
                let path = match call.endpoint.as_str() {
                    endpoint if endpoint.starts_with("getweanalysis") => "datacube/",
                    endpoint => endpoint,
                };
                *per_group.entry(group(path)).or_default() += 1.0;
            }
        }
        let counted: f64 = per_group.values().sum();
        let computed = 7.0 * cost.calls_a_day();
        eprintln!(
            "{}: counted {per_group:?} = {counted}; computed {:?} x 7 = {computed:.1}",
            sim.name, cost.calls
        );
        assert!(
            (counted - computed).abs() <= 0.05 * counted,
            "{}: counted {counted}, computed {computed:.1}",
            sim.name
        );
        fleet_counted += counted;
        fleet_computed += computed;
    }
    assert!((fleet_counted - fleet_computed).abs() <= 0.05 * fleet_counted);
}
