//! The exporter's counters of each app (requests, errors, token fetches, dropped values):
//! a dozen series per app, thousands in a fleet. Each family is one map from its label values
//! (shared names, [`crate::shared`]) to a count, written as the `prometheus` crate's text
//! encoder writes a counter vector (labels by name, series by their values), without the
//! crate's per-series label copies and the protobufs it gathers at each rendering.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::shared::{name, Name};

/// The label values of one series: `app`, `appid`, then the family's own labels in the order
/// of their names.
type Key = (Name, Name, Name, Option<Name>);

/// The label values of a series, held ([`Key`]) or asked for (borrowed text): the map is
/// searched with the text of a request, and names are shared only for a series it adds.
trait Values {
    fn values(&self) -> (&str, &str, &str, Option<&str>);
}

impl Values for Key {
    fn values(&self) -> (&str, &str, &str, Option<&str>) {
        (&self.0, &self.1, &self.2, self.3.as_deref())
    }
}

impl Values for (&str, &str, &str, Option<&str>) {
    fn values(&self) -> (&str, &str, &str, Option<&str>) {
        *self
    }
}

impl<'a> Borrow<dyn Values + 'a> for Key {
    fn borrow(&self) -> &(dyn Values + 'a) {
        self
    }
}

impl PartialEq for dyn Values + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.values() == other.values()
    }
}

impl Eq for dyn Values + '_ {}

impl PartialOrd for dyn Values + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// As [`Key`] orders: a [`Name`] compares as its text.
impl Ord for dyn Values + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.values().cmp(&other.values())
    }
}

/// One counter family with the labels `app`, `appid` and one or two of its own.
pub struct Counters {
    name: &'static str,
    help: &'static str,
    /// The family's own labels, sorted by name (after `app` and `appid`).
    labels: &'static [&'static str],
    counts: Mutex<BTreeMap<Key, u64>>,
}

impl Counters {
    /// A family `name` of the labels `app`, `appid` and `labels` (one or two, sorted, all
    /// after `appid`).
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        assert!(
            matches!(labels.len(), 1 | 2),
            "one or two labels of its own"
        );
        assert!(labels.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(labels.iter().all(|label| *label > "appid"));
        Counters {
            name,
            help,
            labels,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// The family's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds `by` to the series of `app` (`appid`) and `values` (one per own label); `by` 0
    /// makes the series exist at 0.
    pub fn add(&self, app: &str, appid: &str, values: &[&str], by: u64) {
        let asked = (app, appid, values[0], values.get(1).copied());
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&asked as &dyn Values) {
            *count = count.saturating_add(by);
            return;
        }
        let key = (
            name(app),
            name(appid),
            name(values[0]),
            values.get(1).map(|value| name(value)),
        );
        counts.insert(key, by);
    }

    /// Writes the family's series of the apps named in `current` (those of an app that was
    /// removed go with it); nothing when there is none.
    pub fn write(&self, current: &BTreeSet<&str>, out: &mut String) {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut series = counts
            .iter()
            .filter(|((app, ..), _)| current.contains(&**app));
        let Some(first) = series.next() else {
            return;
        };
        out.push_str(&format!(
            "# HELP {} {}\n",
            self.name,
            escaped(self.help, false)
        ));
        out.push_str(&format!("# TYPE {} counter\n", self.name));
        for ((app, appid, first_value, second_value), count) in std::iter::once(first).chain(series)
        {
            out.push_str(self.name);
            out.push_str("{app=\"");
            out.push_str(&escaped(app, true));
            out.push_str("\",appid=\"");
            out.push_str(&escaped(appid, true));
            let values = std::iter::once(first_value).chain(second_value);
            for (label, value) in self.labels.iter().zip(values) {
                out.push_str(&format!("\",{label}=\""));
                out.push_str(&escaped(value, true));
            }
            // As the crate writes an integer counter: its value as a float.
            out.push_str(&format!("\"}} {}\n", *count as f64));
        }
    }
}

/// `text` escaped as the text format asks: backslashes and line breaks, and double quotes in
/// label values.
fn escaped(text: &str, quotes: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c == '\\' || c == '\n' || (quotes && c == '"');
    if !text.contains(special) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            c if special(c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{IntCounterVec, Opts, Registry};

    /// The same counts through the `prometheus` crate, encoded by its text encoder.
    fn as_the_crate_writes(
        name: &str,
        help: &str,
        labels: &[&str],
        counts: &[(&[&str], u64)],
    ) -> String {
        let registry = Registry::new();
        let mut names = vec!["appid", "app"];
        names.extend(labels);
        let vec = IntCounterVec::new(Opts::new(name, help), &names).unwrap();
        registry.register(Box::new(vec.clone())).unwrap();
        for (values, by) in counts {
            vec.with_label_values(values).inc_by(*by);
        }
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        text
    }

    #[test]
    fn counters_added_to_are_written_byte_for_byte_as_the_prometheus_crate_writes_them() {
        let help = "Failed requests, by errcode \\ or \"status\"\nsecond line.";
        let counts: &[(&[&str], u64)] = &[
            (&["wx2", "shop", "datacube/b", "40001"], 3),
            (&["wx1", "shop", "datacube/b", "timeout"], 1),
            (&["wx1", "shop", "datacube/a", "timeout"], 0),
            (
                &["wx9", "Ab\"c\\d\ne", "datacube/a", "http_500"],
                12_345_678_901,
            ),
            (&["wx3", "news", "datacube/a", "40001"], 2),
            (&["wx2", "shop", "datacube/b", "40001"], 4),
            (&["wx1", "shop", "datacube/a", "timeout"], 7),
        ];
        let ours = Counters::new("errors_total", help, &["endpoint", "errcode"]);
        for (values, by) in counts {
            ours.add(values[1], values[0], &values[2..], *by);
        }
        let mut written = String::new();
        let current = ["shop", "news", "Ab\"c\\d\ne"].into_iter().collect();
        ours.write(&current, &mut written);
        let expected = as_the_crate_writes("errors_total", help, &["endpoint", "errcode"], counts);
        assert_eq!(written, expected);
    }

    #[test]
    fn a_family_of_one_label_and_counts_added_up_are_written_as_the_crate_writes_them() {
        let counts: &[(&[&str], u64)] = &[
            (&["wx1", "shop", "success"], 1),
            (&["wx1", "shop", "error"], 0),
            (&["wx1", "shop", "success"], 4),
        ];
        let ours = Counters::new("tokens_total", "Tokens.", &["outcome"]);
        for (values, by) in counts {
            ours.add(values[1], values[0], &values[2..], *by);
        }
        let mut written = String::new();
        ours.write(&["shop"].into_iter().collect(), &mut written);
        assert_eq!(
            written,
            as_the_crate_writes("tokens_total", "Tokens.", &["outcome"], counts)
        );
    }

    #[test]
    fn the_series_of_apps_no_longer_there_are_left_out_and_an_empty_family_is_not_written() {
        let ours = Counters::new("requests_total", "Requests.", &["endpoint"]);
        ours.add("gone", "wx1", &["datacube/a"], 1);
        ours.add("shop", "wx2", &["datacube/a"], 1);
        let mut written = String::new();
        ours.write(&["shop"].into_iter().collect(), &mut written);
        assert!(written.contains("app=\"shop\"") && !written.contains("gone"));
        let mut nothing = String::new();
        ours.write(&BTreeSet::new(), &mut nothing);
        assert_eq!(nothing, "");
    }
}
