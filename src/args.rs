//! Argument values several commands take: sizes, listen addresses, and output files that
//! must not be one of the inputs.

use anyhow::Context as _;

/// `10MiB`, `512k`, `1048576` → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 1048576, 512KiB, 10MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `90s`, `30m`, `6h`, `1d`, or plain seconds → a duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 90s, 30m, 6h, 1d)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit '{other}' (use s, m, h or d)"
            ))
        }
    };
    std::time::Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("'{s}' is not a positive duration"))
}

/// A `--listen` address: an IP and port, or a name that resolves to one.
pub fn resolve_listen(listen: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| format!("--listen '{listen}' is not an address like 127.0.0.1:8080"))
}

/// Whether two paths name one existing file (so writing one would destroy the other).
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The capture at `path`, or only its client flow `flow` (numbered from 1, as `explain`'s flow
/// table numbers them).
pub fn open_capture(
    path: &std::path::Path,
    flow: Option<usize>,
) -> anyhow::Result<crate::capture::reader::Capture> {
    let capture = crate::capture::reader::Capture::open(path)?;
    let Some(n) = flow else {
        return Ok(capture);
    };
    let facts = crate::mcp::session::ServerFacts::of(&capture);
    let split = crate::mcp::flows::split(&capture, &facts);
    match split.flows.get(n.wrapping_sub(1)) {
        Some(f) => Ok(capture.subset(&f.exchanges)),
        None => anyhow::bail!(
            "--flow {n}: {} has {} client flow{} (numbered from 1; `mcptap explain {}` lists them)",
            path.display(),
            split.flows.len(),
            if split.flows.len() == 1 { "" } else { "s" },
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5XB").is_err());
    }
}
