//! Reading JSON values leniently, straight from an answer's text and without building a
//! `serde_json::Value` of them: any value as a number ([`Number`]), a string borrowed when it
//! can be ([`Text`]), the named fields of an object as their texts ([`fields`]), any value
//! skipped within serde_json's depth bound ([`Skip`]). The wire types of `wire` and of the
//! reports are made of these.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Any JSON value read as a number: a number, or a string holding one; anything else
/// (skipped unread) is `None`. What `wire` makes of the same value read whole.
pub struct Number(pub Option<f64>);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> serde::de::Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Number, E> {
        Ok(Number(None))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Number, E> {
        Ok(Number(Some(value as f64)))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Number, E> {
        Ok(Number(Some(value as f64)))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Number, E> {
        Ok(Number(Some(value).filter(|value| value.is_finite())))
    }

    fn visit_str<E>(self, text: &str) -> Result<Number, E> {
        Ok(Number(numeric(text)))
    }

    fn visit_unit<E>(self) -> Result<Number, E> {
        Ok(Number(None))
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, seq: S) -> Result<Number, S::Error> {
        SkipVisitor.visit_seq(seq).map(|_| Number(None))
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Number, M::Error> {
        SkipVisitor.visit_map(map).map(|_| Number(None))
    }
}

/// The number a string holds, spaces around it allowed.
pub fn numeric(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// Any JSON value, read and dropped without a copy, no deeper than serde_json reads a value
/// (128 levels): the skipping of `IgnoredAny` has no such bound, and an answer nested deeper
/// is refused here, before any report reads it.
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> serde::de::Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Skip, S::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Skip, M::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// The fields `names` of the JSON object `text`, each as its text, unread; `None` when `text`
/// is not an object. A field given twice counts as its last, as in any JSON object read whole;
/// every other field is skipped. For the parts of an answer read leniently, entry by entry,
/// without building a `Value` of them.
pub fn fields<'a, const N: usize>(
    text: &'a str,
    names: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let found =
        serde::Deserializer::deserialize_map(&mut deserializer, FieldsVisitor { names }).ok()?;
    deserializer.end().ok()?;
    Some(found)
}

struct FieldsVisitor<'n, const N: usize> {
    names: [&'n str; N],
}

impl<'de, const N: usize> Visitor<'de> for FieldsVisitor<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut found = [None; N];
        while let Some(index) = map.next_key_seed(FieldName(&self.names))? {
            let value: &RawValue = map.next_value()?;
            if let Some(index) = index {
                found[index] = Some(value);
            }
        }
        Ok(found)
    }
}

/// A field name, as its index in the names asked for.
struct FieldName<'s, 'n>(&'s [&'n str]);

impl<'de> DeserializeSeed<'de> for FieldName<'_, '_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for FieldName<'_, '_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|wanted| *wanted == name))
    }
}

/// A JSON string, borrowed from the answer unless it has escapes.
pub struct Text<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
        Ok(Text(Cow::Owned(text.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Option<f64> {
        serde_json::from_str::<Number>(text).unwrap().0
    }

    #[test]
    fn any_value_reads_as_a_number_when_it_is_one_or_a_string_of_one() {
        assert_eq!(number("211"), Some(211.0));
        assert_eq!(number("-3"), Some(-3.0));
        assert_eq!(number("0.5"), Some(0.5));
        assert_eq!(number(r#"" 42 ""#), Some(42.0));
        assert_eq!(number("18446744073709551615"), Some(u64::MAX as f64));
        for other in [
            r#""n/a""#,
            r#""1e400""#,
            r#""inf""#,
            "null",
            "true",
            "[1]",
            r#"{"a":1}"#,
        ] {
            assert_eq!(number(other), None, "{other}");
        }
    }

    #[test]
    fn the_fields_asked_for_are_their_last_texts_and_the_rest_is_skipped() {
        let text = r#"{"b": [1, {"x": 2}], "a": 1, "c": "skipped", "a": "last", "\u0062": 3}"#;
        let [a, b, d] = fields(text, ["a", "b", "d"]).unwrap();
        assert_eq!(a.map(RawValue::get), Some(r#""last""#));
        assert_eq!(b.map(RawValue::get), Some("3"));
        assert!(d.is_none());
        for not_an_object in ["[]", "null", "1", r#""{}""#, r#"{"a": 1"#, r#"{"a": 1} x"#] {
            assert!(fields(not_an_object, ["a"]).is_none(), "{not_an_object}");
        }
    }

    #[test]
    fn a_string_is_borrowed_from_the_answer_unless_it_has_escapes() {
        let plain: Text = serde_json::from_str(r#""广东省""#).unwrap();
        assert!(matches!(plain.0, Cow::Borrowed("广东省")));
        let escaped: Text = serde_json::from_str(r#""\u5e7f\u4e1c""#).unwrap();
        assert!(matches!(escaped.0, Cow::Owned(ref text) if text == "广东"));
        assert!(serde_json::from_str::<Text>("12").is_err());
    }
}
