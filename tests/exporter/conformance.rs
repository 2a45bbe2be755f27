//! The conformance corpus: answers of the real WeChat service as others wrote them down
//! (official examples, SDK fixtures, live answers pasted into code), kept verbatim in
//! `tests/conformance/answers/` and listed with their source in
//! `tests/conformance/manifest.toml`.
//!
//! Each answer is replayed end to end, as the exporter reads it: the report's own call for the
//! period asked (its dates are the request the source made, where the call has dates), the
//! body read as WeChat's wire format, the report's parsing, assembly and rendering. The
//! samples exported must be exactly those the manifest lists, each equal to the number the
//! answer holds at the JSON pointer given (read here from the answer itself, not through the
//! exporter's code), absent where the answer has none, and the values dropped as impossible
//! counted as the manifest says. Error answers must give their errcode, label and reaction;
//! token answers their token and lifetime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use chrono::DateTime;
use figment::providers::{Format, Toml};
use figment::Figment;
use serde::Deserialize;
use serde_json::Value;

use wechat_miniprogram_exporter::exposition::Text;
use wechat_miniprogram_exporter::period::Period;
use wechat_miniprogram_exporter::report::Settings as ReportSettings;
use wechat_miniprogram_exporter::report::{AppData, Held, Pieces, Report};
use wechat_miniprogram_exporter::wechat::{wire, Call, WeChatError};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance");

#[derive(Deserialize)]
struct Manifest {
    answer: Vec<Answer>,
}

/// One answer of the corpus: what was asked, where it comes from, what it shows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    file: String,
    endpoint: String,
    request: String,
    source: String,
    kind: String,
    quirk: String,
    #[serde(default)]
    replay: Vec<Replay>,
    #[serde(default)]
    error: Option<Refusal>,
    #[serde(default)]
    token: Option<TokenAnswer>,
}

/// The answer given to one call of the exporter, and what it must export.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    /// The period asked, as WeChat writes its `ref_date`.
    period: String,
    /// Which of the period's calls the answer answers, by its number (0, the first, if
    /// absent).
    #[serde(default)]
    call: usize,
    /// The answer is one of several calls of the period, replayed alone: assembled without
    /// the others (which the exporter waits for before it exports the period).
    #[serde(default)]
    alone: bool,
    /// Every sample of the report's families, without the app's labels, and where the answer
    /// holds its value.
    #[serde(default)]
    expect: BTreeMap<String, Expected>,
    /// Families that must have no sample.
    #[serde(default)]
    absent: Vec<String>,
    /// Values dropped as impossible (`invalid`) or given twice (`duplicate`).
    #[serde(default)]
    dropped: Dropped,
}

#[derive(Deserialize, Default, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct Dropped {
    #[serde(default)]
    invalid: u32,
    #[serde(default)]
    duplicate: u32,
}

/// Where the answer holds an expected value.
#[derive(Deserialize)]
#[serde(untagged)]
enum Expected {
    /// A JSON pointer (`a#/b` reads the JSON inside the string at `a`, then `/b`).
    Pointer(String),
    /// A pointer's number in another unit (milliseconds to seconds: `divided_by = 1000`).
    Scaled { pointer: String, divided_by: f64 },
    /// One pointer's number divided by another's.
    Ratio { ratio: [String; 2] },
    /// A number that is not in the answer (an info metric's 1, a cohort's start).
    Value { value: f64 },
}

/// An error answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Refusal {
    errcode: i64,
    /// The `errcode` label of `wechat_miniprogram_api_errors_total`.
    label: String,
    /// How the exporter reacts.
    class: String,
    #[serde(default)]
    token_rejected: bool,
}

/// A token answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenAnswer {
    /// The pointer to the token.
    token: String,
    /// The lifetime the exporter caches it for, in seconds.
    cached_for: u64,
}

fn manifest() -> Manifest {
    Figment::from(Toml::file(Path::new(CORPUS).join("manifest.toml")))
        .extract()
        .expect("the manifest reads")
}

fn body(answer: &Answer) -> String {
    let path = Path::new(CORPUS).join("answers").join(&answer.file);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The number at `pointer` of `answer`: a JSON number, or a string holding one.
fn at(answer: &Value, pointer: &str) -> f64 {
    let (outer, inner) = pointer.split_once('#').unwrap_or((pointer, ""));
    let mut value = answer
        .pointer(outer)
        .unwrap_or_else(|| panic!("no {outer} in the answer"))
        .clone();
    if !inner.is_empty() {
        let text = value.as_str().expect("a string of JSON");
        let nested: Value = serde_json::from_str(text).unwrap();
        value = nested
            .pointer(inner)
            .unwrap_or_else(|| panic!("no {inner} in {outer}"))
            .clone();
    }
    match value {
        Value::Number(number) => number.as_f64().unwrap(),
        Value::String(text) => text.trim().parse().unwrap(),
        other => panic!("{pointer} is {other}, not a number"),
    }
}

impl Expected {
    fn value(&self, answer: &Value) -> f64 {
        match self {
            Expected::Pointer(pointer) => at(answer, pointer),
            Expected::Scaled {
                pointer,
                divided_by,
            } => at(answer, pointer) / divided_by,
            Expected::Ratio { ratio: [a, b] } => at(answer, a) / at(answer, b),
            Expected::Value { value } => *value,
        }
    }
}

/// A sample line without the app's labels: `name{labels} value`.
fn without_app(line: &str) -> (String, f64) {
    let (series, value) = line.rsplit_once(' ').unwrap();
    let series = series
        .replace("appid=\"wx0000000000000000\",app=\"conformance\",", "")
        .replace("{appid=\"wx0000000000000000\",app=\"conformance\"}", "");
    (series, value.parse().unwrap())
}

/// The report's call number `number` of `period`.
fn call_of(report: Report, period: Period, number: usize) -> Call {
    let calls = report.calls(period, &ReportSettings::default());
    calls
        .into_iter()
        .nth(number)
        .unwrap_or_else(|| panic!("{report} has no call {number} for {period}"))
}

/// The request's dates, where the call has them, are those the source asked.
fn check_request(answer: &Answer, call: &Call) {
    let asked: Value = serde_json::from_str(&answer.request).expect("the request is JSON");
    let ours: Value = serde_json::from_str(&call.body).unwrap();
    for key in ["begin_date", "end_date"] {
        if let Some(date) = ours.get(key) {
            assert_eq!(asked.get(key), Some(date), "{}: {key}", answer.file);
        }
    }
}

/// Reads `text` as the answer to `call` into the report's pieces, and what was dropped.
fn parse(report: Report, call: &Call, text: &str) -> (Pieces, Dropped) {
    let mut pieces = report.pieces();
    let (read, tally) = wire::tally(|| {
        let answer = wire::answer(text.as_bytes())?.expect("an answer, not 61503");
        pieces.read(0, call, answer)
    });
    read.unwrap_or_else(|error| panic!("{call:?}: {error}"));
    let dropped = Dropped {
        invalid: tally.invalid,
        duplicate: tally.duplicate,
    };
    (pieces, dropped)
}

/// The samples of `report` exported for `period` from `pieces` (the answer to one of its
/// calls); `alone`: whatever the period's first call would answer.
fn exported(report: Report, period: Period, pieces: &Pieces, alone: bool) -> Vec<String> {
    let reports = ReportSettings::default();
    let snapshot = if alone {
        Some(pieces.assemble_any(0, period, &reports))
    } else {
        pieces.assemble(0, period, &reports)
    };
    let Some(snapshot) = snapshot else {
        return Vec::new();
    };
    let held = Held {
        period,
        fetched_at: DateTime::from_timestamp(0, 0).unwrap(),
        snapshot: Arc::clone(&snapshot),
    };
    let app = AppData {
        name: "conformance".into(),
        appid: "wx0000000000000000".into(),
        up: true,
        held: BTreeMap::from([((report, period.kind()), held)]),
        ..Default::default()
    };
    let mut text = String::new();
    report.render(&[&app], &mut Text::new(&mut text));
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(String::from)
        .collect()
}

fn replay(answer: &Answer, text: &str) {
    let (report, kind) = Report::by_path(&answer.endpoint)
        .unwrap_or_else(|| panic!("{}: {} is no report's path", answer.file, answer.endpoint));
    let document: Value = serde_json::from_str(text).unwrap();
    assert!(
        !answer.replay.is_empty(),
        "{}: nothing replayed",
        answer.file
    );
    for replay in &answer.replay {
        let period = Period::parse_ref_date(&replay.period).expect("a period");
        assert_eq!(period.kind(), kind, "{}", answer.file);
        let call = call_of(report, period, replay.call);
        check_request(answer, &call);
        let (pieces, dropped) = parse(report, &call, text);
        let context = format!("{} as the answer to {} {}", answer.file, report, period);
        assert_eq!(dropped, replay.dropped, "{context}: values dropped");
        let lines = exported(report, period, &pieces, replay.alone);
        let got: BTreeMap<String, f64> = lines.iter().map(|line| without_app(line)).collect();
        assert_eq!(got.len(), lines.len(), "{context}: a series twice");
        let expected: BTreeSet<&String> = replay.expect.keys().collect();
        let found: BTreeSet<&String> = got.keys().collect();
        assert_eq!(found, expected, "{context}: the series exported");
        for (series, place) in &replay.expect {
            assert_eq!(got[series], place.value(&document), "{context}: {series}");
        }
        for family in &replay.absent {
            assert!(
                !got.keys()
                    .any(|series| series.split('{').next() == Some(family)),
                "{context}: {family} exported"
            );
        }
    }
}

fn refusal(answer: &Answer, text: &str, refusal: &Refusal) {
    let error = wire::answer(text.as_bytes()).expect_err(&answer.file);
    let WeChatError::Api { errcode, errmsg } = &error else {
        panic!("{}: {error:?}", answer.file);
    };
    assert_eq!(*errcode, refusal.errcode, "{}", answer.file);
    assert!(!errmsg.is_empty(), "{}: the message is kept", answer.file);
    assert_eq!(error.label(), refusal.label, "{}", answer.file);
    assert_eq!(
        format!("{:?}", error.class()),
        refusal.class,
        "{}",
        answer.file
    );
    assert_eq!(
        error.is_token_rejected(),
        refusal.token_rejected,
        "{}",
        answer.file
    );
}

fn token(answer: &Answer, text: &str, expected: &TokenAnswer) {
    let document: Value = serde_json::from_str(text).unwrap();
    let read = wire::parse_token(text.as_bytes()).unwrap();
    let lifetime = wechat_miniprogram_exporter::wechat::token::lifetime(read.expires_in());
    assert_eq!(
        lifetime.as_secs(),
        expected.cached_for,
        "{}: lifetime",
        answer.file
    );
    let wanted = document.pointer(&expected.token).and_then(Value::as_str);
    assert_eq!(read.token().ok().as_deref(), wanted, "{}", answer.file);
}

#[test]
fn every_answer_of_the_corpus_is_exported_exactly_as_the_service_sent_it() {
    let manifest = manifest();
    for answer in &manifest.answer {
        let text = body(answer);
        assert!(
            ["doc example", "fixture", "live answer"].contains(&answer.kind.as_str()),
            "{}: kind {}",
            answer.file,
            answer.kind
        );
        assert!(!answer.source.is_empty() && !answer.quirk.is_empty());
        match (&answer.error, &answer.token) {
            (Some(expected), _) => refusal(answer, &text, expected),
            (None, Some(expected)) => token(answer, &text, expected),
            (None, None) => replay(answer, &text),
        }
    }
}

#[test]
fn the_corpus_holds_thirty_real_answers_over_every_endpoint_the_exporter_calls() {
    let manifest = manifest();
    assert!(manifest.answer.len() >= 30, "{}", manifest.answer.len());
    let listed: BTreeSet<&str> = manifest.answer.iter().map(|a| a.file.as_str()).collect();
    assert_eq!(listed.len(), manifest.answer.len(), "a file listed twice");
    let on_disk: BTreeSet<String> = std::fs::read_dir(Path::new(CORPUS).join("answers"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(
        listed, on_disk,
        "every file listed, every listed file there"
    );
    let endpoints: BTreeSet<&str> = manifest
        .answer
        .iter()
        .map(|a| a.endpoint.as_str())
        .collect();
    for report in Report::all() {
        for kind in report.kinds() {
            assert!(
                endpoints.contains(report.path(*kind)),
                "no answer of {}",
                report.path(*kind)
            );
        }
    }
    for path in ["cgi-bin/stable_token", "cgi-bin/token"] {
        assert!(endpoints.contains(path), "no answer of {path}");
    }
    assert!(manifest.answer.iter().any(|a| a.error.is_some()));
}
