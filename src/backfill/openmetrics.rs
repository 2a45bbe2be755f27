//! The timestamped writer of a backfill: an [`Exposition`] that keeps, for every series, the
//! spans of time over which it held each value, and writes them as OpenMetrics samples
//! repeated every step.
//!
//! The replay renders what `/metrics` showed between one change and the next through
//! [`Families::during`]; a value that does not change joins the span before it, so its
//! repetitions keep their step across changes of other series.

use std::collections::HashMap;
use std::io::{self, Write};

use crate::exposition::{format_value, write_series, Exposition};

/// The families of a whole history, in the order their first sample came.
#[derive(Default)]
pub struct Families {
    families: Vec<Family>,
    by_name: HashMap<&'static str, usize>,
    /// The family being written and its header, until its first sample.
    current: Option<(&'static str, String)>,
    /// The span the samples being written hold over, in Unix seconds.
    span: (i64, i64),
}

struct Family {
    header: String,
    series: Vec<Series>,
    by_key: HashMap<String, usize>,
}

/// One label set and the spans of time over which it held each value.
struct Series {
    key: String,
    spans: Vec<(i64, i64, f64)>,
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Series (distinct label sets).
    pub series: usize,
    /// Samples.
    pub samples: usize,
}

impl Families {
    /// The samples written next held from `start` until `end` (Unix seconds).
    pub fn during(&mut self, start: i64, end: i64) -> &mut Families {
        self.span = (start, end);
        self
    }

    fn family_index(&mut self) -> Option<usize> {
        let (name, help) = self.current.as_ref()?;
        if let Some(index) = self.by_name.get(name) {
            return Some(*index);
        }
        self.families.push(Family {
            header: format!("# HELP {name} {help}\n# TYPE {name} gauge\n"),
            series: Vec::new(),
            by_key: HashMap::new(),
        });
        self.by_name.insert(name, self.families.len() - 1);
        Some(self.families.len() - 1)
    }

    /// Writes every series, each value repeated every `step` seconds over its spans, and
    /// `# EOF`.
    pub fn write(&self, out: &mut dyn Write, step: i64) -> io::Result<Written> {
        let mut written = Written::default();
        for family in &self.families {
            out.write_all(family.header.as_bytes())?;
            for series in &family.series {
                written.series += 1;
                for &(start, end, value) in &series.spans {
                    let value = format_value(value);
                    let mut at = start;
                    while at < end {
                        writeln!(out, "{} {value} {at}", series.key)?;
                        written.samples += 1;
                        at += step;
                    }
                }
            }
        }
        out.write_all(b"# EOF\n")?;
        Ok(written)
    }
}

impl Exposition for Families {
    fn family(&mut self, name: &'static str, help: String) {
        self.current = Some((name, help));
    }

    fn sample(&mut self, app: &[(&str, &str)], labels: &[(&str, &str)], value: f64) {
        let Some(index) = self.family_index() else {
            return;
        };
        let (start, end) = self.span;
        let family = &mut self.families[index];
        let mut key = String::new();
        write_series(
            &mut key,
            self.current.as_ref().map_or("", |c| c.0),
            app,
            labels,
        );
        let at = match family.by_key.get(&key) {
            Some(at) => *at,
            None => {
                family.by_key.insert(key.clone(), family.series.len());
                family.series.push(Series {
                    key,
                    spans: Vec::new(),
                });
                family.series.len() - 1
            }
        };
        let spans = &mut family.series[at].spans;
        match spans.last_mut() {
            // The same value right after: one span, so the repetitions keep their step.
            Some(last) if last.1 == start && last.2.to_bits() == value.to_bits() => {
                last.1 = end;
            }
            _ => spans.push((start, end, value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(families: &mut Families, values: &[(&str, f64)]) {
        families.family("m", "A gauge.".into());
        for (app, value) in values {
            families.sample(&[("app", app)], &[], *value);
        }
    }

    #[test]
    fn a_value_repeats_every_step_while_it_is_current() {
        let mut families = Families::default();
        render(families.during(1000, 1300), &[("a", 5.0), ("b", 1.0)]);
        render(families.during(1300, 1400), &[("a", 5.0)]);
        render(families.during(1400, 1450), &[("a", 7.0)]);
        let mut out = Vec::new();
        let written = families.write(&mut out, 120).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "# HELP m A gauge.\n# TYPE m gauge\n\
             m{app=\"a\"} 5 1000\nm{app=\"a\"} 5 1120\nm{app=\"a\"} 5 1240\nm{app=\"a\"} 5 1360\n\
             m{app=\"a\"} 7 1400\n\
             m{app=\"b\"} 1 1000\nm{app=\"b\"} 1 1120\nm{app=\"b\"} 1 1240\n# EOF\n"
        );
        assert_eq!(
            written,
            Written {
                series: 2,
                samples: 8
            }
        );
    }

    #[test]
    fn families_come_in_the_order_of_their_first_sample() {
        let mut families = Families::default();
        families.during(0, 60);
        families.family("empty_at_first", "Later.".into());
        families.family("first", "First.".into());
        families.sample(&[], &[], 1.0);
        families.during(60, 120);
        families.family("empty_at_first", "Later.".into());
        families.sample(&[], &[], 2.0);
        let mut out = Vec::new();
        families.write(&mut out, 60).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.find("# HELP first").unwrap() < text.find("# HELP empty_at_first").unwrap());
    }
}
