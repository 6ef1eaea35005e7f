//! Measures the text in a JSON value while serde parses it, without keeping or copying it.
//!
//! Owns [`TextBytes`], a serde type that stands in for a request's messages, system prompt
//! or contents and sums the UTF-8 length of the text found inside. It allocates nothing,
//! skips what is not text unread, and relies on serde_json's nesting limit (128 levels) to
//! refuse bodies that would otherwise recurse without bound.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The UTF-8 bytes of text in a JSON value: a string's length, the sum over an array's
/// items, or the sum over an object's `text`, `content` and `parts` members, which is where
/// all three providers put message text, however deeply nested. Anything else counts 0.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TextBytes(u64);

impl TextBytes {
    /// The UTF-8 bytes of text found, saturating at `u64::MAX`.
    pub(super) fn bytes(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for TextBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = TextBytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<TextBytes, E> {
        Ok(TextBytes(text.len() as u64))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TextBytes, E> {
        Ok(TextBytes(0))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TextBytes, E> {
        Ok(TextBytes(0))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TextBytes, E> {
        Ok(TextBytes(0))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TextBytes, E> {
        Ok(TextBytes(0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TextBytes, E> {
        Ok(TextBytes(0))
    }

    fn visit_none<E: de::Error>(self) -> Result<TextBytes, E> {
        Ok(TextBytes(0))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<TextBytes, D::Error> {
        TextBytes::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextBytes, A::Error> {
        let mut sum = 0u64;
        while let Some(TextBytes(bytes)) = seq.next_element()? {
            sum = sum.saturating_add(bytes);
        }
        Ok(TextBytes(sum))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextBytes, A::Error> {
        let mut sum = 0u64;
        while let Some(key) = map.next_key::<TextKey>()? {
            match key {
                TextKey::Text => sum = sum.saturating_add(map.next_value::<TextBytes>()?.0),
                TextKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(TextBytes(sum))
    }
}

/// An object member name: one that holds text, or any other.
enum TextKey {
    Text,
    Other,
}

impl<'de> Deserialize<'de> for TextKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_identifier(TextKeyVisitor)
    }
}

struct TextKeyVisitor;

impl Visitor<'_> for TextKeyVisitor {
    type Value = TextKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<TextKey, E> {
        Ok(match name {
            "text" | "content" | "parts" => TextKey::Text,
            _ => TextKey::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(json: &str) -> Option<u64> {
        serde_json::from_str::<TextBytes>(json)
            .ok()
            .map(TextBytes::bytes)
    }

    #[test]
    fn json_in_text_bytes_out() {
        let table: &[(&str, Option<u64>)] = &[
            (r#""hello""#, Some(5)),
            (r#""""#, Some(0)),
            (r#""h\u00e9\n""#, Some(4)),
            (r#""\ud83d\ude00""#, Some(4)),
            ("null", Some(0)),
            ("true", Some(0)),
            ("-12.5e3", Some(0)),
            (r#"["ab","cd",null,3]"#, Some(4)),
            (
                r#"[{"type":"text","text":"abc"},{"type":"image","source":{"data":"xxxx"}}]"#,
                Some(3),
            ),
            (r#"{"role":"user","content":"hi","name":"bob"}"#, Some(2)),
            (
                r#"{"parts":[{"text":"a"},{"functionCall":{"args":{"text":"no"}}}]}"#,
                Some(1),
            ),
            (r#"{"content":[{"content":[{"text":"deep"}]}]}"#, Some(4)),
            (r#"{"t\u0065xt":"escaped key"}"#, Some(11)),
            (r#"{"text":"a","text":"b"}"#, Some(2)),
            // Not JSON, or JSON nested past serde_json's limit: an error, never a panic.
            (r#""unterminated"#, None),
            (r#"{"text":}"#, None),
            ("\"\u{0}\"", None),
        ];
        for &(json, want) in table {
            assert_eq!(measure(json), want, "{json}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(measure(&deep), None);
        let shallow = format!("{}\"ab\"{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(measure(&shallow), Some(2));
    }
}
