//! Byte tests on eight bytes at once (SIMD within a register), for the writer's hot loops:
//! the string escaper and redaction's quick test. Each mask has the high bit of a byte's lane
//! set exactly when that byte matches, so a caller can walk every match, not only the first.

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

/// The index of the first lane set in a non-zero mask.
#[inline]
pub(super) fn first(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
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

    #[test]
    fn edge_bytes() {
        let bytes = [0x00, 0x1f, 0x20, 0x22, 0x5c, 0x7f, 0x80, 0xff];
        let word = word_at(&bytes, 0).unwrap();
        assert_eq!(lanes(json_special(word)), [0, 1, 3, 4]);
        assert_eq!(lanes(quote_or_backslash(word)), [3, 4]);
        assert_eq!(first(quote_or_backslash(word)), 3);
        // Bytes that differ from a match only in the high bit do not match.
        let high = word_at(&[0xa2, 0xdc, 0x80, 0x9f, 0, 0, 0, 0], 0).unwrap();
        assert_eq!(lanes(json_special(high)), [4, 5, 6, 7]);
        assert_eq!(word_at(&bytes, 1), None);
    }
}
