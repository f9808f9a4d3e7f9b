//! Medians over rounds, and the markdown the results are written in.

use std::collections::BTreeMap;

use crate::contender::Kind;

/// The `p`th percentile of sorted values (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Percentiles of unsorted µs latencies.
pub fn latency_percentiles(lat: &[u64], ps: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = lat.iter().map(|&x| x as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    ps.iter().map(|&p| percentile(&v, p)).collect()
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per contender: one value per round for each named metric, or why it has none.
#[derive(Default)]
pub struct Rounds {
    values: BTreeMap<(Kind, String), Vec<f64>>,
    na: BTreeMap<(Kind, String), String>,
}

impl Rounds {
    pub fn add(&mut self, kind: Kind, metric: &str, value: f64) {
        self.values
            .entry((kind, metric.to_string()))
            .or_default()
            .push(value);
    }

    /// Marks the metric n/a for this contender (the first reason given is kept).
    pub fn na(&mut self, kind: Kind, metric: &str, why: impl Into<String>) {
        self.na
            .entry((kind, metric.to_string()))
            .or_insert_with(|| why.into());
    }

    /// The median over rounds, unless some round failed.
    pub fn get(&self, kind: Kind, metric: &str) -> Option<f64> {
        let key = (kind, metric.to_string());
        if self.na.contains_key(&key) {
            return None;
        }
        self.values.get(&key).map(|v| median(v))
    }

    /// `kind`'s value over `base`'s, round by round, when both have one in every round. Each
    /// round runs the contenders back to back, so a change in the machine's speed between
    /// rounds, which moves the medians of each apart, cancels out of the pair.
    pub fn paired(&self, kind: Kind, base: Kind, metric: &str) -> Option<Vec<f64>> {
        // None when a round failed (`get` says so) or the metric was never measured.
        let values = |k: Kind| {
            self.get(k, metric)
                .and(self.values.get(&(k, metric.to_string())))
        };
        let (a, b) = (values(kind)?, values(base)?);
        (a.len() == b.len() && b.iter().all(|&v| v > 0.0))
            .then(|| a.iter().zip(b).map(|(x, y)| x / y).collect())
    }

    pub fn why(&self, kind: Kind, metric: &str) -> Option<&str> {
        self.na.get(&(kind, metric.to_string())).map(String::as_str)
    }
}

/// A markdown table.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Self {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.head.join(" | "));
        out.push_str(&format!(
            "|{}\n",
            self.head
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
                .collect::<String>()
        ));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    }
}

/// `12,345`
pub fn count(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Milliseconds from µs, with precision that suits the size.
pub fn ms(us: f64) -> String {
    let m = us / 1000.0;
    if m.abs() >= 100.0 {
        format!("{m:.0}")
    } else if m.abs() >= 10.0 {
        format!("{m:.1}")
    } else {
        format!("{m:.2}")
    }
}

/// A signed added latency in ms.
pub fn plus_ms(us: f64) -> String {
    let s = ms(us);
    if us >= 0.0 {
        format!("+{s}")
    } else {
        s
    }
}

/// `0.87×`
pub fn ratio(v: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}×", v / b),
        _ => "–".into(),
    }
}

pub fn na(why: Option<&str>) -> String {
    format!("n/a ({})", why.unwrap_or("no result"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    }

    #[test]
    fn pairs_are_taken_round_by_round() {
        let mut r = Rounds::default();
        for (a, b) in [(40.0, 50.0), (20.0, 25.0), (30.0, 60.0)] {
            r.add(Kind::McptapOn, "rps", a);
            r.add(Kind::Nginx, "rps", b);
        }
        assert_eq!(
            r.paired(Kind::McptapOn, Kind::Nginx, "rps"),
            Some(vec![0.8, 0.8, 0.5])
        );
        // The medians of each (30 over 50) say 0.6.
        r.na(Kind::Nginx, "rps", "failed");
        assert_eq!(r.paired(Kind::McptapOn, Kind::Nginx, "rps"), None);
    }
}
