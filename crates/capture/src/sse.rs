//! Incremental `text/event-stream` parser implementing WHATWG HTML §9.2.6
//! "Interpreting an event stream", safe against arbitrary chunk splits.

use serde::Serialize;

/// UTF-8 encoding of U+FEFF, which the spec ignores once at the stream start.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One block of an event stream, ended by a blank line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SseEvent {
    /// The `event` field (last one wins); `None` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The `data` lines joined by '\n'; `None` when the block had no `data` field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The `id` field (last one wins, ignored when it contains NUL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `retry` field when it was all ASCII digits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    /// Comment lines (":" lines), without the colon and one leading space.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
}

impl SseEvent {
    /// Whether a browser's EventSource would dispatch this block (it carried data).
    pub fn dispatched(&self) -> bool {
        // Even an empty `data:` line makes the browser's data buffer non-empty ("\n").
        self.data.is_some()
    }

    /// Whether anything worth recording was seen; unknown or ignored fields don't count.
    fn has_content(&self) -> bool {
        self.event.is_some()
            || self.data.is_some()
            || self.id.is_some()
            || self.retry.is_some()
            || !self.comments.is_empty()
    }
}

/// Incremental, chunk-split-safe parser for one event stream.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line (or of a BOM prefix seen so far).
    /// Kept as bytes so a UTF-8 sequence split across chunks decodes whole.
    line: Vec<u8>,
    /// The last line ended with CR, so an LF arriving next (maybe in the next chunk)
    /// completes that CRLF instead of ending an empty line.
    after_cr: bool,
    /// The stream start has been checked for a BOM.
    bom_done: bool,
    /// The block being built; the `data` buffer keeps its trailing '\n' until dispatch.
    block: SseEvent,
}

impl SseParser {
    /// Creates a parser positioned at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk; returns the blocks whose ending blank line arrived in it, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let mut rest = self.skip_bom(chunk);
        while let Some(&first) = rest.first() {
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                rest = &rest[1..];
                continue;
            }
            let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                // Only the new bytes are scanned; the partial line waits for its end.
                self.line.extend_from_slice(rest);
                break;
            };
            self.after_cr = rest[end] == b'\r';
            let ended = if self.line.is_empty() {
                // Common case: the whole line is in this chunk, so skip the copy.
                self.end_line(&rest[..end])
            } else {
                self.line.extend_from_slice(&rest[..end]);
                let line = std::mem::take(&mut self.line);
                let ended = self.end_line(&line);
                // Hand the buffer back to keep its capacity for the next partial line.
                self.line = line;
                self.line.clear();
                ended
            };
            out.extend(ended);
            rest = &rest[end + 1..];
        }
        out
    }

    /// End of stream: returns the unterminated last block, if it had content
    /// (a browser discards it; a recorder still wants to see it). Resets the parser.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        // A non-empty unterminated last line still counts as a field line; it can't
        // dispatch because only an empty line does.
        if !line.is_empty() {
            self.end_line(&line);
        }
        let block = self.block.has_content().then(|| self.take_block());
        *self = Self::default();
        block
    }

    /// Consumes the leading BOM bytes of the stream, even when they arrive across
    /// several chunks; returns what is left of `chunk`.
    fn skip_bom<'a>(&mut self, mut chunk: &'a [u8]) -> &'a [u8] {
        while !self.bom_done {
            let Some((&b, tail)) = chunk.split_first() else {
                break;
            };
            // During this phase `line` holds only the BOM prefix matched so far.
            if b != BOM[self.line.len()] {
                // Not a BOM: the bytes held so far are ordinary line content (never
                // CR or LF), and `b` itself is left for the line scanner.
                self.bom_done = true;
                break;
            }
            self.line.push(b);
            chunk = tail;
            if self.line.len() == BOM.len() {
                self.line.clear();
                self.bom_done = true;
            }
        }
        chunk
    }

    /// Interprets one complete line (without its line end); returns the block an
    /// empty line ends, if it had content.
    fn end_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.block.has_content().then(|| self.take_block());
        }
        if let Some(comment) = line.strip_prefix(b":") {
            self.block.comments.push(decode(strip_space(comment)));
            return None;
        }
        // Splitting bytes at ':' before decoding is safe: ':' and ' ' are ASCII, so
        // they never occur inside a multi-byte sequence or a lossy replacement.
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], strip_space(&line[colon + 1..])),
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                let data = self.block.data.get_or_insert_with(String::new);
                data.push_str(&String::from_utf8_lossy(value));
                data.push('\n');
            }
            b"event" => self.block.event = Some(decode(value)),
            b"id" if !value.contains(&0) => self.block.id = Some(decode(value)),
            b"retry" => self.block.retry = parse_retry(value).or(self.block.retry),
            _ => {}
        }
        None
    }

    /// Takes the finished block, dropping the data buffer's final '\n' as dispatch does.
    fn take_block(&mut self) -> SseEvent {
        let mut block = std::mem::take(&mut self.block);
        if let Some(data) = &mut block.data {
            data.pop();
        }
        block
    }
}

/// Parses a `retry` value; `None` (ignore it) unless it is all ASCII digits and fits.
fn parse_retry(value: &[u8]) -> Option<u64> {
    // Digits are checked first because `u64::from_str` also accepts a leading '+'.
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Removes one leading space, as the spec does for field values and (here) comments.
fn strip_space(value: &[u8]) -> &[u8] {
    value.strip_prefix(b" ").unwrap_or(value)
}

/// Decodes one line's piece, replacing invalid UTF-8 rather than failing the stream.
fn decode(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Parses `stream` pushed as chunks cut at the given (sorted) byte offsets.
    fn parse_split(stream: &[u8], cuts: &[usize]) -> (Vec<SseEvent>, Option<SseEvent>) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            events.extend(parser.push(&stream[start..cut]));
            start = cut;
        }
        events.extend(parser.push(&stream[start..]));
        (events, parser.finish())
    }

    /// Parses `stream` pushed as one chunk.
    fn parse(stream: &[u8]) -> (Vec<SseEvent>, Option<SseEvent>) {
        parse_split(stream, &[])
    }

    /// Parses `stream` pushed one byte at a time.
    fn bytewise(stream: &[u8]) -> (Vec<SseEvent>, Option<SseEvent>) {
        let cuts: Vec<usize> = (1..stream.len()).collect();
        parse_split(stream, &cuts)
    }

    fn data(text: &str) -> SseEvent {
        SseEvent {
            data: Some(text.to_owned()),
            ..SseEvent::default()
        }
    }

    #[test]
    fn lf_crlf_and_cr_line_ends_are_equivalent() {
        let lf = "event: e\ndata: a\ndata: b\n\nid: 7\ndata: c\n\n";
        let expected = vec![
            SseEvent {
                event: Some("e".into()),
                data: Some("a\nb".into()),
                ..SseEvent::default()
            },
            SseEvent {
                id: Some("7".into()),
                data: Some("c".into()),
                ..SseEvent::default()
            },
        ];
        for stream in [
            lf.to_owned(),
            lf.replace('\n', "\r\n"),
            lf.replace('\n', "\r"),
        ] {
            assert_eq!(
                parse(stream.as_bytes()),
                (expected.clone(), None),
                "{stream:?}"
            );
            assert_eq!(bytewise(stream.as_bytes()), (expected.clone(), None));
        }
        // Mixed line ends within one stream.
        let mixed = b"data: a\r\ndata: b\rdata: c\n\r\n";
        assert_eq!(parse(mixed), (vec![data("a\nb\nc")], None));
    }

    #[test]
    fn cr_at_chunk_end_and_lf_in_next_chunk_is_one_line_end() {
        let mut parser = SseParser::new();
        assert_eq!(parser.push(b"data: a\r"), vec![]);
        // Were "\r" + "\n" two line ends, the leading "\n" would dispatch "a" alone.
        assert_eq!(parser.push(b"\ndata: b\r\n\r"), vec![data("a\nb")]);
        // This "\n" completes the previous "\r": no extra empty line, no extra block.
        assert_eq!(parser.push(b"\n"), vec![]);
        assert_eq!(parser.push(b"data: c\r"), vec![]);
        assert_eq!(parser.push(b""), vec![]);
        assert_eq!(parser.push(b"\r\n"), vec![data("c")]);
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn two_crs_are_two_line_ends() {
        assert_eq!(parse(b"data: a\r\r"), (vec![data("a")], None));
        assert_eq!(parse_split(b"data: a\r\r", &[8]), (vec![data("a")], None));
    }

    #[test]
    fn bom_is_skipped_whole_or_split() {
        let stream = b"\xEF\xBB\xBFdata: x\n\n";
        assert_eq!(parse(stream), (vec![data("x")], None));
        assert_eq!(bytewise(stream), (vec![data("x")], None));
        assert_eq!(parse_split(stream, &[2]), (vec![data("x")], None));
        // Only one, leading BOM is skipped: a second one is part of the field name.
        let doubled = b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n";
        assert_eq!(parse(doubled), (vec![], None));
        assert_eq!(bytewise(doubled), (vec![], None));
        // A BOM-like prefix that isn't a BOM stays in the line (here: an unknown field).
        let fake = b"\xEF\xBBdata: x\n:c\n\n";
        let comment = SseEvent {
            comments: vec!["c".into()],
            ..SseEvent::default()
        };
        assert_eq!(parse(fake), (vec![comment.clone()], None));
        assert_eq!(bytewise(fake), (vec![comment], None));
        // A partial BOM followed by a line end: the end still counts.
        assert_eq!(bytewise(b"\xEF\ndata: y\n\n"), (vec![data("y")], None));
        // The stream may start with a blank line right after the BOM.
        assert_eq!(parse(b"\xEF\xBB\xBF\ndata: z\n\n"), (vec![data("z")], None));
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let stream = b"data: a\ndata:\ndata: b\ndata: \n\n";
        assert_eq!(parse(stream), (vec![data("a\n\nb\n")], None));
    }

    #[test]
    fn empty_data_is_dispatched() {
        let (events, _) = parse(b"data:\n\n");
        assert_eq!(events, vec![data("")]);
        assert!(events[0].dispatched());
        let (events, _) = parse(b"data: \n\n");
        assert_eq!(events, vec![data("")]);
    }

    #[test]
    fn comments_only_block_is_emitted_but_not_dispatched() {
        let (events, rest) = parse(b": hello\n:  two\n:\n:x: y\n\n");
        assert_eq!(rest, None);
        assert_eq!(
            events,
            vec![SseEvent {
                comments: vec!["hello".into(), " two".into(), "".into(), "x: y".into()],
                ..SseEvent::default()
            }]
        );
        assert!(!events[0].dispatched());
    }

    #[test]
    fn blocks_without_recorded_fields_are_not_emitted() {
        assert_eq!(parse(b"\n\n\r\n\r\r"), (vec![], None));
        assert_eq!(parse(b"foo: bar\nData: x\n\n"), (vec![], None));
        assert_eq!(parse(b"foo: bar\ndata: x\n\n"), (vec![data("x")], None));
    }

    #[test]
    fn id_with_nul_is_ignored() {
        let (events, _) = parse(b"id: a\nid: b\0c\ndata: x\n\n");
        assert_eq!(events[0].id.as_deref(), Some("a"));
        // A block whose only field was ignored has nothing to record.
        assert_eq!(parse(b"id: x\0\n\n"), (vec![], None));
        // The last valid id wins; an empty id is kept (it resets a browser's last id).
        let (events, _) = parse(b"id: 1\nid: 2\n\nid\n\n");
        assert_eq!(events[0].id.as_deref(), Some("2"));
        assert_eq!(events[1].id.as_deref(), Some(""));
        assert!(!events[0].dispatched());
    }

    #[test]
    fn retry_only_when_all_digits() {
        let retry = |stream: &[u8]| parse(stream).0.first().and_then(|e| e.retry);
        assert_eq!(retry(b"retry: 1500\n\n"), Some(1500));
        assert_eq!(retry(b"retry:0\n\n"), Some(0));
        assert_eq!(retry(b"retry: 10\nretry: x\n\n"), Some(10));
        assert_eq!(retry(b"retry: 10\nretry: 20\n\n"), Some(20));
        for bad in [
            &b"retry: 15a\n\n"[..],
            b"retry: +5\n\n",
            b"retry: -1\n\n",
            b"retry: 1.5\n\n",
            b"retry:  5\n\n",
            b"retry: \n\n",
            b"retry\n\n",
            b"retry: 99999999999999999999\n\n",
            b"retry: \xD9\xA3\n\n",
        ] {
            assert_eq!(parse(bad), (vec![], None), "{bad:?}");
        }
    }

    #[test]
    fn field_without_colon_has_empty_value() {
        let (events, _) = parse(b"event\ndata\n\n");
        assert_eq!(
            events,
            vec![SseEvent {
                event: Some(String::new()),
                data: Some(String::new()),
                ..SseEvent::default()
            }]
        );
    }

    #[test]
    fn only_one_leading_space_is_removed() {
        let (events, _) = parse(b"data:x\ndata:  y\ndata: a:b\nevent:\tt\n\n");
        assert_eq!(events[0].data.as_deref(), Some("x\n y\na:b"));
        assert_eq!(events[0].event.as_deref(), Some("\tt"));
        // The field name ends at the colon, so "data " is an unknown field.
        assert_eq!(parse(b"data :x\n\n"), (vec![], None));
    }

    #[test]
    fn last_event_wins_and_events_come_in_order() {
        let (events, _) = parse(b"event: a\nevent: b\ndata: 1\n\ndata: 2\n\n: c\n\n");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event.as_deref(), Some("b"));
        assert_eq!(events[1], data("2"));
        assert_eq!(events[2].comments, vec!["c".to_owned()]);
    }

    #[test]
    fn finish_returns_trailing_unterminated_block_and_resets() {
        let mut parser = SseParser::new();
        assert_eq!(
            parser.push(b"data: a\n\ndata: b\nevent: e"),
            vec![data("a")]
        );
        assert_eq!(
            parser.finish(),
            Some(SseEvent {
                event: Some("e".into()),
                data: Some("b".into()),
                ..SseEvent::default()
            })
        );
        assert_eq!(parser.finish(), None);
        // After the reset a new stream starts: its BOM is skipped again.
        assert_eq!(parser.push(b"\xEF\xBB\xBFdata: c\n"), vec![]);
        assert_eq!(parser.finish(), Some(data("c")));
        assert_eq!(parse(b"data: a\n\n"), (vec![data("a")], None));
        assert_eq!(parse(b"data: a\r"), (vec![], Some(data("a"))));
        assert_eq!(parse(b"data: a\n\nfoo"), (vec![data("a")], None));
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        assert_eq!(parse(b"data: a\xFFb\n\n"), (vec![data("a\u{FFFD}b")], None));
        let (events, _) = parse(b":\xC0\nid: \xFE\n\n");
        assert_eq!(events[0].comments, vec!["\u{FFFD}".to_owned()]);
        assert_eq!(events[0].id.as_deref(), Some("\u{FFFD}"));
        // A truncated sequence before a line end is one replacement character.
        assert_eq!(parse(b"data: \xE2\x82\n\n"), (vec![data("\u{FFFD}")], None));
        // A valid sequence split across chunks decodes whole.
        let euro = b"data: \xE2\x82\xAC\n\n";
        assert_eq!(parse_split(euro, &[7]), (vec![data("\u{20AC}")], None));
        assert_eq!(bytewise(euro), (vec![data("\u{20AC}")], None));
    }

    #[test]
    fn serializes_compactly() {
        let json = serde_json::to_string(&data("x")).unwrap();
        assert_eq!(json, r#"{"data":"x"}"#);
        let full = SseEvent {
            event: Some("e".into()),
            data: Some("d".into()),
            id: Some("i".into()),
            retry: Some(5),
            comments: vec!["c".into()],
        };
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(
            json,
            r#"{"event":"e","data":"d","id":"i","retry":5,"comments":["c"]}"#
        );
    }

    /// An independent, whole-stream reading of the spec: decode everything, drop
    /// one leading U+FEFF, normalise line ends, then interpret line by line.
    fn reference(stream: &[u8]) -> (Vec<SseEvent>, Option<SseEvent>) {
        let text = String::from_utf8_lossy(stream);
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let mut lines: Vec<&str> = text.split('\n').collect();
        // What follows the last line end is an unterminated line, if it's not empty.
        let tail = lines.pop().filter(|line| !line.is_empty());
        let mut events = Vec::new();
        let mut block = Vec::new();
        for line in lines {
            if line.is_empty() {
                events.extend(reference_block(&std::mem::take(&mut block)));
            } else {
                block.push(line);
            }
        }
        block.extend(tail);
        (events, reference_block(&block))
    }

    /// Interprets the (non-empty) lines of one block.
    fn reference_block(lines: &[&str]) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        let mut data = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match name {
                "" => event.comments.push(value.to_owned()),
                "data" => data.push(value),
                "event" => event.event = Some(value.to_owned()),
                "id" if !value.contains('\0') => event.id = Some(value.to_owned()),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    event.retry = value.parse().ok().or(event.retry);
                }
                _ => {}
            }
        }
        if !data.is_empty() {
            event.data = Some(data.join("\n"));
        }
        (event != SseEvent::default()).then_some(event)
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[^\r\n]{0,12}",
            // Characters that matter to the parser: space, colon, NUL, BOM, multi-byte.
            "[ a:\0\u{e9}\u{FEFF}\u{1F600}]{0,6}",
        ]
    }

    fn line() -> impl Strategy<Value = Vec<u8>> {
        let name = prop_oneof![
            Just("data"),
            Just("data"),
            Just("event"),
            Just("id"),
            Just("retry"),
            Just("foo"),
            Just("")
        ];
        let raw = proptest::collection::vec(any::<u8>(), 0..8).prop_map(|raw| {
            // Raw bytes, including invalid UTF-8, but never a line end.
            let mut line = b"data: ".to_vec();
            line.extend(raw.into_iter().filter(|b| *b != b'\r' && *b != b'\n'));
            line
        });
        let text = prop_oneof![
            4 => (name.clone(), any::<bool>(), value())
                .prop_map(|(n, space, v)| format!("{n}:{}{v}", if space { " " } else { "" })),
            1 => "[0-9]{1,22}".prop_map(|digits| format!("retry: {digits}")),
            1 => name.prop_map(str::to_owned),
            1 => value().prop_map(|v| format!(":{v}")),
            2 => Just(String::new()),
        ];
        prop_oneof![8 => text.prop_map(String::into_bytes), 1 => raw]
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let ending = prop_oneof![Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b"\r"[..])];
        let start = prop_oneof![
            Just(&b""[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"\xEF\xBB"[..]),
        ];
        (
            start,
            proptest::collection::vec((line(), ending), 0..30),
            proptest::option::of(line()),
        )
            .prop_map(|(start, lines, tail)| {
                let mut stream = start.to_vec();
                for (line, ending) in lines {
                    stream.extend(line);
                    stream.extend_from_slice(ending);
                }
                stream.extend(tail.unwrap_or_default());
                stream
            })
    }

    proptest! {
        #[test]
        fn any_chunking_yields_the_same_events(
            stream in stream(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            // Duplicate cuts stay: they make empty chunks, which must be harmless.
            cuts.sort_unstable();
            let whole = parse(&stream);
            prop_assert_eq!(&parse_split(&stream, &cuts), &whole);
            prop_assert_eq!(&bytewise(&stream), &whole);
            prop_assert_eq!(&reference(&stream), &whole);
        }
    }
}
