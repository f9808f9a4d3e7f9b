//! The capture file itself: its name, and creating it safely (0600, folder 0700, never
//! overwriting a capture). Shared by every command that writes one (proxy, replay, mock).

use std::fs::File;
use std::path::PathBuf;

use anyhow::Context as _;

use super::writer::Clock;

/// Where a capture goes.
#[derive(Debug, Clone)]
pub enum CaptureTarget {
    /// This exact file (must not exist yet, unless it is not a regular file such as /dev/null).
    File(PathBuf),
    /// `<dir>/<UTC time>-<short id>.jsonl`.
    Dir(PathBuf),
}

/// Eight random hex characters: a session id, and the end of the default file name.
pub fn short_id() -> String {
    let mut bytes = [0u8; 4];
    // Without randomness the id only needs to be unlikely to repeat: fall back to the clock.
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0))
        .to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates the capture file 0600 (its folder 0700), never overwriting an existing capture;
/// a path that is not a regular file (`/dev/null`, a FIFO) is written as it is.
pub fn open_capture(
    target: &CaptureTarget,
    clock: &Clock,
    id: &str,
) -> anyhow::Result<(PathBuf, File)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = match target {
        CaptureTarget::File(p) => p.clone(),
        CaptureTarget::Dir(dir) => {
            let stamp = clock.wall_start().strftime("%Y%m%dT%H%M%SZ").to_string();
            dir.join(format!("{stamp}-{id}.jsonl"))
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating the capture folder {}", parent.display()))?;
        }
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        if !meta.is_file() {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            return Ok((path, file));
        }
        anyhow::bail!(
            "the capture file {} already exists; choose another --capture path (mcptap never overwrites a capture)",
            path.display()
        );
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating the capture file {}", path.display()))?;
    Ok((path, file))
}

/// The path of part `n` (1, 2, …) of a capture rotated with `--rotate-size`/`--rotate-every`:
/// `capture.jsonl` → `capture.1.jsonl`, `capture.2.jsonl`, ….
pub fn part_path(first: &std::path::Path, n: u32) -> PathBuf {
    let name = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    first.with_file_name(format!("{stem}.{n}.jsonl"))
}

/// Creates a new file 0600 that must not exist yet (a rotated part).
pub fn create_part(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// When a long-running capture goes on in a new file.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The first file: parts are named after it ([`part_path`]).
    pub first: PathBuf,
    /// Its first line, the `session` event, which every part begins with.
    pub session_line: Vec<u8>,
    /// After this many bytes in a file.
    pub max_bytes: Option<u64>,
    /// After this long in a file.
    pub every: Option<std::time::Duration>,
}
