//! WeChat's wire format, the part every answer shares: JSON objects, errcodes, lenient numbers.
//!
//! Parsing is lenient where WeChat is loose and strict where it matters. Any numeric field may
//! be missing, `null`, a float written as an integer (`"stay_time_session": 211`) or a numeric
//! string; a field that cannot be read becomes `None` ([`Num`]), never 0, and never fails the
//! report. `errcode` may be a number or a string; 61503 means "not published yet". A body that
//! is not a JSON object, or an answer for another period, is a decode error. Each report reads
//! the rest of its answer with private serde types of its own (see `crate::report`).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

pub use super::lenient::{fields, Text};
use super::lenient::{numeric, Number, Skip};
use super::WeChatError;
use crate::period::Period;

/// The errcode WeChat uses for "data not ready".
const NOT_READY: i64 = 61503;

/// The largest count believed: no Mini Program has a trillion of anything in a day.
pub const MAX_COUNT: f64 = 1e12;

/// A count or a duration as WeChat may write it (a number or a numeric string); anything
/// unreadable is `None`, and so is a value that cannot be true (negative, or above
/// [`MAX_COUNT`]), which is counted as invalid. Use it for every numeric field of a wire type,
/// with `#[serde(default)]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Num(pub Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Number(value) = Number::deserialize(deserializer)?;
        let believable = value.filter(|value| (0.0..=MAX_COUNT).contains(value));
        if value.is_some() && believable.is_none() {
            note(Dropped::Invalid);
        }
        Ok(Num(believable))
    }
}

/// A number that may be negative (a memory difference), read as leniently as [`Num`]; only a
/// value beyond ±[`MAX_COUNT`] is invalid.
#[derive(Debug, Default, Clone, Copy)]
pub struct Signed(pub Option<f64>);

impl<'de> Deserialize<'de> for Signed {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Number(value) = Number::deserialize(deserializer)?;
        let believable = value.filter(|value| value.abs() <= MAX_COUNT);
        if value.is_some() && believable.is_none() {
            note(Dropped::Invalid);
        }
        Ok(Signed(believable))
    }
}

/// Why a value of an answer was dropped rather than exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// It cannot be true (negative, absurdly large, a share above 1).
    Invalid,
    /// The answer gave the same entry twice; the first is kept.
    Duplicate,
}

/// The values dropped while reading one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Values that cannot be true.
    pub invalid: u32,
    /// Entries given twice.
    pub duplicate: u32,
}

impl Tally {
    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

thread_local! {
    static TALLY: std::cell::Cell<Tally> = const { std::cell::Cell::new(Tally { invalid: 0, duplicate: 0 }) };
}

/// Runs `read` (the reading of one answer, which does not await) and counts what it dropped
/// through [`note`].
pub fn tally<R>(read: impl FnOnce() -> R) -> (R, Tally) {
    TALLY.with(|tally| tally.set(Tally::default()));
    let result = read();
    (result, TALLY.with(|tally| tally.take()))
}

/// Counts a value dropped while reading an answer (see [`tally`]).
pub fn note(dropped: Dropped) {
    TALLY.with(|tally| {
        let mut counts = tally.get();
        match dropped {
            Dropped::Invalid => counts.invalid = counts.invalid.saturating_add(1),
            Dropped::Duplicate => counts.duplicate = counts.duplicate.saturating_add(1),
        }
        tally.set(counts);
    });
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => numeric(text),
        _ => None,
    }
    .filter(|number| number.is_finite())
}

/// An access-token answer, from WeChat or from an external token service.
#[derive(Deserialize)]
pub struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Signed,
}

/// The longest access token taken: WeChat's are about 150 characters.
const MAX_TOKEN_LENGTH: usize = 1024;

impl TokenAnswer {
    /// A bare token with no lifetime, as a plain token file holds it.
    pub fn bare(token: &str) -> TokenAnswer {
        TokenAnswer {
            access_token: Some(token.to_string()),
            expires_in: Signed(None),
        }
    }

    /// The lifetime the source gave, in seconds, if it gave a number.
    pub fn expires_in(&self) -> Option<f64> {
        self.expires_in.0
    }

    /// The token, if it is one: not empty, not too long, printable without spaces.
    pub fn token(self) -> Result<String, WeChatError> {
        let token = self.access_token.unwrap_or_default();
        let token = token.trim();
        if token.is_empty() {
            return Err(WeChatError::Decode(
                "token answer without access_token".into(),
            ));
        }
        if token.len() > MAX_TOKEN_LENGTH
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(WeChatError::Decode(format!(
                "the access_token is not a token (longer than {MAX_TOKEN_LENGTH} characters, or with spaces)"
            )));
        }
        Ok(token.to_string())
    }
}

/// An answer as WeChat sent it: a JSON object with no errcode (or errcode 0), not yet read
/// into a report's wire type. Each report reads it once, straight from the received text, into
/// the wire type it expects ([`Answer::read`]); the text itself is what is kept of it
/// ([`Answer::kept`]).
#[derive(Clone, Copy, Debug)]
pub struct Answer<'a> {
    raw: &'a RawValue,
}

impl PartialEq for Answer<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}

impl<'a> Answer<'a> {
    /// Reads the answer into a report's wire type.
    pub fn read<T: Deserialize<'a>>(self) -> Result<T, WeChatError> {
        serde_json::from_str(self.raw.get()).map_err(decode_error)
    }

    /// The answer as received, to keep (for the state on disk).
    pub fn kept(self) -> Box<RawValue> {
        self.raw.to_owned()
    }

    /// The answer's text.
    pub fn text(self) -> &'a str {
        self.raw.get()
    }
}

/// Reads a body as a JSON object (anything else, HTML, truncated JSON, an array, is a decode
/// error) and checks its errcode: the object, and whether it says "not ready".
fn object(body: &[u8]) -> Result<(&RawValue, bool), WeChatError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| WeChatError::Decode("the answer is not UTF-8 text".into()))?;
    let raw: &RawValue = serde_json::from_str(text).map_err(decode_error)?;
    let first = raw.get().as_bytes().first().copied();
    if first != Some(b'{') {
        return Err(WeChatError::Decode(format!(
            "expected a JSON object, got {}",
            kind_of(first)
        )));
    }
    let head: Head = match may_name_errcode(raw.get()) {
        true => serde_json::from_str(raw.get()).map_err(decode_error)?,
        false if nested_too_deep(raw.get()) => {
            return Err(WeChatError::Decode(format!(
                "the answer is nested deeper than {MAX_DEPTH} levels"
            )))
        }
        false => Head::default(),
    };
    Ok((raw, head.check()?))
}

/// Whether a JSON text may have a key `errcode`: a key is its letters as written or through
/// `\u` escapes, so a text with neither has none, and reading its head would find nothing. A
/// report's answer (often tens of kilobytes) is then only scanned for its depth
/// ([`nested_too_deep`]), not read a second time.
fn may_name_errcode(text: &str) -> bool {
    text.contains("errcode") || text.contains("\\u")
}

/// The deepest nesting serde_json reads (its recursion limit), the top object counted.
const MAX_DEPTH: usize = 127;

/// Whether valid JSON `text` nests arrays and objects deeper than [`MAX_DEPTH`]: the bound
/// that reading the answer's head ([`Skip`]) enforces, kept when the head is not read.
fn nested_too_deep(text: &str) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text.as_bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// What a JSON value is, from its first character.
fn kind_of(first: Option<u8>) -> &'static str {
    match first {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') | None => "null",
        Some(_) => "a number",
    }
}

/// Reads a body as WeChat answers it: `Ok(None)` for "not ready" (errcode 61503), `Err` for
/// another errcode or a body that is not a JSON object, else the answer.
pub fn answer(body: &[u8]) -> Result<Option<Answer<'_>>, WeChatError> {
    let (raw, not_ready) = object(body)?;
    Ok((!not_ready).then_some(Answer { raw }))
}

/// The errcode and errmsg of an answer, every other field skipped unread. A field given
/// twice counts as its last, as in any JSON object read whole.
#[derive(Default)]
struct Head {
    errcode: Option<Value>,
    errmsg: Option<Value>,
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadVisitor)
    }
}

struct HeadVisitor;

/// A field of an answer, as far as [`Head`] cares.
enum HeadField {
    Errcode,
    Errmsg,
    Other,
}

impl<'de> Deserialize<'de> for HeadField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl serde::de::Visitor<'_> for FieldVisitor {
            type Value = HeadField;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, name: &str) -> Result<HeadField, E> {
                Ok(match name {
                    "errcode" => HeadField::Errcode,
                    "errmsg" => HeadField::Errmsg,
                    _ => HeadField::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> serde::de::Visitor<'de> for HeadVisitor {
    type Value = Head;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Head, M::Error> {
        let mut head = Head::default();
        while let Some(field) = map.next_key::<HeadField>()? {
            match field {
                HeadField::Errcode => head.errcode = Some(map.next_value()?),
                HeadField::Errmsg => head.errmsg = Some(map.next_value()?),
                HeadField::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(head)
    }
}

impl Head {
    /// Checks the errcode: `Err` for a non-zero one, `Ok(true)` for "not ready".
    fn check(self) -> Result<bool, WeChatError> {
        let errcode = self
            .errcode
            .as_ref()
            .and_then(number)
            .map(|code| code as i64);
        match errcode {
            None | Some(0) => Ok(false),
            Some(NOT_READY) => Ok(true),
            Some(errcode) => Err(WeChatError::Api {
                errcode,
                errmsg: match self.errmsg {
                    Some(Value::String(text)) => excerpt(&text),
                    None | Some(Value::Null) => String::new(),
                    Some(other) => excerpt(&other.to_string()),
                },
            }),
        }
    }
}

/// The longest `errmsg` kept, in characters: an error message is for a log line.
const ERRMSG_LENGTH: usize = 200;

/// The start of an upstream error message, on one line.
fn excerpt(text: &str) -> String {
    let mut short: String = text
        .chars()
        .take(ERRMSG_LENGTH)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(ERRMSG_LENGTH).is_some() {
        short.push('…');
    }
    short
}

/// Reads a JSON value inside an answer (JSON given in a string, say) into a wire type.
pub fn read_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, WeChatError> {
    serde_json::from_value(value).map_err(decode_error)
}

/// Parses a token answer, or the errcode it carries.
pub fn parse_token(body: &[u8]) -> Result<TokenAnswer, WeChatError> {
    let (raw, _) = object(body)?;
    serde_json::from_str(raw.get()).map_err(decode_error)
}

fn decode_error(error: serde_json::Error) -> WeChatError {
    WeChatError::Decode(error.to_string())
}

/// Checks that an answer's `ref_date`, when present, names the period asked for.
pub fn check_ref_date(ref_date: Option<&str>, period: Period) -> Result<(), WeChatError> {
    match ref_date {
        Some(text) if Period::parse_ref_date(text) != Some(period) => Err(WeChatError::Decode(
            format!("answer is for ref_date {text:?}, not {}", period.ref_date()),
        )),
        _ => Ok(()),
    }
}

/// A whole number, if `value` is one.
pub fn integer(value: Option<f64>) -> Option<i64> {
    value.filter(|v| v.fract() == 0.0).map(|v| v as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcode_61503_means_not_ready_and_may_be_a_string() {
        assert_eq!(
            answer(br#"{"errcode":61503,"errmsg":"data not ready"}"#),
            Ok(None)
        );
        assert_eq!(answer(br#"{"errcode":"61503"}"#), Ok(None));
    }

    #[test]
    fn errcodes_become_errors_whether_number_or_string() {
        for body in [
            r#"{"errcode":40001,"errmsg":"invalid credential"}"#,
            r#"{"errcode":"40001","errmsg":"invalid credential"}"#,
        ] {
            assert_eq!(
                answer(body.as_bytes()),
                Err(WeChatError::Api {
                    errcode: 40001,
                    errmsg: "invalid credential".into()
                })
            );
        }
        assert!(matches!(
            answer(br#"{"errcode":-1}"#),
            Err(WeChatError::Api { errcode: -1, .. })
        ));
        // errcode 0 with data is a success.
        let body = br#"{"errcode":0,"errmsg":"ok","list":[{"ref_date":"20170313","visit_uv":5}]}"#;
        assert!(matches!(answer(body), Ok(Some(_))));
    }

    #[test]
    fn a_huge_error_message_is_kept_as_one_line_of_200_characters() {
        let message = format!("line one\nline two {}", "x".repeat(1_000_000));
        let body = serde_json::json!({"errcode": 40013, "errmsg": message}).to_string();
        let Err(WeChatError::Api { errmsg, .. }) = answer(body.as_bytes()) else {
            panic!("an error");
        };
        assert_eq!(
            errmsg.chars().count(),
            201,
            "200 characters and an ellipsis"
        );
        assert!(errmsg.starts_with("line one line two x") && errmsg.ends_with('…'));
    }

    #[test]
    fn garbage_and_truncated_bodies_are_decode_errors() {
        for body in [
            "<html>502 Bad Gateway</html>",
            r#"{"list":[{"ref_date":"2017"#,
            "",
            "[1,2]",
        ] {
            assert!(
                matches!(answer(body.as_bytes()), Err(WeChatError::Decode(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn answers_nested_deeper_than_128_levels_are_decode_errors_in_any_field() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for field in ["list", "access_token", "errmsg"] {
            let body = format!("{{\"{field}\":{}}}", nested(200_000));
            assert!(
                matches!(answer(body.as_bytes()), Err(WeChatError::Decode(_))),
                "{field}"
            );
            assert!(
                matches!(parse_token(body.as_bytes()), Err(WeChatError::Decode(_))),
                "{field}"
            );
        }
        let body = format!("{{\"list\":{}}}", nested(100));
        assert!(matches!(answer(body.as_bytes()), Ok(Some(_))));
    }

    #[test]
    fn an_answer_without_errcode_is_refused_at_the_very_depth_reading_its_head_refuses() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for depth in 120..136 {
            for body in [
                format!("{{\"list\":{}}}", nested(depth)),
                format!(r#"{{"list":[{{"a":"[\"{{"}},{}]}}"#, nested(depth)),
            ] {
                let head = serde_json::from_str::<Head>(&body).is_ok();
                assert!(!may_name_errcode(&body));
                assert_eq!(answer(body.as_bytes()).is_ok(), head, "{depth}: {body}");
            }
        }
    }

    #[test]
    fn an_errcode_is_found_however_its_key_is_written() {
        for body in [
            r#"{"errcode":40001,"errmsg":"invalid credential"}"#,
            r#"{"list":[],"errcode":40001}"#,
            r#"{"\u0065rrcode":40001,"list":[]}"#,
            r#"{"err\u0063ode":40001}"#,
        ] {
            assert!(
                matches!(
                    answer(body.as_bytes()),
                    Err(WeChatError::Api { errcode: 40001, .. })
                ),
                "{body}"
            );
        }
        let not_ready = r#"{"\u0065rrcode":61503}"#;
        assert!(matches!(answer(not_ready.as_bytes()), Ok(None)));
        let data = r#"{"list":[{"ref_date":"20170313","visit_uv":5,"errmsg":"x"}]}"#;
        assert!(matches!(answer(data.as_bytes()), Ok(Some(_))));
    }

    #[test]
    fn an_answer_is_read_from_the_text_received_and_kept_as_it_came() {
        let body = r#"{"list":[{"ref_date":"20170313", "visit_uv":5}],"list":[],"x":"\u4e2d"}"#;
        let answer = answer(body.as_bytes()).unwrap().unwrap();
        assert_eq!(answer.kept().get(), body);
        let text = "{\"errcode\":0,\"errmsg\":\"ok\"} ";
        assert_eq!(
            self::answer(text.as_bytes()).unwrap().unwrap().text(),
            text.trim()
        );
        assert!(matches!(
            self::answer(b"{\"list\":\"\xff\"}"),
            Err(WeChatError::Decode(_))
        ));
    }

    #[test]
    fn an_answer_for_another_period_is_refused() {
        let day = Period::parse_ref_date("20170313").unwrap();
        assert!(check_ref_date(Some("20170313"), day).is_ok());
        assert!(check_ref_date(None, day).is_ok());
        assert!(matches!(
            check_ref_date(Some("20170312"), day),
            Err(WeChatError::Decode(_))
        ));
    }

    #[test]
    fn numbers_are_read_leniently_and_never_invented() {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            a: Num,
            #[serde(default)]
            b: Num,
            #[serde(default)]
            c: Num,
            #[serde(default)]
            d: Num,
            #[serde(default)]
            e: Num,
        }
        let wire: Wire =
            read_value(serde_json::json!({"a": 211, "b": "12.5", "c": null, "d": "n/a"})).unwrap();
        assert_eq!(
            [wire.a.0, wire.b.0, wire.c.0, wire.d.0, wire.e.0],
            [Some(211.0), Some(12.5), None, None, None]
        );
        assert_eq!(integer(Some(3.0)), Some(3));
        assert_eq!(integer(Some(1.5)), None);
    }

    #[test]
    fn token_answers_are_read_and_token_errors_reported() {
        let token = parse_token(br#"{"access_token":"ACCESS","expires_in":7200}"#).unwrap();
        assert_eq!(token.access_token.as_deref(), Some("ACCESS"));
        assert_eq!(token.expires_in(), Some(7200.0));
        assert!(matches!(
            parse_token(br#"{"errcode":40125,"errmsg":"invalid appsecret"}"#),
            Err(WeChatError::Api { errcode: 40125, .. })
        ));
    }
}
