//! Byte tests on many bytes at once, for the writer's hot loops: the string escaper and
//! redaction's quick test. Eight bytes in a word (SIMD within a register): each mask has the
//! high bit of a byte's lane set exactly when that byte matches. Sixteen bytes (SSE2 on
//! x86-64, two words elsewhere): bit `i` of the mask is byte `i`. Either way a caller can walk
//! every match, not only the first.

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;
const ONES: u64 = 0x0101_0101_0101_0101;

/// The eight bytes at `at` as a little-endian word (the first byte in the low lane).
#[inline]
pub(super) fn word_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes(chunk.try_into().ok()?))
}

/// Lanes of `word` holding `"` or `\`.
#[inline]
pub(super) fn quote_or_backslash(word: u64) -> u64 {
    let low = word & LOW7;
    // A lane's high bit stays clear in a sum only where the XOR zeroed its low seven bits.
    let quote = (low ^ (ONES * u64::from(b'"'))) + LOW7;
    let backslash = (low ^ (ONES * u64::from(b'\\'))) + LOW7;
    !((quote & backslash) | word) & HIGH
}

/// Lanes of `word` that a JSON string must escape: `"`, `\` and the control characters.
#[inline]
pub(super) fn json_special(word: u64) -> u64 {
    let low = word & LOW7;
    let quote = (low ^ (ONES * u64::from(b'"'))) + LOW7;
    let backslash = (low ^ (ONES * u64::from(b'\\'))) + LOW7;
    let control = low + ONES * 0x60;
    !((quote & backslash & control) | word) & HIGH
}

/// Bit `i` set when byte `i` of `chunk` is one a JSON string must escape: `"`, `\` and the
/// control characters. SSE2, part of every x86-64, compares all sixteen at once.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn json_special16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline; the load is unaligned and reads exactly
    // the sixteen bytes of `chunk`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned v <= 0x1f exactly when max(v, 0x1f) is 0x1f.
        let limit = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, limit), limit);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// Bit `i` set when byte `i` of `chunk` is `"` or `\`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn quote_or_backslash16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: as in `json_special16`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        _mm_movemask_epi8(_mm_or_si128(quote, backslash)) as u32
    }
}

/// [`quote_or_backslash16`] elsewhere.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn quote_or_backslash16(chunk: &[u8; 16]) -> u32 {
    quote_or_backslash16_words(chunk)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn quote_or_backslash16_words(chunk: &[u8; 16]) -> u32 {
    let low = word_at(chunk, 0).map_or(0, quote_or_backslash);
    let high = word_at(chunk, 8).map_or(0, quote_or_backslash);
    lane_bits(low) | lane_bits(high) << 8
}

/// [`json_special16`] elsewhere: two words, their lane masks gathered into bits.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn json_special16(chunk: &[u8; 16]) -> u32 {
    json_special16_words(chunk)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn json_special16_words(chunk: &[u8; 16]) -> u32 {
    let low = word_at(chunk, 0).map_or(0, json_special);
    let high = word_at(chunk, 8).map_or(0, json_special);
    lane_bits(low) | lane_bits(high) << 8
}

/// A lane mask as eight bits, lane `i` at bit `i`.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn lane_bits(mask: u64) -> u32 {
    // Each lane's bit moved to the top byte by the multiply, at its lane's position.
    (((mask >> 7) & ONES).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lanes(mask: u64) -> Vec<usize> {
        (0..8).filter(|i| mask >> (i * 8 + 7) & 1 == 1).collect()
    }

    proptest! {
        #[test]
        fn masks_mark_exactly_the_matching_bytes(bytes in any::<[u8; 8]>()) {
            let word = word_at(&bytes, 0).unwrap();
            let want: Vec<usize> = (0..8).filter(|&i| matches!(bytes[i], b'"' | b'\\')).collect();
            prop_assert_eq!(lanes(quote_or_backslash(word)), want);
            let want: Vec<usize> =
                (0..8).filter(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f)).collect();
            prop_assert_eq!(lanes(json_special(word)), want);
            // Only the high bit of a lane is ever set.
            prop_assert_eq!(quote_or_backslash(word) & !HIGH, 0);
            prop_assert_eq!(json_special(word) & !HIGH, 0);
        }
    }

    proptest! {
        #[test]
        fn sixteen_lanes_mark_exactly_the_bytes_json_escapes(
            bytes in any::<[u8; 16]>(),
            pick in any::<[bool; 16]>(),
        ) {
            // Bias towards the interesting bytes: half of the lanes get one of them.
            let mut chunk = bytes;
            for (i, byte) in chunk.iter_mut().enumerate() {
                if pick[i] {
                    *byte = [b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0xa2, 0xdc][*byte as usize % 8];
                }
            }
            let want: u32 = (0..16)
                .filter(|&i| matches!(chunk[i], b'"' | b'\\' | 0..=0x1f))
                .map(|i| 1 << i)
                .sum();
            prop_assert_eq!(json_special16(&chunk), want);
            prop_assert_eq!(json_special16_words(&chunk), want);
            let want: u32 = (0..16)
                .filter(|&i| matches!(chunk[i], b'"' | b'\\'))
                .map(|i| 1 << i)
                .sum();
            prop_assert_eq!(quote_or_backslash16(&chunk), want);
            prop_assert_eq!(quote_or_backslash16_words(&chunk), want);
        }
    }

    #[test]
    fn edge_bytes() {
        let bytes = [0x00, 0x1f, 0x20, 0x22, 0x5c, 0x7f, 0x80, 0xff];
        let word = word_at(&bytes, 0).unwrap();
        assert_eq!(lanes(json_special(word)), [0, 1, 3, 4]);
        assert_eq!(lanes(quote_or_backslash(word)), [3, 4]);
        // Bytes that differ from a match only in the high bit do not match.
        let high = word_at(&[0xa2, 0xdc, 0x80, 0x9f, 0, 0, 0, 0], 0).unwrap();
        assert_eq!(lanes(json_special(high)), [4, 5, 6, 7]);
        assert_eq!(word_at(&bytes, 1), None);
    }
}
