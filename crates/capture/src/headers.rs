//! A recorded header list in one text buffer. The proxy builds one for every request and
//! response and the writer thread frees it, so its fields cost no allocation each.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Header fields in order, as recorded (see the capture format's "Headers": names lowercase,
/// grouped by name): all their text in one buffer, and where each field's name and value end.
///
/// Serialised as an array of `[name, value]` string pairs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Headers {
    text: String,
    /// Per field, the end of its name and of its value in `text`; a name starts where the
    /// previous value ends.
    ends: Vec<(u32, u32)>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Room for `fields` fields whose names and values are `bytes` long together.
    pub fn with_capacity(fields: usize, bytes: usize) -> Headers {
        Headers {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(fields),
        }
    }

    /// Appends a field.
    ///
    /// # Panics
    /// When the list's text would pass 4 GiB.
    pub fn push(&mut self, name: &str, value: &str) {
        self.text.push_str(name);
        let name_end = self.end();
        self.text.push_str(value);
        let value_end = self.end();
        self.ends.push((name_end, value_end));
    }

    /// Appends a field with its name lowercased (ASCII), as HTTP/2 and the record have names.
    ///
    /// # Panics
    /// When the list's text would pass 4 GiB.
    pub fn push_lowercased(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.push(name, value);
        let (name_end, _) = self.ends[self.ends.len() - 1];
        self.text[start..name_end as usize].make_ascii_lowercase();
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the list has no fields.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// `(name, value)` of each field, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            fields: 0..self.ends.len(),
        }
    }

    /// The value of the first field named `name`, compared ASCII-case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        // Names compared as bytes: only the value found is cut out as text.
        let text = self.text.as_bytes();
        let mut start = 0;
        for &(name_end, value_end) in &self.ends {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            if text[start..name_end].eq_ignore_ascii_case(name.as_bytes()) {
                return Some(&self.text[name_end..value_end]);
            }
            start = value_end;
        }
        None
    }

    /// Replaces values in place: `change(name, value)` gives a field's new value, or `None`
    /// to keep it. A new value moves the text after it; when none changes, nothing moves.
    ///
    /// # Panics
    /// When the list's text would pass 4 GiB.
    pub fn map_values(&mut self, mut change: impl FnMut(&str, &str) -> Option<String>) {
        for i in 0..self.ends.len() {
            let (name, value) = self.field(i);
            let Some(new) = change(name, value).filter(|new| new != value) else {
                continue;
            };
            let (name_end, value_end) = self.ends[i];
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            self.text.replace_range(name_end..value_end, &new);
            let moved = |end: u32| offset(end as usize - value_end + name_end + new.len());
            self.ends[i].1 = moved(self.ends[i].1);
            for (n, v) in &mut self.ends[i + 1..] {
                (*n, *v) = (moved(*n), moved(*v));
            }
        }
    }

    /// Field `i`: its name and value.
    fn field(&self, i: usize) -> (&str, &str) {
        let (name_end, value_end) = self.ends[i];
        let (name_end, value_end) = (name_end as usize, value_end as usize);
        let start = self.start(i);
        (&self.text[start..name_end], &self.text[name_end..value_end])
    }

    /// Where field `i`'s name starts in `text`.
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            _ => self.ends[i - 1].1 as usize,
        }
    }

    /// The text's length as an end offset.
    fn end(&self) -> u32 {
        offset(self.text.len())
    }
}

/// The media type of a Content-Type value: what comes before any parameters, without the
/// whitespace around it, in the case it was sent (`text/Event-Stream; charset=utf-8` gives
/// `text/Event-Stream`). Compare it ignoring ASCII case.
pub fn media_type(value: &str) -> &str {
    let end = value.bytes().position(|b| b == b';').unwrap_or(value.len());
    value[..end].trim()
}

/// A Content-Type value that declares a form, `application/x-www-form-urlencoded`
/// (parameters and case ignored): the body a token request carries.
pub fn is_form(value: &str) -> bool {
    media_type(value).eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

/// A Content-Type value that declares an event stream, `text/event-stream` (parameters and
/// case ignored).
pub fn is_event_stream(value: &str) -> bool {
    media_type(value).eq_ignore_ascii_case("text/event-stream")
}

/// A place in a list's text as stored.
fn offset(at: usize) -> u32 {
    u32::try_from(at).expect("a header list's text fits in 4 GiB")
}

/// The fields of a [`Headers`], front to back (or back to front).
#[derive(Clone)]
pub struct Iter<'a> {
    headers: &'a Headers,
    fields: Range<usize>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.fields.next().map(|i| self.headers.field(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.fields.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.fields.next_back().map(|i| self.headers.field(i))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl std::iter::FusedIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(fields: I) -> Headers {
        let mut headers = Headers::new();
        headers.extend(fields);
        headers
    }
}

impl<N: AsRef<str>, V: AsRef<str>> Extend<(N, V)> for Headers {
    fn extend<I: IntoIterator<Item = (N, V)>>(&mut self, fields: I) {
        for (name, value) in fields {
            self.push(name.as_ref(), value.as_ref());
        }
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(fields: Vec<(String, String)>) -> Headers {
        let bytes = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut headers = Headers::with_capacity(fields.len(), bytes);
        headers.extend(fields);
        headers
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for field in self {
            seq.serialize_element(&field)?;
        }
        seq.end()
    }
}

/// Reads the pairs straight into the list's buffer: no `String` per name or value.
impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Headers, D::Error> {
        deserializer.deserialize_seq(List)
    }
}

/// The `[[name, value], ...]` array.
struct List;

impl<'de> Visitor<'de> for List {
    type Value = Headers;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [name, value] header pairs")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Headers, A::Error> {
        // Room for a typical list (about 32 bytes a field), so the text is not regrown
        // several times as it fills.
        let fields = seq.size_hint().unwrap_or(8).min(256);
        let mut headers = Headers::with_capacity(fields, fields * 32);
        while seq.next_element_seed(Pair(&mut headers))?.is_some() {}
        Ok(headers)
    }
}

/// What a pair is, for error messages.
const PAIR: &str = "a [name, value] header pair";

/// One `[name, value]` pair, appended to the list.
struct Pair<'a>(&'a mut Headers);

impl<'de> DeserializeSeed<'de> for Pair<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_tuple(2, self)
    }
}

impl<'de> Visitor<'de> for Pair<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PAIR)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let headers = self.0;
        if seq.next_element_seed(Text(headers))?.is_none() {
            return Err(de::Error::invalid_length(0, &PAIR));
        }
        let name_end = headers.end();
        if seq.next_element_seed(Text(headers))?.is_none() {
            return Err(de::Error::invalid_length(1, &PAIR));
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &PAIR));
        }
        let value_end = headers.end();
        headers.ends.push((name_end, value_end));
        Ok(())
    }
}

/// A name or value, appended to the list's text.
struct Text<'a>(&'a mut Headers);

impl<'de> DeserializeSeed<'de> for Text<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for Text<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a header name or value string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        if self.0.text.len() + text.len() > u32::MAX as usize {
            return Err(E::custom("a header list longer than 4 GiB"));
        }
        self.0.text.push_str(text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// Text with what JSON escapes, empty strings and multi-byte UTF-8, so that field
    /// boundaries fall next to them.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}aé€😀 ]{0,12}",
            Just(String::new()),
        ]
    }

    fn fields() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((text(), text()), 0..8)
    }

    #[test]
    fn a_media_type_is_the_value_before_its_parameters() {
        assert_eq!(
            media_type("text/Event-Stream; charset=utf-8"),
            "text/Event-Stream"
        );
        assert_eq!(media_type(" application/json "), "application/json");
        assert_eq!(media_type("a/b;c=d;e"), "a/b");
        assert_eq!(media_type(";q"), "");
        assert_eq!(media_type(""), "");
        assert!(is_form("Application/X-WWW-Form-Urlencoded ; charset=utf-8"));
        assert!(!is_form("application/json"));
        assert!(is_event_stream("text/Event-Stream; charset=utf-8"));
        assert!(!is_event_stream("text/event-streams"));
    }

    proptest! {
        #[test]
        fn a_list_reads_and_serialises_as_the_pairs_it_was_built_from(old in fields()) {
            let headers = Headers::from(old.clone());
            let back: Vec<(String, String)> =
                headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            prop_assert_eq!(&back, &old);
            prop_assert_eq!(headers.len(), old.len());
            prop_assert_eq!(headers.iter().len(), old.len());
            prop_assert!(headers.iter().rev().eq(old.iter().rev().map(|(n, v)| (n.as_str(), v.as_str()))));
            prop_assert_eq!(&old.iter().map(|(n, v)| (n, v)).collect::<Headers>(), &headers);

            let json = serde_json::to_string(&headers).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&old).unwrap());
            prop_assert_eq!(&serde_json::from_str::<Headers>(&json).unwrap(), &headers);
            // The reader goes through `serde_json::Value`.
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&serde_json::from_value::<Headers>(value).unwrap(), &headers);
        }

        #[test]
        fn map_values_changes_only_what_it_returns(
            old in fields(),
            changes in proptest::collection::vec(proptest::option::of(text()), 8),
        ) {
            let mut headers = Headers::from(old.clone());
            let mut i = 0;
            headers.map_values(|_, _| {
                i += 1;
                changes[i - 1].clone()
            });
            let want: Vec<(String, String)> = old
                .into_iter()
                .zip(&changes)
                .map(|((n, v), change)| (n, change.clone().unwrap_or(v)))
                .collect();
            prop_assert_eq!(headers, Headers::from(want));
        }
    }

    #[test]
    fn empty_names_and_values_are_fields_too() {
        let old = pairs(&[("", ""), ("a", ""), ("", "b"), ("", "")]);
        let headers = Headers::from(old.clone());
        assert_eq!(headers.len(), 4);
        assert!(headers
            .iter()
            .eq([("", ""), ("a", ""), ("", "b"), ("", "")]));
        assert_eq!(
            serde_json::to_string(&headers).unwrap(),
            r#"[["",""],["a",""],["","b"],["",""]]"#
        );
        assert!(Headers::new().is_empty());
        assert_eq!(serde_json::to_string(&Headers::new()).unwrap(), "[]");
        assert_eq!(
            serde_json::from_str::<Headers>("[]").unwrap(),
            Headers::new()
        );
    }

    #[test]
    fn non_ascii_text_is_kept_and_names_compare_ascii_case_insensitively() {
        let mut headers = Headers::with_capacity(3, 64);
        headers.push("Content-Type", "text/plain; charset=utf-8");
        headers.push("x-名前", "値 😀");
        headers.push("content-type", "application/json");
        assert_eq!(
            headers.get("CONTENT-TYPE"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(headers.get("X-名前"), Some("値 😀"));
        assert_eq!(headers.get("x-missing"), None);
        assert_eq!(
            serde_json::to_string(&headers).unwrap(),
            r#"[["Content-Type","text/plain; charset=utf-8"],["x-名前","値 😀"],["content-type","application/json"]]"#
        );
    }

    #[test]
    fn push_lowercased_lowers_the_name_only() {
        let mut headers = Headers::new();
        headers.push("a", "B");
        headers.push_lowercased("X-Mixed-É", "Value ABC");
        assert!(headers.iter().eq([("a", "B"), ("x-mixed-É", "Value ABC")]));
    }

    #[test]
    fn map_values_replaces_values_in_place() {
        let mut headers = Headers::from(pairs(&[
            ("accept", "*/*"),
            ("authorization", "Bearer a-long-secret-token"),
            ("cookie", "a=1"),
            ("x-n", "1"),
        ]));
        let text = headers.text.as_ptr();
        headers.map_values(|name, value| match name {
            "accept" => Some(value.to_string()),
            "authorization" => Some("Bearer <redacted>".into()),
            "cookie" => Some(String::new()),
            _ => None,
        });
        assert!(headers.iter().eq([
            ("accept", "*/*"),
            ("authorization", "Bearer <redacted>"),
            ("cookie", ""),
            ("x-n", "1"),
        ]));
        assert_eq!(
            headers.text.as_ptr(),
            text,
            "shorter values took a new buffer"
        );

        headers.map_values(|name, _| (name == "accept").then(|| "application/json".into()));
        assert!(headers.iter().eq([
            ("accept", "application/json"),
            ("authorization", "Bearer <redacted>"),
            ("cookie", ""),
            ("x-n", "1"),
        ]));
        assert_eq!(headers, Headers::from_iter(headers.iter()));
    }

    #[test]
    fn debug_shows_the_pairs() {
        let headers = Headers::from_iter([("a", "1"), ("b", "\"2\"")]);
        assert_eq!(format!("{headers:?}"), r#"[("a", "1"), ("b", "\"2\"")]"#);
    }

    #[test]
    fn malformed_lists_are_refused_as_before() {
        for (json, error) in [
            (
                r#"{"a":"b"}"#,
                "invalid type: map, expected an array of [name, value] header pairs",
            ),
            (
                r#""a: b""#,
                "invalid type: string \"a: b\", expected an array of [name, value] header pairs",
            ),
            (
                r#"[["a"]]"#,
                "invalid length 1, expected a [name, value] header pair",
            ),
            (
                r#"[[]]"#,
                "invalid length 0, expected a [name, value] header pair",
            ),
            (
                r#"[["a","b","c"]]"#,
                "invalid length 3, expected a [name, value] header pair",
            ),
            (
                r#"[["a",1]]"#,
                "invalid type: integer `1`, expected a header name or value string",
            ),
            (
                r#"[["a",null]]"#,
                "invalid type: null, expected a header name or value string",
            ),
            (
                r#"["a"]"#,
                "invalid type: string \"a\", expected a [name, value] header pair",
            ),
            (r#"[["a","b"],"#, "EOF while parsing a value"),
        ] {
            let got = serde_json::from_str::<Headers>(json)
                .unwrap_err()
                .to_string();
            assert!(got.starts_with(error), "{json}: {got}");
            assert!(serde_json::from_str::<Vec<(String, String)>>(json).is_err());
            let value = serde_json::from_str::<serde_json::Value>(json);
            if let Ok(value) = value {
                let got = serde_json::from_value::<Headers>(value)
                    .unwrap_err()
                    .to_string();
                assert!(got.starts_with(error), "{json} as a value: {got}");
            }
        }
    }

    #[test]
    fn escaped_text_is_read_unescaped() {
        let json = r#"[["x-a\"b","line\nbreak \u00e9 \ud83d\ude00 \\"]]"#;
        let headers: Headers = serde_json::from_str(json).unwrap();
        assert!(headers.iter().eq([("x-a\"b", "line\nbreak é 😀 \\")]));
        let old: Vec<(String, String)> = serde_json::from_str(json).unwrap();
        assert_eq!(
            serde_json::to_string(&headers).unwrap(),
            serde_json::to_string(&old).unwrap()
        );
    }
}
