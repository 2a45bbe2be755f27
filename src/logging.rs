//! Log output: `logfmt` (the default) or `json`, at a chosen level, to any writer.
//!
//! Only this crate logs at the chosen level; libraries log warnings and errors only. Nothing
//! logged anywhere holds a secret or a token: the client scrubs its errors and no code logs a
//! request URL.

use std::fmt::{self, Write as _};

use clap::ValueEnum;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;

/// The `--log.format` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `ts=... level=info msg="..." key=value`.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The `--log.level` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Every request decision.
    Debug,
    /// Fetched periods, start and stop (the default).
    Info,
    /// Retried errors.
    Warn,
    /// Configuration errors and exhausted quotas only.
    Error,
}

impl From<LogLevel> for Level {
    fn from(level: LogLevel) -> Level {
        match level {
            LogLevel::Debug => Level::DEBUG,
            LogLevel::Info => Level::INFO,
            LogLevel::Warn => Level::WARN,
            LogLevel::Error => Level::ERROR,
        }
    }
}

/// A subscriber writing `format` at `level` to `writer`.
pub fn subscriber<W>(
    level: LogLevel,
    format: LogFormat,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target(env!("CARGO_CRATE_NAME"), Level::from(level));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Logfmt => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .event_format(Logfmt)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer),
            ),
        ),
    }
}

/// The logfmt line format.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = format!(
            "ts={} level={}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            metadata.level().as_str().to_ascii_lowercase(),
        );
        let mut fields = LogfmtFields {
            line: &mut line,
            message: None,
        };
        event.record(&mut fields);
        if let Some(message) = fields.message.take() {
            // The message goes first after the level, as people read it first.
            let at = line
                .find(" level=")
                .map(|i| i + " level=".len())
                .unwrap_or(0);
            let end = line[at..].find(' ').map_or(line.len(), |i| at + i);
            line.insert_str(end, &format!(" msg={}", quote(&message)));
        }
        writeln!(writer, "{line}")
    }
}

struct LogfmtFields<'a> {
    line: &'a mut String,
    message: Option<String>,
}

impl Visit for LogfmtFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            let _ = write!(self.line, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// A logfmt value: bare if it is a plain word, quoted and escaped otherwise.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat) -> String {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = subscriber(LogLevel::Info, format, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                app = "shop",
                errcode = 40164,
                error = "not whitelisted",
                "configuration error"
            );
            tracing::debug!("hidden at info");
        });
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn logfmt_lines_carry_level_message_and_fields() {
        let line = logged(LogFormat::Logfmt);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.starts_with("ts="), "{line}");
        assert!(line.contains(" level=info msg=\"configuration error\" app=shop errcode=40164 error=\"not whitelisted\""), "{line}");
    }

    #[test]
    fn json_lines_are_objects() {
        let line = logged(LogFormat::Json);
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["message"], "configuration error");
        assert_eq!(value["app"], "shop");
        assert_eq!(value["level"], "INFO");
    }
}
