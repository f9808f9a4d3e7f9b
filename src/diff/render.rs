//! The side-by-side view of a [`Comparison`]: a summary and the first divergence on top, then
//! one row per aligned entry (A on the left, B on the right), unchanged pairs folded to one
//! line, each difference under its pair with the two values side by side.

use std::fmt::Write as _;

use super::{whereabouts, Comparison, Entry, EntryKind, ExchangeRef};
use crate::style::{wrap, Style};

/// Lines of a value shown before it is cut.
const VALUE_LINES: usize = 6;

/// The view, `width` columns wide (at least 60).
pub fn render(report: &Comparison, palette: Style, width: usize) -> String {
    let width = width.max(60);
    let p = palette;
    let mut out = String::new();
    for (name, side) in [("A", &report.a), ("B", &report.b)] {
        let line = format!(
            "{name}  {} · session {} · {} exchanges · {}",
            side.capture,
            side.session_id,
            side.exchanges,
            side.routes.join(", ")
        );
        let _ = writeln!(out, "{}", p.paint("1", &cut(&line, width)));
    }
    let s = &report.summary;
    let counts = format!(
        "{} aligned ({} unchanged, {} changed) · {} only in B · {} only in A · {} moved · {} {}",
        s.aligned,
        s.unchanged,
        s.changed,
        s.inserted,
        s.deleted,
        s.moved,
        s.differences,
        if s.differences == 1 {
            "difference"
        } else {
            "differences"
        }
    );
    for line in wrap(&counts, width) {
        let _ = writeln!(out, "{line}");
    }
    match &report.first_divergence {
        None => {
            let _ = writeln!(
                out,
                "{}",
                p.paint(
                    "32",
                    "No differences: the two sessions match, exchange by exchange."
                )
            );
        }
        Some(d) => {
            for (i, line) in wrap(&format!("First divergence: {}", d.sentence), width)
                .iter()
                .enumerate()
            {
                let line = if i == 0 {
                    line.clone()
                } else {
                    format!("  {line}")
                };
                let _ = writeln!(out, "{}", p.paint("33", &line));
            }
        }
    }
    let ignored = if report.options.ignore.is_empty() {
        String::new()
    } else {
        format!(", and --ignore {}", report.options.ignore.join(", "))
    };
    let noise = if report.options.strict {
        format!("--strict: nothing suppressed{ignored}")
    } else {
        format!("Noise suppressed (dates, ids, tokens, OAuth one-time values, proxy ports{ignored}): --strict shows it.")
    };
    for line in wrap(&noise, width) {
        let _ = writeln!(out, "{}", p.paint("2", &line));
    }
    if let Some(window) = report.windowed {
        let words = format!(
            "Long captures: aligned in windows of {window} exchanges, each share of A against the same share of B; compare two client flows with --flow-a N --flow-b M."
        );
        for line in wrap(&words, width) {
            let _ = writeln!(out, "{}", p.paint("2", &line));
        }
    }
    if report.entries.is_empty() {
        return out;
    }

    let left = (width - 5) / 2;
    let right = width - 5 - left;
    let row = |out: &mut String, mark: &str, l: &str, r: &str, paint: &dyn Fn(&str) -> String| {
        let l = pad(&cut(l, left), left);
        let r = cut(r, right);
        let line = format!("{mark} {l} │ {r}");
        let _ = writeln!(out, "{}", paint(line.trim_end()));
    };
    let _ = writeln!(out);
    row(&mut out, " ", "A", "B", &|t| p.paint("1", t));
    for entry in &report.entries {
        let (mark, paint_mark): (&str, &str) = match entry.kind {
            EntryKind::Unchanged => ("=", "2"),
            EntryKind::Changed => ("≠", "33"),
            EntryKind::Inserted => ("+", "32"),
            EntryKind::Deleted => ("-", "31"),
            EntryKind::Moved => ("↔", "36"),
        };
        let l = entry.a.as_ref().map(|x| cell(x, left)).unwrap_or_default();
        let r = entry.b.as_ref().map(|x| cell(x, right)).unwrap_or_default();
        if entry.kind == EntryKind::Unchanged {
            row(&mut out, mark, &l, &r, &|t| p.paint("2", t));
            continue;
        }
        let l = pad(&cut(&l, left), left);
        let r = cut(&r, right);
        let _ = writeln!(out, "{} {l} │ {}", p.paint(paint_mark, mark), r.trim_end());
        if entry.kind == EntryKind::Moved {
            let note = format!("    (in another order: {})", whereabouts(entry));
            let _ = writeln!(out, "{}", p.paint("36", &cut(&note, width)));
        }
        differences(&mut out, entry, p, left, right, width);
    }
    out
}

fn differences(out: &mut String, entry: &Entry, p: Style, left: usize, right: usize, width: usize) {
    for d in &entry.differences {
        let _ = writeln!(
            out,
            "{}",
            p.paint("1", &cut(&format!("    {}", d.field), width))
        );
        let value_lines = |v: Option<&str>, w: usize| -> Vec<String> {
            match v {
                None => vec!["(absent)".to_string()],
                Some(v) => chunks(v, w.saturating_sub(4).max(8)),
            }
        };
        let la = value_lines(d.a.as_deref(), left);
        let lb = value_lines(d.b.as_deref(), right);
        for i in 0..la.len().max(lb.len()) {
            let a = la.get(i).map(|s| format!("    {s}")).unwrap_or_default();
            let b = lb.get(i).map(|s| format!("  {s}")).unwrap_or_default();
            let (ca, cb) = match (&d.a, &d.b) {
                (None, _) => ("2", "32"),
                (_, None) => ("31", "2"),
                _ => ("31", "32"),
            };
            let a = pad(&cut(&a, left), left);
            let b = cut(&b, right);
            let painted_a = if a.trim().is_empty() {
                a.clone()
            } else {
                p.paint(ca, &a)
            };
            let _ = writeln!(out, "  {painted_a} │ {}", p.paint(cb, b.trim_end()));
        }
    }
}

/// `#3 GET /path tools/list 200` in at most `width` characters: a long path is cut, so the
/// status stays in view.
fn cell(x: &ExchangeRef, width: usize) -> String {
    let status = x
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "---".into());
    let head = format!("#{} {} ", x.ex, x.method);
    let tail = match &x.rpc {
        Some(rpc) => format!(" {rpc} {status}"),
        None => format!(" {status}"),
    };
    let room = width
        .saturating_sub(head.chars().count() + tail.chars().count())
        .max(8);
    format!("{head}{}{tail}", cut(&x.path, room))
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n >= width {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(width - n))
    }
}

/// At most `width` characters, the last one `…` when cut.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A long value in lines of `width` characters, at most [`VALUE_LINES`] of them.
fn chunks(s: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().filter(|c| !c.is_control()).collect();
    let mut lines: Vec<String> = chars
        .chunks(width.max(1))
        .map(|c| c.iter().collect())
        .collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    if lines.len() > VALUE_LINES {
        lines.truncate(VALUE_LINES);
        if let Some(last) = lines.last_mut() {
            let kept: String = last.chars().take(width.saturating_sub(1)).collect();
            *last = format!("{kept}…");
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_into_bounded_lines() {
        let lines = chunks(&"x".repeat(1000), 10);
        assert_eq!(lines.len(), VALUE_LINES);
        assert!(lines.last().unwrap().ends_with('…'));
        assert!(lines.iter().all(|l| l.chars().count() <= 10));
        assert_eq!(cut("héllo wörld", 5), "héll…");
        assert_eq!(pad("é", 3), "é  ");
    }
}
