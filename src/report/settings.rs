//! What is exported of the reports (`[reports]`): which reports are polled, as a typed set,
//! and how much of each is kept.

use std::fmt;
use std::time::Duration;

use super::Report;

/// The `[reports]` settings, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The reports polled and backfilled.
    pub enabled: ReportSet,
    /// How many pages (by visits) are exported per app.
    pub pages_top: usize,
    /// How many entries of each portrait dimension (the largest) are exported, per range and
    /// cohort.
    pub portrait_top: usize,
    /// The portrait ranges, in days: 1, 7 or 30, each ending yesterday.
    pub portrait_ranges: Vec<u32>,
    /// How many JS error groups (by pv) are exported per error type.
    pub js_errors_top: usize,
    /// How often the API quota is asked, when the `quota` report is enabled.
    pub quota_interval: Duration,
}

impl Default for Settings {
    /// The documented defaults.
    fn default() -> Self {
        Settings {
            enabled: ReportSet::defaults(),
            pages_top: 20,
            portrait_top: 30,
            portrait_ranges: vec![1, 7, 30],
            js_errors_top: 10,
            quota_interval: Duration::from_secs(6 * 3600),
        }
    }
}

impl Settings {
    /// Whether `report` is polled.
    pub fn is_enabled(&self, report: Report) -> bool {
        self.enabled.contains(report)
    }

    /// These settings with what `overrides` sets (an app's own `[apps.NAME.reports]`).
    pub fn with(&self, overrides: &Overrides) -> Settings {
        let Overrides {
            enabled,
            pages_top,
            portrait_top,
            portrait_ranges,
            js_errors_top,
            quota_interval,
        } = overrides.clone();
        Settings {
            enabled: enabled.unwrap_or(self.enabled),
            pages_top: pages_top.unwrap_or(self.pages_top),
            portrait_top: portrait_top.unwrap_or(self.portrait_top),
            portrait_ranges: portrait_ranges.unwrap_or_else(|| self.portrait_ranges.clone()),
            js_errors_top: js_errors_top.unwrap_or(self.js_errors_top),
            quota_interval: quota_interval.unwrap_or(self.quota_interval),
        }
    }
}

/// What one app sets of its own over `[reports]` (`[apps.NAME.reports]`, or `reports` in a
/// discovery entry), validated: each key it leaves out is the global value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `enabled`.
    pub enabled: Option<ReportSet>,
    /// `pages_top`.
    pub pages_top: Option<usize>,
    /// `portrait_top`.
    pub portrait_top: Option<usize>,
    /// `portrait_ranges`.
    pub portrait_ranges: Option<Vec<u32>>,
    /// `js_errors_top`.
    pub js_errors_top: Option<usize>,
    /// `quota_interval`.
    pub quota_interval: Option<Duration>,
}

/// A set of the registry's reports.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportSet(u32);

impl ReportSet {
    /// The reports of `reports`.
    pub fn of(reports: impl IntoIterator<Item = Report>) -> ReportSet {
        ReportSet(
            reports
                .into_iter()
                .fold(0, |set, report| set | report.bit()),
        )
    }

    /// Every report of the registry.
    pub fn all() -> ReportSet {
        ReportSet::of(Report::all())
    }

    /// The reports polled by default: all but the opt-in ones.
    pub fn defaults() -> ReportSet {
        ReportSet::of(Report::all().filter(|report| !report.opt_in()))
    }

    /// Whether `report` is in the set.
    pub fn contains(self, report: Report) -> bool {
        self.0 & report.bit() != 0
    }

    /// The set with `report` in it.
    pub fn with(self, report: Report) -> ReportSet {
        ReportSet(self.0 | report.bit())
    }

    /// The set without `report`.
    pub fn without(self, report: Report) -> ReportSet {
        ReportSet(self.0 & !report.bit())
    }

    /// The reports of the set, in the registry's order.
    pub fn iter(self) -> impl Iterator<Item = Report> {
        Report::all().filter(move |report| self.contains(*report))
    }
}

impl fmt::Debug for ReportSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_the_reports_put_in_it_in_the_registry_order() {
        let trend = Report::by_name("visit_trend").unwrap();
        let quota = Report::by_name("quota").unwrap();
        let set = ReportSet::of([quota, trend]);
        assert!(set.contains(trend) && set.contains(quota));
        assert_eq!(set.iter().collect::<Vec<_>>(), [trend, quota]);
        assert!(
            !ReportSet::defaults().contains(quota),
            "the quota is opt-in"
        );
        assert_eq!(ReportSet::defaults().with(quota), ReportSet::all());
    }
}
