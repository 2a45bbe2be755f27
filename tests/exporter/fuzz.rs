//! Every parser of a WeChat or token-service answer, fed generated answers: real answers of
//! the simulation for every report, period kind and call (and every backfill range call),
//! mutated at random (values of any type and size, removed and repeated entries, deep
//! nesting, truncated and corrupted bytes), and token answers of every shape.
//!
//! Each case runs the whole way an answer goes: read as WeChat's ([`wire::answer`]), parsed by
//! its report (as the agent and as `backfill` read it), assembled and rendered. It must never
//! panic, and what it renders must be well-formed exposition text: escaped, bounded label
//! values, finite values within what WeChat can send. Deterministic: a case is named by its
//! seed, and a failure prints the seed and the body.
//!
//! 20,000 cases by default, so that `cargo test` stays quick; the README's test command
//! (`scripts/test`) runs 1,000,000 (`FUZZ_CASES=1000000 cargo test --test exporter fuzz::`;
//! `FUZZ_SEED` changes the seed).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use wechat_miniprogram_exporter::exposition::Text;
use wechat_miniprogram_exporter::period::{beijing_midnight, Period};
use wechat_miniprogram_exporter::report::Settings as ReportSettings;
use wechat_miniprogram_exporter::report::{AppData, Held, Pieces, Report};
use wechat_miniprogram_exporter::simulation::model::{Model, Request};
use wechat_miniprogram_exporter::simulation::SimApp;
use wechat_miniprogram_exporter::wechat::token::{lifetime, Token};
use wechat_miniprogram_exporter::wechat::wire;
use wechat_miniprogram_exporter::wechat::Call;

/// Cases over all parsers by default; the report parsers share most of them, the token
/// parser the rest.
const CASES: u64 = 20_000;

/// The share of the cases given to token answers.
const TOKEN_SHARE: u64 = 10;

/// The largest value WeChat can send for a count (wire's bound) and the longest label value
/// kept from an answer (a page path).
const LARGEST_VALUE: f64 = 1e12;
const LONGEST_LABEL: usize = 256;

fn cases() -> u64 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(CASES)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0x5eed)
}

/// The calls that fetch periods of one report and kind, each with its real answer: the seed
/// of the mutations.
struct Target {
    report: Report,
    /// The calls of the latest completed period, or (`history`) backfill's calls for the
    /// last four periods.
    calls: Vec<Call>,
    /// The simulation's answer to each call, as bytes and as JSON.
    answers: Vec<Vec<u8>>,
    values: Vec<Value>,
    /// Whether the calls are backfill's (read with `parse_history`).
    history: bool,
    /// The periods the calls fetch, and the calls the agent makes for each.
    periods: Vec<Period>,
    period_calls: Vec<Vec<Call>>,
    /// For each call, the periods (indices of `periods`) its answer alone gives.
    covers: Vec<Vec<usize>>,
    /// For each call, the period calls its answer alone gives pieces for.
    gives: Vec<Vec<Call>>,
    /// Every unchanged answer read.
    seed: Pieces,
}

/// The simulated app and the instant the seeds are taken at (every period below published).
fn app() -> SimApp {
    SimApp::new("shop", "wx1234567890abcdef", "secret", 5000.0)
}

fn now() -> DateTime<Utc> {
    beijing_midnight(NaiveDate::from_ymd_opt(2024, 7, 2).unwrap()) + chrono::Duration::hours(20)
}

fn reports() -> ReportSettings {
    ReportSettings {
        enabled: wechat_miniprogram_exporter::report::ReportSet::all(),
        ..ReportSettings::default()
    }
}

/// For every report and kind, the calls of the latest completed period and, for a report
/// with history, backfill's calls for four periods, each with the simulation's answer.
fn targets() -> Vec<Target> {
    let sim = app();
    let reports = reports();
    let mut targets = Vec::new();
    for report in Report::all() {
        for &kind in report.kinds() {
            let period = Period::latest_completed(kind, now());
            let periods: Vec<Period> = (0..4).rev().map(|back| period.back(back)).collect();
            let mut sets = vec![(report.calls(period, &reports), false, vec![period])];
            if report.has_history() {
                sets.push((report.history_calls(&periods, &reports), true, periods));
            }
            for (calls, history, periods) in sets {
                let answers: Vec<Vec<u8>> = calls
                    .iter()
                    .map(|call| {
                        let body: Value = serde_json::from_str(&call.body).unwrap_or(json!({}));
                        let request = Request {
                            model: Model { app: &sim },
                            kind,
                            body: &body,
                            now: now(),
                        };
                        let answer = report.simulate(&request).unwrap_or_else(|refusal| {
                            panic!(
                                "the simulation refuses {} {}: {refusal:?}",
                                call.path, call.body
                            )
                        });
                        serde_json::to_vec(&answer).unwrap()
                    })
                    .collect();
                let mut target = Target {
                    report,
                    calls,
                    values: answers
                        .iter()
                        .map(|a| serde_json::from_slice(a).unwrap())
                        .collect(),
                    answers,
                    history,
                    period_calls: periods
                        .iter()
                        .map(|period| report.calls(*period, &reports))
                        .collect(),
                    periods,
                    covers: Vec::new(),
                    gives: Vec::new(),
                    seed: report.pieces(),
                };
                target.seed = target.read(&target.values);
                for call in 0..target.calls.len() {
                    let (covers, gives) = target.given_by(call);
                    target.covers.push(covers);
                    target.gives.push(gives);
                }
                targets.push(target);
            }
        }
    }
    targets
}

/// Generates and mutates JSON.
struct Fuzzer {
    rng: fastrand::Rng,
}

/// Strings that have broken parsers and exposition writers.
const NASTY: &[&str] = &[
    "",
    " ",
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e-320",
    "NaN",
    "inf",
    "-0",
    "9223372036854775807",
    "18446744073709551616",
    "0.1%",
    "100%",
    "12.5",
    " 42 ",
    "0x10",
    "20240701",
    "20240624-20240630",
    "20240701-20240601",
    "99999999",
    "广东省",
    "男",
    "17岁以下",
    "iPhone",
    "pages/index/index",
    "a\"b\\c\nd",
    "\n# HELP injected 1\ninjected 1",
    "x} 1\ny{a=\"",
    "\u{0}\u{7f}\u{202e}",
    "{\"nested\":\"json\"}",
    "[1,2,3]",
    "5eed0000000000000000000000000000",
];

impl Fuzzer {
    fn new(seed: u64) -> Fuzzer {
        Fuzzer {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.u32(0..100) < percent
    }

    fn number(&mut self) -> Value {
        match self.rng.u8(0..10) {
            0 => json!(0),
            1 => json!(-self.rng.i64(1..1_000_000)),
            2 => json!(i64::MAX),
            3 => json!(u64::MAX),
            4 => json!(1e308),
            5 => json!(-1e308),
            6 => json!(self.rng.f64() * 2.0),
            7 => json!(1e12 + 1.0),
            8 => json!(self.rng.i64(-10..10)),
            _ => json!(self.rng.u32(..)),
        }
    }

    fn string(&mut self) -> String {
        match self.rng.u8(0..8) {
            0 if self.chance(5) => "x".repeat(self.rng.usize(0..100_000)),
            0 => "/a\\\"b".repeat(self.rng.usize(20..200)),
            1 => (0..self.rng.usize(0..64))
                .map(|_| self.rng.char(..))
                .collect(),
            2 => format!("{}", self.rng.u64(..)),
            3 => "广".repeat(self.rng.usize(90..300)),
            _ => NASTY[self.rng.usize(..NASTY.len())].to_string(),
        }
    }

    /// Any JSON value, nested at most `depth` deep.
    fn wild(&mut self, depth: u32) -> Value {
        let leaf = depth == 0 || self.chance(60);
        match self.rng.u8(0..if leaf { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(self.rng.bool()),
            2 => self.number(),
            3 => Value::String(self.string()),
            4 => (0..self.rng.usize(0..5))
                .map(|_| self.wild(depth - 1))
                .collect(),
            _ => {
                let mut object = Map::new();
                for _ in 0..self.rng.usize(0..5) {
                    let key = if self.chance(50) {
                        NASTY[self.rng.usize(..NASTY.len())].to_string()
                    } else {
                        self.string()
                    };
                    object.insert(key, self.wild(depth - 1));
                }
                Value::Object(object)
            }
        }
    }

    /// Changes one place of `value`: somewhere down its tree, a value replaced, removed,
    /// repeated or wrapped.
    fn mutate(&mut self, value: &mut Value) {
        let descend = self.chance(85);
        match value {
            Value::Object(object) if descend && !object.is_empty() => {
                let key = object.keys().nth(self.rng.usize(..object.len())).cloned();
                let key = key.unwrap();
                if self.chance(10) {
                    object.remove(&key);
                } else {
                    self.mutate(object.get_mut(&key).unwrap());
                }
            }
            Value::Array(items) if descend && !items.is_empty() => {
                let at = self.rng.usize(..items.len());
                match self.rng.u8(0..10) {
                    0 => {
                        items.remove(at);
                    }
                    1 => {
                        let copy = items[at].clone();
                        items.insert(self.rng.usize(..=items.len()), copy);
                    }
                    _ => self.mutate(&mut items[at]),
                }
            }
            Value::String(text) if self.chance(50) => *text = self.string(),
            Value::Number(_) if self.chance(50) => *value = self.number(),
            _ => {
                *value = match self.rng.u8(0..10) {
                    0 => json!([value.take()]),
                    1 => json!({ "value": value.take() }),
                    2 => match value {
                        Value::Number(number) => Value::String(number.to_string()),
                        Value::String(text) => {
                            text.parse::<f64>().map(|n| json!(n)).unwrap_or(Value::Null)
                        }
                        _ => Value::Null,
                    },
                    _ => self.wild(3),
                }
            }
        }
    }

    /// The answer `seed` after a few changes, sometimes corrupted as bytes.
    fn body(&mut self, seed: &Value) -> Vec<u8> {
        let mut value = seed.clone();
        for _ in 0..self.rng.u32(1..5) {
            self.mutate(&mut value);
        }
        if let (true, Value::Object(object)) = (self.chance(3), &mut value) {
            object.insert("errcode".into(), self.number());
            object.insert("errmsg".into(), Value::String(self.string()));
        }
        let mut bytes = serde_json::to_vec(&value).unwrap();
        match self.rng.u8(0..40) {
            0 => bytes.truncate(self.rng.usize(..=bytes.len())),
            1 if !bytes.is_empty() => {
                let at = self.rng.usize(..bytes.len());
                bytes[at] = self.rng.u8(..);
            }
            2 => {
                let depth = self.rng.usize(100..100_000);
                bytes = [
                    &b"{\"list\":"[..],
                    &b"[".repeat(depth),
                    &b"]".repeat(depth),
                    b"}",
                ]
                .concat();
            }
            3 => {
                bytes = (0..self.rng.usize(0..256))
                    .map(|_| self.rng.u8(..))
                    .collect()
            }
            _ => {}
        }
        bytes
    }

    /// A token answer of any shape.
    fn token_body(&mut self) -> Vec<u8> {
        let mut answer = json!({"access_token": "ACCESS_TOKEN.abc-123", "expires_in": 7200});
        for _ in 0..self.rng.u32(0..4) {
            self.mutate(&mut answer);
        }
        if let Value::Object(object) = &mut answer {
            if self.chance(20) {
                object.insert("expires_in".into(), self.number());
            }
            if self.chance(20) {
                object.insert("access_token".into(), self.wild(2));
            }
        }
        let mut bytes = serde_json::to_vec(&answer).unwrap();
        if self.chance(5) {
            bytes.truncate(self.rng.usize(..=bytes.len()));
        }
        bytes
    }
}

impl Target {
    /// `answers` (one per call, `None`: unreadable) read into the report's pieces, as the
    /// agent (or `backfill`) reads them.
    fn read<'a>(&self, answers: impl IntoIterator<Item = &'a Value>) -> Pieces {
        let mut pieces = self.report.pieces();
        for (call, answer) in self.calls.iter().zip(answers) {
            self.read_value(&mut pieces, call, answer);
        }
        pieces
    }

    /// Reads `answer` as the text WeChat would send for it.
    fn read_value(&self, pieces: &mut Pieces, call: &Call, answer: &Value) {
        let text = answer.to_string();
        if let Ok(Some(answer)) = wire::answer(text.as_bytes()) {
            self.read_into(pieces, call, answer);
        }
    }

    fn read_into(&self, pieces: &mut Pieces, call: &Call, answer: wire::Answer<'_>) {
        if self.history {
            let _ = pieces.read_history(0, call, answer);
        } else {
            let _ = pieces.read(0, call, answer);
        }
    }

    /// The periods (indices) and the period calls the unchanged answer to call number
    /// `call` gives on its own.
    fn given_by(&self, call: usize) -> (Vec<usize>, Vec<Call>) {
        let mut pieces = self.report.pieces();
        self.read_value(&mut pieces, &self.calls[call], &self.values[call]);
        let reports = reports();
        let mut covers = Vec::new();
        let mut gives = Vec::new();
        for (index, period) in self.periods.iter().enumerate() {
            for each in self.report.calls(*period, &reports) {
                if pieces.holds(0, &each) {
                    covers.push(index);
                    gives.push(each);
                }
            }
        }
        covers.dedup();
        (covers, gives)
    }
}

/// Reads `bodies` as the answers to `target`'s calls (`None`: the unchanged answer) into the
/// report's pieces, as the agent (or `backfill`) does, an unreadable one read as nothing; then
/// the periods assembled and rendered: for backfill's calls, those a changed answer gives.
/// The text of every period exported.
fn run(target: &Target, bodies: &[Option<&[u8]>]) -> String {
    let report = target.report;
    // The unchanged answers as read once; a changed answer replaces what its call gave.
    let mut pieces = target.seed.clone();
    // What the changed answers alone give, to tell the periods they touch.
    let mut changed = report.pieces();
    for (number, body) in bodies.iter().enumerate() {
        let Some(body) = body else { continue };
        for call in &target.gives[number] {
            pieces.forget(0, call);
        }
        let Ok(Some(answer)) = wire::answer(body) else {
            continue;
        };
        let call = &target.calls[number];
        if target.history {
            target.read_into(&mut changed, call, answer);
        }
        target.read_into(&mut pieces, call, answer);
    }
    let reports = reports();
    let mut out = String::new();
    for (index, period) in target.periods.iter().enumerate() {
        // Backfill's periods that no changed answer gives (or gave) export what they did.
        let touched = bodies
            .iter()
            .zip(&target.covers)
            .any(|(body, covers)| body.is_some() && covers.contains(&index))
            || target.period_calls[index]
                .iter()
                .any(|call| changed.holds(0, call));
        if target.history && !touched {
            continue;
        }
        let Some(snapshot) = pieces.assemble(0, *period, &reports) else {
            continue;
        };
        let held = Held {
            period: *period,
            fetched_at: now(),
            snapshot,
        };
        let app = AppData {
            name: "shop".into(),
            appid: "wx1234567890abcdef".into(),
            up: true,
            held: BTreeMap::from([((report, period.kind()), held)]),
            ..Default::default()
        };
        report.render(&[&app], &mut Text::new(&mut out));
    }
    out
}

/// Checks that `text` is exposition text a scraper reads as intended; the first fault found.
fn check_exposition(text: &str) -> Result<(), String> {
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let fault = |what: &str| format!("{what}: {line}");
        let bytes = line.as_bytes();
        let name_end = bytes
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
            .ok_or(fault("no value"))?;
        let mut rest = &bytes[name_end..];
        if let Some(labels) = rest.strip_prefix(b"{") {
            rest = check_labels(labels).map_err(|what| fault(&what))?;
        }
        let value = rest
            .strip_prefix(b" ")
            .and_then(|value| std::str::from_utf8(value).ok()?.parse::<f64>().ok())
            .ok_or(fault("no value"))?;
        if !value.is_finite() || value.abs() > LARGEST_VALUE {
            return Err(fault("value out of bounds"));
        }
    }
    Ok(())
}

/// Reads `name="value",...}` and returns what follows; every value escaped and bounded.
fn check_labels(mut text: &[u8]) -> Result<&[u8], String> {
    loop {
        let equals = text
            .iter()
            .position(|&b| b == b'=')
            .ok_or("label without value")?;
        let name = &text[..equals];
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("bad label name {}", String::from_utf8_lossy(name)));
        }
        let value = text[equals + 1..]
            .strip_prefix(b"\"")
            .ok_or("label value not quoted")?;
        let (mut at, mut length) = (0, 0);
        loop {
            match value.get(at).ok_or("unterminated label value")? {
                b'\\' => match value.get(at + 1) {
                    Some(b'\\' | b'"' | b'n') => at += 1,
                    other => return Err(format!("bad escape {other:?}")),
                },
                b'"' => break,
                b'\n' => return Err("raw newline in a label value".into()),
                _ => {}
            }
            // Characters, not bytes: count the first byte of each.
            length += usize::from(value[at] & 0xC0 != 0x80);
            at += 1;
        }
        if length > LONGEST_LABEL {
            return Err(format!("a label value is {length} characters long"));
        }
        let after = &value[at + 1..];
        if let Some(next) = after.strip_prefix(b",") {
            text = next;
        } else if let Some(done) = after.strip_prefix(b"}") {
            return Ok(done);
        } else {
            return Err("label set not closed".into());
        }
    }
}

/// Runs `cases` cases from `seed` over `targets`, each in a panic guard that names it: one
/// answer of a target's calls changed, sometimes more.
fn fuzz_reports(targets: &[Target], seed: u64, cases: u64) {
    let mut exported = 0u64;
    for case in 0..cases {
        let case_seed = seed.wrapping_add(case);
        let mut fuzzer = Fuzzer::new(case_seed);
        let target = &targets[fuzzer.rng.usize(..targets.len())];
        let changed = fuzzer.rng.usize(..target.calls.len());
        let bodies: Vec<Option<Vec<u8>>> = (0..target.calls.len())
            .map(|call| {
                (call == changed || fuzzer.chance(10)).then(|| fuzzer.body(&target.values[call]))
            })
            .collect();
        let read: Vec<Option<&[u8]>> = bodies.iter().map(Option::as_deref).collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| run(target, &read)));
        let shown = || {
            let body = read[changed].unwrap_or_default();
            let call = &target.calls[changed];
            let body = String::from_utf8_lossy(&body[..body.len().min(2000)]).into_owned();
            format!("{} {} {}: {body}", target.report, call.path, call.body)
        };
        match outcome {
            Err(_) => panic!("case {case_seed} panicked on {}", shown()),
            Ok(text) => {
                exported += u64::from(!text.is_empty());
                if let Err(fault) = check_exposition(&text) {
                    panic!("case {case_seed}: {fault}\nanswer to {}", shown());
                }
            }
        }
    }
    // The mutations keep many answers readable: the parsers' paths past the first check
    // are exercised, not only the error paths.
    assert!(
        cases < 1000 || exported * 3 > cases,
        "only {exported} of {cases} cases exported anything"
    );
}

#[test]
fn the_simulation_answers_every_call_and_backfill_reads_the_same_values_as_the_agent() {
    let targets = targets();
    for report in Report::all() {
        assert!(
            targets.iter().any(|target| target.report == report),
            "{report} has no call"
        );
    }
    let mut latest = BTreeMap::new();
    for target in &targets {
        let answers: Vec<Option<&[u8]>> = target.answers.iter().map(|a| Some(&a[..])).collect();
        let text = run(target, &answers);
        assert!(!text.is_empty(), "{} exports nothing", target.report);
        check_exposition(&text).unwrap();
        let kind = target.periods[0].kind();
        match latest.get(&(target.report, kind)) {
            None => {
                latest.insert((target.report, kind), text);
            }
            Some(agent) => assert!(
                text.ends_with(agent.as_str()),
                "{} {kind:?}: backfill's latest period differs from the agent's",
                target.report
            ),
        }
    }
}

#[test]
fn the_exposition_check_finds_injected_lines_and_unbounded_values() {
    assert!(check_exposition("# HELP a b\n# TYPE a gauge\na{x=\"1\\n\\\"\"} 3").is_ok());
    assert!(check_exposition("a{x=\"1\ninjected 1\"} 3").is_err());
    assert!(check_exposition("a{x=\"1\"} 1e13").is_err());
    assert!(check_exposition("a{x=\"1\"} NaN").is_err());
    assert!(check_exposition(&format!("a{{x=\"{}\"}} 1", "p".repeat(300))).is_err());
    assert!(check_exposition("a{x=\"1\" 1").is_err());
}

/// The report cases, split in two halves so that both cores work.
fn report_cases(half: u64) {
    let targets = targets();
    let cases = cases() - cases() / TOKEN_SHARE;
    let first = cases / 2;
    let (start, count) = if half == 0 {
        (0, first)
    } else {
        (first, cases - first)
    };
    fuzz_reports(&targets, seed().wrapping_add(start), count);
}

#[test]
fn generated_answers_to_every_report_never_panic_and_render_well_formed_text_first_half() {
    report_cases(0);
}

#[test]
fn generated_answers_to_every_report_never_panic_and_render_well_formed_text_second_half() {
    report_cases(1);
}

#[test]
fn generated_token_answers_never_panic_and_give_a_sane_lifetime() {
    let cases = cases() / TOKEN_SHARE;
    let seed = seed().wrapping_add(u64::MAX / 2);
    let latest = wechat_miniprogram_exporter::clock::Moment::from_start(
        std::time::Duration::MAX - std::time::Duration::from_secs(86_400),
    );
    let mut tokens = 0u64;
    for case in 0..cases {
        let mut fuzzer = Fuzzer::new(seed.wrapping_add(case));
        let body = fuzzer.token_body();
        let outcome = catch_unwind(|| {
            let answer = wire::parse_token(&body).ok()?;
            let seconds = lifetime(answer.expires_in());
            let token = answer.token().ok()?;
            let fresh = Token::new(token.clone(), latest, seconds).is_fresh(latest);
            Some((token, seconds, fresh))
        });
        let shown = String::from_utf8_lossy(&body);
        match outcome {
            Err(_) => panic!("case {} panicked on: {shown}", seed.wrapping_add(case)),
            Ok(Some((token, seconds, fresh))) => {
                tokens += 1;
                assert!(
                    (30..=7200).contains(&seconds.as_secs()) && fresh,
                    "{shown}: {seconds:?}"
                );
                assert!(
                    !token.is_empty()
                        && token.len() <= 1024
                        && !token.chars().any(char::is_whitespace),
                    "{shown}"
                );
            }
            Ok(None) => {}
        }
    }
    assert!(
        cases < 1000 || tokens * 5 > cases,
        "only {tokens} of {cases} token answers were usable"
    );
}
