//! Content codings on the record. A compressed body carries its secrets compressed, where no
//! redaction rule can see them, and hides its content from analysis. The writer therefore
//! decodes `gzip` (and `x-gzip`), `deflate` (zlib, or raw deflate as some servers send it),
//! `br` and `zstd` before it redacts and records; the capture keeps the wire facts (the coding,
//! the byte count on the wire) and the decoded content. What cannot be decoded is recorded as
//! its length and a reason, never as bytes, unless redaction is off.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

/// A content coding the writer decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Br,
    Zstd,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// What a `Content-Encoding` value asks of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coded {
    /// No coding (or `identity`).
    Plain,
    /// One coding the writer decodes.
    By(Coding),
    /// A coding it does not know, or several stacked: the bytes cannot be shown free of secrets.
    Unsupported,
}

/// Reads a `Content-Encoding` value.
pub fn coded(value: Option<&str>) -> Coded {
    let Some(value) = value else {
        return Coded::Plain;
    };
    let codings: Vec<String> = value
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    match codings.as_slice() {
        [] => Coded::Plain,
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Coded::By(Coding::Gzip),
            "deflate" => Coded::By(Coding::Deflate),
            "br" => Coded::By(Coding::Br),
            "zstd" => Coded::By(Coding::Zstd),
            _ => Coded::Unsupported,
        },
        _ => Coded::Unsupported,
    }
}

/// Decoded bytes gathered by a decoder, up to a limit.
#[derive(Debug, Default)]
struct Out {
    bytes: Vec<u8>,
    limit: usize,
    /// More was decoded than `limit`.
    over: bool,
}

/// The write end the decoders write into: it keeps up to the limit and notes the rest.
#[derive(Clone)]
struct Sink(Arc<Mutex<Out>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let room = out.limit.saturating_sub(out.bytes.len());
        let kept = buf.len().min(room);
        out.bytes.extend_from_slice(&buf[..kept]);
        if kept < buf.len() {
            out.over = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Stage {
    Gzip(flate2::write::GzDecoder<Sink>),
    Zlib(flate2::write::ZlibDecoder<Sink>),
    RawDeflate(flate2::write::DeflateDecoder<Sink>),
    Br(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    /// zstd is decoded whole at the end: its wire bytes, up to the limit.
    Zstd(Vec<u8>),
    /// `deflate` before its first two bytes tell zlib from raw deflate.
    DeflateUndecided(Vec<u8>),
    Failed,
}

/// Decodes one body as its frames arrive. Decoded output beyond `limit` bytes (in all, or per
/// feed for an event stream) is counted as over the limit and not kept, so a small body that
/// expands enormously costs no memory.
pub struct Decoder {
    coding: Coding,
    stage: Stage,
    out: Sink,
    /// Decoded bytes handed out so far.
    decoded: u64,
    /// The limit holds for each feed (an event stream), not for the whole body.
    per_feed: bool,
    error: Option<String>,
}

impl Decoder {
    pub fn new(coding: Coding, limit: usize, per_feed: bool) -> Decoder {
        let out = Sink(Arc::new(Mutex::new(Out {
            bytes: Vec::new(),
            limit,
            over: false,
        })));
        let stage = match coding {
            Coding::Gzip => Stage::Gzip(flate2::write::GzDecoder::new(out.clone())),
            Coding::Deflate => Stage::DeflateUndecided(Vec::new()),
            Coding::Br => Stage::Br(Box::new(brotli_decompressor::DecompressorWriter::new(
                out.clone(),
                4096,
            ))),
            Coding::Zstd => Stage::Zstd(Vec::new()),
        };
        Decoder {
            coding,
            stage,
            out,
            decoded: 0,
            per_feed,
            error: None,
        }
    }

    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Feeds wire bytes; returns what they decoded to (possibly nothing yet).
    pub fn feed(&mut self, wire: &[u8]) -> Vec<u8> {
        let limit = self.limit();
        let result = match &mut self.stage {
            Stage::Gzip(d) => d.write_all(wire),
            Stage::Zlib(d) => d.write_all(wire),
            Stage::RawDeflate(d) => d.write_all(wire),
            Stage::Br(d) => d.write_all(wire),
            Stage::Zstd(kept) => {
                let room = limit.saturating_sub(kept.len());
                kept.extend_from_slice(&wire[..wire.len().min(room)]);
                Ok(())
            }
            Stage::DeflateUndecided(head) => {
                head.extend_from_slice(wire);
                if head.len() >= 2 {
                    let head = std::mem::take(head);
                    // RFC 1950: CMF (method 8) and FLG make a multiple of 31.
                    let zlib = head[0] & 0x0f == 8
                        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
                    self.stage = if zlib {
                        Stage::Zlib(flate2::write::ZlibDecoder::new(self.out.clone()))
                    } else {
                        Stage::RawDeflate(flate2::write::DeflateDecoder::new(self.out.clone()))
                    };
                    return self.feed(&head);
                }
                Ok(())
            }
            Stage::Failed => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e.to_string());
        }
        self.take()
    }

    /// The body ended: the rest of what it decodes to.
    pub fn finish(&mut self) -> Vec<u8> {
        let stage = std::mem::replace(&mut self.stage, Stage::Failed);
        let result = match stage {
            Stage::Gzip(d) => d.finish().map(drop),
            Stage::Zlib(d) => d.finish().map(drop),
            Stage::RawDeflate(d) => d.finish().map(drop),
            Stage::Br(mut d) => d.flush().and_then(|()| d.close()),
            Stage::Zstd(wire) => self.zstd(&wire),
            Stage::DeflateUndecided(head) if head.is_empty() => Ok(()),
            Stage::DeflateUndecided(_) => {
                Err(std::io::Error::other("the body ends after one byte"))
            }
            Stage::Failed => Ok(()),
        };
        if let Err(e) = result {
            self.fail(e.to_string());
        }
        self.take()
    }

    fn zstd(&self, wire: &[u8]) -> std::io::Result<()> {
        let mut source = wire;
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut source)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut sink = self.out.clone();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = decoder.read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            sink.write_all(&chunk[..n])?;
            if self.over_limit() {
                return Ok(());
            }
        }
    }

    fn fail(&mut self, error: String) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.stage = Stage::Failed;
    }

    fn take(&mut self) -> Vec<u8> {
        let mut out = self.out.0.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = std::mem::take(&mut out.bytes);
        if !self.per_feed {
            out.limit = out.limit.saturating_sub(bytes.len());
        }
        self.decoded += bytes.len() as u64;
        bytes
    }

    fn limit(&self) -> usize {
        self.out.0.lock().unwrap_or_else(|e| e.into_inner()).limit
    }

    /// More was decoded than the limit allowed to keep.
    pub fn over_limit(&self) -> bool {
        self.out.0.lock().unwrap_or_else(|e| e.into_inner()).over
    }

    /// Why decoding failed, if it did (the bytes decoded before the failure were handed out).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Decoded bytes handed out so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_in_pieces(
        coding: Coding,
        wire: &[u8],
        piece: usize,
        limit: usize,
    ) -> (Vec<u8>, Decoder) {
        let mut d = Decoder::new(coding, limit, false);
        let mut out = Vec::new();
        for chunk in wire.chunks(piece.max(1)) {
            out.extend(d.feed(chunk));
        }
        out.extend(d.finish());
        (out, d)
    }

    #[test]
    fn every_coding_decodes_however_the_bytes_are_cut() {
        let text = br#"{"access_token":"tok-123","token_type":"Bearer"}"#.repeat(20);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&text).unwrap();
        }
        let zstd = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (coding, wire) in [
            (Coding::Gzip, gzip(&text)),
            (Coding::Deflate, zlib.finish().unwrap()),
            (Coding::Deflate, raw.finish().unwrap()),
            (Coding::Br, br),
            (Coding::Zstd, zstd),
        ] {
            for piece in [1, 7, 4096] {
                let (out, d) = decode_in_pieces(coding, &wire, piece, 1 << 20);
                assert_eq!(d.error(), None, "{coding:?}");
                assert_eq!(out, text, "{coding:?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_bomb_keeps_only_the_limit() {
        let wire = gzip(&vec![b'a'; 10 << 20]);
        let (out, d) = decode_in_pieces(Coding::Gzip, &wire, 1 << 20, 1000);
        assert_eq!(out.len(), 1000);
        assert!(d.over_limit());
    }

    #[test]
    fn broken_data_is_an_error_with_what_came_before_it() {
        let mut wire = gzip(b"hello world, hello world");
        let n = wire.len();
        wire[n / 2] ^= 0xff;
        wire.truncate(n - 3);
        let (_, d) = decode_in_pieces(Coding::Gzip, &wire, 5, 1 << 20);
        assert!(d.error().is_some());
    }

    #[test]
    fn content_encoding_values() {
        assert_eq!(coded(None), Coded::Plain);
        assert_eq!(coded(Some("identity")), Coded::Plain);
        assert_eq!(coded(Some(" GZIP ")), Coded::By(Coding::Gzip));
        assert_eq!(coded(Some("x-gzip")), Coded::By(Coding::Gzip));
        assert_eq!(coded(Some("br")), Coded::By(Coding::Br));
        assert_eq!(coded(Some("gzip, br")), Coded::Unsupported);
        assert_eq!(coded(Some("compress")), Coded::Unsupported);
    }
}
