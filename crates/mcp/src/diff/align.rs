//! Aligns two sessions' exchanges as a heaviest common subsequence: only exchanges with the
//! same key (route, method, normalised path, JSON-RPC method, role) may pair, and among the
//! alignments the one pairing the most alike exchanges wins, so an inserted, missing or
//! reordered exchange shows as such instead of shifting every pair after it.
//!
//! A pair weighs [`KEY`], plus [`SAME_REQUEST`] when the two requests are the same once
//! noise is removed, [`SAME_STATUS`] and [`SAME_AUTHORIZATION`]. So a retried request (401,
//! then 200) pairs its 200 with the other session's 200, and in a session of repeated calls
//! a missing call is one deletion rather than a run of `echo` calls paired with `slow_count`
//! calls. Hirschberg's divide and conquer keeps memory linear; time is O(n·m) for the part
//! between the common prefix and suffix.

use std::collections::HashMap;

/// What the alignment knows of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Item {
    /// The interned alignment key: equal keys may pair.
    pub key: u32,
    /// What the client asked, noise removed (a hash).
    pub request: u64,
    pub status: Option<u16>,
    pub authorized: bool,
}

/// One step of the alignment, by index into A's and B's exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Pair(usize, usize),
    /// Only in A.
    Delete(usize),
    /// Only in B.
    Insert(usize),
    /// The same key in both, at places that do not line up (shown where B has it).
    Moved(usize, usize),
}

/// What a pair of equal keys weighs…
const KEY: u64 = 4;
/// …and what it gains when the requests are the same (more than two bare key matches)…
const SAME_REQUEST: u64 = 8;
/// …when the statuses are…
const SAME_STATUS: u64 = 2;
/// …and when both or neither carry Authorization.
const SAME_AUTHORIZATION: u64 = 1;

/// A reordering is local: an exchange only in A and one only in B with the same key are
/// the same exchange moved when at most this many steps of the alignment separate them.
const MOVE_WINDOW: usize = 8;

fn weight(a: &Item, b: &Item) -> u64 {
    KEY + SAME_REQUEST * u64::from(a.request == b.request)
        + SAME_STATUS * u64::from(a.status == b.status)
        + SAME_AUTHORIZATION * u64::from(a.authorized == b.authorized)
}

/// Aligns A's items with B's.
pub(super) fn align(a: &[Item], b: &[Item]) -> Alignment {
    let mut out = Out {
        ops: Vec::with_capacity(a.len().max(b.len())),
        windowed: false,
    };
    // A pair that matches in everything is in some best alignment when it opens or closes
    // both sequences, so common ends are taken as they are.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    out.ops.extend((0..prefix).map(|i| Op::Pair(i, i)));
    anchored(
        &a[prefix..a.len() - suffix],
        &b[prefix..b.len() - suffix],
        prefix,
        prefix,
        &mut out,
    );
    let (sa, sb) = (a.len() - suffix, b.len() - suffix);
    out.ops
        .extend((0..suffix).map(|k| Op::Pair(sa + k, sb + k)));
    Alignment {
        ops: moved(out.ops, a, b),
        windowed: out.windowed,
    }
}

/// The alignment being built.
#[derive(Default)]
struct Out {
    ops: Vec<Op>,
    windowed: bool,
}

/// Two sessions aligned.
pub(super) struct Alignment {
    pub ops: Vec<Op>,
    /// Part of it was too large to align whole and was aligned in windows of [`WINDOW`].
    pub windowed: bool,
}

/// Beyond this many table cells (about a second of work), a stretch is aligned in windows…
const WINDOWED_CELLS: u128 = 1 << 28;
/// …of this many exchanges.
pub(super) const WINDOW: usize = 2_048;

/// Pairs first the exchanges that occur exactly once on each side and are alike in all
/// the alignment weighs (patience diff's anchors: an `initialize`, a call with its own
/// arguments), as many as keep their order, then aligns the gaps between them. Sessions of
/// distinct requests then cost about their length instead of its square.
fn anchored(a: &[Item], b: &[Item], ia: usize, ib: usize, out: &mut Out) {
    // (count in A, position in A, count in B, position in B)
    let mut seen: HashMap<Item, (usize, usize, usize, usize)> = HashMap::with_capacity(a.len());
    for (i, x) in a.iter().enumerate() {
        seen.entry(*x).or_insert((0, i, 0, 0)).0 += 1;
    }
    for (j, y) in b.iter().enumerate() {
        if let Some(e) = seen.get_mut(y) {
            e.2 += 1;
            e.3 = j;
        }
    }
    let mut unique: Vec<(usize, usize)> = seen
        .values()
        .filter(|e| e.0 == 1 && e.2 == 1)
        .map(|e| (e.1, e.3))
        .collect();
    unique.sort_unstable();
    let (mut from_a, mut from_b) = (0, 0);
    for (i, j) in increasing_run(&unique) {
        middle(&a[from_a..i], &b[from_b..j], ia + from_a, ib + from_b, out);
        out.ops.push(Op::Pair(ia + i, ib + j));
        (from_a, from_b) = (i + 1, j + 1);
    }
    middle(&a[from_a..], &b[from_b..], ia + from_a, ib + from_b, out);
}

/// The longest run of `pairs` (sorted by their first) whose seconds increase too.
fn increasing_run(pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
    // tails[k]: index in `pairs` of the smallest last second of an increasing run of k + 1.
    let mut tails: Vec<usize> = Vec::new();
    let mut previous: Vec<Option<usize>> = vec![None; pairs.len()];
    for (n, &(_, j)) in pairs.iter().enumerate() {
        let k = tails.partition_point(|&t| pairs[t].1 < j);
        previous[n] = k.checked_sub(1).map(|k| tails[k]);
        if k == tails.len() {
            tails.push(n);
        } else {
            tails[k] = n;
        }
    }
    let mut run = Vec::with_capacity(tails.len());
    let mut at = tails.last().copied();
    while let Some(n) = at {
        run.push(pairs[n]);
        at = previous[n];
    }
    run.reverse();
    run
}

/// Aligns `a` (starting at `ia` in A) with `b` (starting at `ib` in B), appending in order.
fn middle(a: &[Item], b: &[Item], ia: usize, ib: usize, out: &mut Out) {
    if a.is_empty() {
        out.ops.extend((0..b.len()).map(|j| Op::Insert(ib + j)));
        return;
    }
    if b.is_empty() {
        out.ops.extend((0..a.len()).map(|i| Op::Delete(ia + i)));
        return;
    }
    if a.len() == 1 || (a.len() + 1).saturating_mul(b.len() + 1) <= 1 << 16 {
        table(a, b, ia, ib, out);
        return;
    }
    // Too large to align whole in reasonable time (two long captures of many interleaved
    // clients): aligned window by window, each window's share of A against the same share
    // of B. Insertions and moves are still found within a window.
    if (a.len() as u128) * (b.len() as u128) > WINDOWED_CELLS {
        let windows = a.len().max(b.len()).div_ceil(WINDOW);
        out.windowed = true;
        for w in 0..windows {
            let (a0, a1) = (a.len() * w / windows, a.len() * (w + 1) / windows);
            let (b0, b1) = (b.len() * w / windows, b.len() * (w + 1) / windows);
            middle(&a[a0..a1], &b[b0..b1], ia + a0, ib + b0, out);
        }
        return;
    }
    let mid = a.len() / 2;
    let forward = scores(a[..mid].iter(), b.iter(), b.len());
    let mut backward = scores(a[mid..].iter().rev(), b.iter().rev(), b.len());
    backward.reverse();
    // forward[k]: best score of a[..mid] with b[..k]; backward[k]: of a[mid..] with b[k..].
    let split = (0..=b.len())
        .max_by_key(|&k| (forward[k] + backward[k], std::cmp::Reverse(k)))
        .unwrap_or(0);
    middle(&a[..mid], &b[..split], ia, ib, out);
    middle(&a[mid..], &b[split..], ia + mid, ib + split, out);
}

/// The last row of the score table of `a` against `b`: entry `j` is the best score of all of
/// `a` with the first `j` items of `b`. Two rows of memory.
fn scores<'i>(
    a: impl Iterator<Item = &'i Item>,
    b: impl Iterator<Item = &'i Item> + Clone,
    m: usize,
) -> Vec<u64> {
    let mut prev = vec![0u64; m + 1];
    let mut cur = vec![0u64; m + 1];
    for x in a {
        cur[0] = 0;
        for (j, y) in b.clone().enumerate() {
            let mut s = prev[j + 1].max(cur[j]);
            if x.key == y.key {
                s = s.max(prev[j] + weight(x, y));
            }
            cur[j + 1] = s;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev
}

/// The whole table, for small problems, walked back from the end.
fn table(a: &[Item], b: &[Item], ia: usize, ib: usize, out: &mut Out) {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut t = vec![0u64; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            let mut s = t[(i - 1) * w + j].max(t[i * w + j - 1]);
            if a[i - 1].key == b[j - 1].key {
                s = s.max(t[(i - 1) * w + j - 1] + weight(&a[i - 1], &b[j - 1]));
            }
            t[i * w + j] = s;
        }
    }
    let mut back = Vec::with_capacity(n + m);
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        if i > 0
            && j > 0
            && a[i - 1].key == b[j - 1].key
            && t[i * w + j] == t[(i - 1) * w + j - 1] + weight(&a[i - 1], &b[j - 1])
        {
            back.push(Op::Pair(ia + i - 1, ib + j - 1));
            i -= 1;
            j -= 1;
        } else if j > 0 && (i == 0 || t[i * w + j - 1] >= t[(i - 1) * w + j]) {
            back.push(Op::Insert(ib + j - 1));
            j -= 1;
        } else {
            back.push(Op::Delete(ia + i - 1));
            i -= 1;
        }
    }
    out.ops.extend(back.into_iter().rev());
}

/// An exchange only in A and one only in B with the same key, close to each other, are the
/// same exchange in another place: one `Moved` entry, where B has it.
fn moved(ops: Vec<Op>, a: &[Item], b: &[Item]) -> Vec<Op> {
    let mut deleted: HashMap<u32, Vec<(usize, usize)>> = HashMap::new();
    for (at, op) in ops.iter().enumerate() {
        if let Op::Delete(i) = op {
            deleted.entry(a[*i].key).or_default().push((at, *i));
        }
    }
    let mut taken = vec![false; a.len()];
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for (at, op) in ops.iter().enumerate() {
        let Op::Insert(j) = *op else {
            out.push(*op);
            continue;
        };
        let nearest = deleted.get(&b[j].key).and_then(|candidates| {
            candidates
                .iter()
                .filter(|(from, i)| !taken[*i] && from.abs_diff(at) <= MOVE_WINDOW)
                .min_by_key(|(from, _)| from.abs_diff(at))
                .map(|(_, i)| *i)
        });
        match nearest {
            Some(i) => {
                taken[i] = true;
                out.push(Op::Moved(i, j));
            }
            None => out.push(*op),
        }
    }
    out.retain(|op| !matches!(op, Op::Delete(i) if taken[*i]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_of(a: &[Item], b: &[Item]) -> Vec<Op> {
        align(a, b).ops
    }

    #[test]
    fn long_repeated_sessions_are_aligned_in_windows_and_an_insertion_still_shows() {
        // 20,000 calls each side, every one alike but for its request; B has one more.
        let calls = |n: u64| -> Vec<Item> {
            (0..n)
                .map(|i| Item {
                    key: 1,
                    request: i % 3,
                    status: Some(200),
                    authorized: true,
                })
                .collect()
        };
        let a = calls(20_000);
        let mut b = a.clone();
        b.insert(
            12_345,
            Item {
                key: 2,
                request: 9,
                status: Some(500),
                authorized: true,
            },
        );
        let aligned = align(&a, &b);
        assert!(
            !aligned.windowed,
            "one distinct exchange anchors the rest: no window needed"
        );
        assert!(aligned.ops.contains(&Op::Insert(12_345)));
        // No anchor at all: a long run against a long run of other calls.
        let b: Vec<Item> = calls(20_001)
            .into_iter()
            .map(|mut i| {
                i.request += 1;
                i
            })
            .collect();
        let aligned = align(&a, &b);
        assert!(aligned.windowed);
        let (mut left, mut right) = (0, 0);
        for op in &aligned.ops {
            match op {
                Op::Pair(..) | Op::Moved(..) => {
                    left += 1;
                    right += 1;
                }
                Op::Delete(_) => left += 1,
                Op::Insert(_) => right += 1,
            }
        }
        assert_eq!(
            (left, right),
            (20_000, 20_001),
            "every exchange is in the alignment once"
        );
    }

    fn items(keys: &[u32]) -> Vec<Item> {
        keys.iter()
            .map(|&key| Item {
                key,
                request: 0,
                status: Some(200),
                authorized: true,
            })
            .collect()
    }

    #[test]
    fn an_insertion_and_a_deletion_leave_the_rest_paired() {
        let ops = ops_of(&items(&[1, 2, 3, 4]), &items(&[1, 1, 2, 3]));
        assert_eq!(
            ops,
            vec![
                Op::Pair(0, 0),
                Op::Insert(1),
                Op::Pair(1, 2),
                Op::Pair(2, 3),
                Op::Delete(3)
            ]
        );
    }

    #[test]
    fn a_retry_pairs_its_success_with_the_success() {
        let a = vec![Item {
            key: 7,
            request: 1,
            status: Some(200),
            authorized: true,
        }];
        let mut b = a.clone();
        b.insert(
            0,
            Item {
                key: 7,
                request: 1,
                status: Some(401),
                authorized: true,
            },
        );
        assert_eq!(ops_of(&a, &b), vec![Op::Insert(0), Op::Pair(0, 1)]);
    }

    #[test]
    fn repeated_calls_are_not_shifted_to_gain_a_pair() {
        // list, echo, read, slow_count, over and over; B retries one call (401 first) and
        // lacks another much later. Keys alone would pair echo calls with slow ones.
        let (list, call, read) = (1, 2, 3);
        let kinds = [(list, 10), (call, 20), (read, 30), (call, 40)];
        let a: Vec<Item> = (0..200)
            .map(|n| Item {
                key: kinds[n % 4].0,
                request: (kinds[n % 4].1 + n * 1000) as u64,
                status: Some(200),
                authorized: true,
            })
            .collect();
        let mut b = a.clone();
        b.remove(150);
        let mut retry = b[41];
        retry.status = Some(401);
        b.insert(41, retry);
        let ops = ops_of(&a, &b);
        let changed: Vec<_> = ops
            .iter()
            .filter(|op| matches!(op, Op::Pair(i, j) if a[*i] != b[*j]))
            .collect();
        assert!(changed.is_empty(), "{changed:?}");
        assert!(ops.contains(&Op::Insert(41)));
        assert!(ops.contains(&Op::Delete(150)));
    }

    #[test]
    fn the_longest_increasing_run_of_anchors() {
        let run = increasing_run(&[(0, 3), (1, 0), (2, 1), (3, 4), (4, 2), (5, 5)]);
        assert_eq!(run, vec![(1, 0), (2, 1), (4, 2), (5, 5)]);
        assert!(increasing_run(&[]).is_empty());
    }

    #[test]
    fn a_reordered_exchange_is_moved() {
        let ops = ops_of(&items(&[1, 2, 3]), &items(&[2, 3, 1]));
        assert_eq!(ops, vec![Op::Pair(1, 0), Op::Pair(2, 1), Op::Moved(0, 2)]);
    }

    #[test]
    fn the_linear_space_split_finds_the_same_alignment_as_the_table() {
        // Large enough to take the divide-and-conquer path.
        let a: Vec<u32> = (0..600).map(|i| i % 37).collect();
        let b: Vec<u32> = (0..500).map(|i| (i * 7) % 37).collect();
        let (ia, ib) = (items(&a), items(&b));
        let mut big = Out::default();
        middle(&ia, &ib, 0, 0, &mut big);
        let mut small = Out::default();
        table(&ia, &ib, 0, 0, &mut small);
        let (big, small) = (big.ops, small.ops);
        let pairs = |ops: &[Op]| ops.iter().filter(|o| matches!(o, Op::Pair(..))).count();
        assert_eq!(pairs(&big), pairs(&small));
        // Every index appears once, in order.
        let seen_a: Vec<usize> = big
            .iter()
            .filter_map(|o| match o {
                Op::Pair(i, _) | Op::Delete(i) => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(seen_a, (0..600).collect::<Vec<_>>());
    }

    fn total(ops: &[Op], a: &[Item], b: &[Item]) -> u64 {
        ops.iter()
            .map(|op| match op {
                Op::Pair(i, j) => weight(&a[*i], &b[*j]),
                _ => 0,
            })
            .sum()
    }

    fn item() -> impl proptest::strategy::Strategy<Value = Item> {
        use proptest::strategy::Strategy;
        (
            0u32..4,
            0u64..3,
            proptest::option::of(200u16..202),
            proptest::bool::ANY,
        )
            .prop_map(|(key, request, status, authorized)| Item {
                key,
                request,
                status,
                authorized,
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(24))]
        /// The linear-space split finds an alignment as heavy as the whole table's.
        #[test]
        fn the_split_is_as_good_as_the_table(a in proptest::collection::vec(item(), 250..320),
                                             b in proptest::collection::vec(item(), 250..320)) {
            let (mut split, mut full) = (Out::default(), Out::default());
            middle(&a, &b, 0, 0, &mut split);
            table(&a, &b, 0, 0, &mut full);
            proptest::prop_assert_eq!(total(&split.ops, &a, &b), total(&full.ops, &a, &b));
        }
    }

    proptest::proptest! {
        /// Any two key sequences align into a valid edit script: every index once, in order.
        #[test]
        fn any_alignment_covers_both_sides(a in proptest::collection::vec(0u32..5, 0..40),
                                           b in proptest::collection::vec(0u32..5, 0..40)) {
            let ops = ops_of(&items(&a), &items(&b));
            let mut seen_a: Vec<usize> = Vec::new();
            let mut seen_b: Vec<usize> = Vec::new();
            for op in ops {
                match op {
                    Op::Pair(i, j) | Op::Moved(i, j) => { seen_a.push(i); seen_b.push(j); }
                    Op::Delete(i) => seen_a.push(i),
                    Op::Insert(j) => seen_b.push(j),
                }
            }
            seen_a.sort_unstable();
            proptest::prop_assert_eq!(seen_a, (0..a.len()).collect::<Vec<_>>());
            proptest::prop_assert_eq!(seen_b, (0..b.len()).collect::<Vec<_>>());
        }
    }
}
