//! How samples are written: the small interface every report's families write through.
//!
//! A report never formats text. It names a family ([`Exposition::family`]) and hands over
//! samples ([`Samples::sample`]); an [`Exposition`] decides what they become. [`Text`] writes
//! the Prometheus text format for `/metrics`; `backfill` has its own implementation that
//! keeps each series' values over time, with timestamps. Both format a series the same way
//! ([`write_series`]), so label escaping lives here only.

use std::fmt::Write as _;

/// Where samples go.
pub trait Exposition {
    /// Starts a gauge family. Its header is written before its first sample only: a family
    /// with no sample does not appear.
    fn family(&mut self, name: &'static str, help: String);
    /// One sample of the current family: the labels of its app (`app`), then its own.
    fn sample(&mut self, app: &[(&str, &str)], labels: &[(&str, &str)], value: f64);
}

/// The samples of one app, as a report's family writes them: `appid` and `app` go first.
pub struct Samples<'a> {
    out: &'a mut dyn Exposition,
    app: [(&'static str, &'a str); 2],
}

impl<'a> Samples<'a> {
    /// Samples of the app `app` (the `app` label) with `appid`, written to `out`.
    pub fn new(out: &'a mut dyn Exposition, appid: &'a str, app: &'a str) -> Samples<'a> {
        Samples {
            out,
            app: [("appid", appid), ("app", app)],
        }
    }

    /// Writes one sample with `labels` after the app's.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.out.sample(&self.app, labels, value);
    }
}

/// Writes `name{labels...}` with every label value escaped as the text format requires.
pub fn write_series(out: &mut String, name: &str, app: &[(&str, &str)], labels: &[(&str, &str)]) {
    out.push_str(name);
    if app.is_empty() && labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (label, value)) in app.iter().chain(labels).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(label);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    out.push('}');
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A label value from free text that WeChat sends (a name, a message): control characters
/// become spaces and the text is cut to `max` characters, so that no answer can make a label
/// unbounded. The writer escapes the rest.
pub fn bounded_label(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A sample value as the text formats write it.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

/// Where [`Text`] hands what it wrote, piece by piece, when it writes for a stream.
pub type Spill<'a> = &'a mut dyn FnMut(&mut String);

/// How much text is gathered before it is spilled.
const SPILL_AT: usize = 256 << 10;

/// The Prometheus text format, appended to a `String`.
pub struct Text<'a> {
    out: &'a mut String,
    /// The header of the current family, until its first sample writes it.
    pending: Option<(&'static str, String)>,
    name: &'static str,
    spill: Option<Spill<'a>>,
}

impl<'a> Text<'a> {
    /// Appends to `out`.
    pub fn new(out: &'a mut String) -> Text<'a> {
        Text {
            out,
            pending: None,
            name: "",
            spill: None,
        }
    }

    /// Appends to `out`, handing it to `spill` (which empties it) whenever it holds a few
    /// hundred kilobytes: for a stream, such as the compressed exposition.
    pub fn spilling(out: &'a mut String, spill: Spill<'a>) -> Text<'a> {
        Text {
            spill: Some(spill),
            ..Text::new(out)
        }
    }
}

impl Exposition for Text<'_> {
    fn family(&mut self, name: &'static str, help: String) {
        self.name = name;
        self.pending = Some((name, help));
    }

    fn sample(&mut self, app: &[(&str, &str)], labels: &[(&str, &str)], value: f64) {
        if let Some((name, help)) = self.pending.take() {
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
        }
        write_series(self.out, self.name, app, labels);
        let _ = writeln!(self.out, " {}", format_value(value));
        if self.out.len() >= SPILL_AT {
            if let Some(spill) = self.spill.as_mut() {
                spill(self.out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_without_samples_leaves_no_header() {
        let mut out = String::new();
        let mut text = Text::new(&mut out);
        text.family("empty", "Nothing.".into());
        text.family("full", "Something.".into());
        Samples::new(&mut text, "wx1", "shop").sample(&[("page", "a\"b\\c\nd")], 1.5);
        assert_eq!(
            out,
            "# HELP full Something.\n# TYPE full gauge\nfull{appid=\"wx1\",app=\"shop\",page=\"a\\\"b\\\\c\\nd\"} 1.5\n"
        );
    }

    #[test]
    fn free_text_labels_are_cut_and_lose_control_characters() {
        assert_eq!(bounded_label("广东省", 100), "广东省");
        assert_eq!(bounded_label("a\r\nb\tc", 100), "a  b c");
        assert_eq!(bounded_label(&"x".repeat(10_000), 100).len(), 100);
        assert_eq!(bounded_label("日本語テキスト", 3), "日本語");
    }

    #[test]
    fn values_are_written_as_the_text_format_reads_them() {
        assert_eq!(format_value(55500.0), "55500");
        assert_eq!(format_value(0.5), "0.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }
}
