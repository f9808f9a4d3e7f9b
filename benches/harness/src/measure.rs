//! One command run to its end, and what it cost: wall time, CPU time and peak resident
//! memory (`ru_maxrss` of its rusage from wait4(2)), or why it failed.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// What a command cost.
pub struct Measured {
    pub wall: Duration,
    /// User and system time.
    pub cpu: Duration,
    /// Peak resident memory, KiB (Linux's unit for `ru_maxrss`).
    pub peak_kib: u64,
    /// Why it failed (exit status, signal, or killed by us, and the tail of its stderr);
    /// `None` when it exited 0.
    pub failure: Option<String>,
}

/// Runs `program args` with stdout into `stdout` and stderr into `stderr`, and waits for it.
/// It is killed once it has run `limit` or holds more than `max_rss_kib` (a runaway must not
/// take the machine), and that is its failure. Blocks the calling thread.
pub fn run<S: AsRef<OsStr>>(
    program: &Path,
    args: &[S],
    stdout: &Path,
    stderr: &Path,
    limit: Duration,
    max_rss_kib: u64,
) -> anyhow::Result<Measured> {
    let out = File::create(stdout).with_context(|| format!("creating {}", stdout.display()))?;
    let err = File::create(stderr).with_context(|| format!("creating {}", stderr.display()))?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut killed: Option<String> = None;
    let mut next_look = started;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on a child of ours, writing only into the two values we pass.
        let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if reaped == pid {
            break (status, usage);
        }
        if reaped < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for the command");
        }
        if killed.is_none() && Instant::now() >= next_look {
            next_look += Duration::from_millis(50);
            let rss = vm_rss_kib(child.id());
            if started.elapsed() >= limit {
                killed = Some(format!("killed after {:.0} s", limit.as_secs_f64()));
            } else if rss > max_rss_kib {
                killed = Some(format!("killed at {} MiB of resident memory", rss / 1024));
            }
            if killed.is_some() {
                let _ = child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let wall = started.elapsed();
    let cpu = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    let failure = match killed {
        Some(why) => Some(why),
        None if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => None,
        None if libc::WIFEXITED(status) => {
            Some(format!("exit status {}", libc::WEXITSTATUS(status)))
        }
        None => Some(format!("killed by signal {}", libc::WTERMSIG(status))),
    };
    Ok(Measured {
        wall,
        cpu,
        peak_kib: usage.ru_maxrss.max(0) as u64,
        failure: failure.map(|why| match tail(stderr) {
            t if t.is_empty() => why,
            t => format!("{why}: {t}"),
        }),
    })
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The last two lines of a log, on one line, at most 300 characters.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .rev()
        .take(2)
        .collect();
    lines.reverse();
    let joined = lines.join(" / ");
    match joined.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_measured_and_a_failure_says_why() {
        let dir = std::env::temp_dir().join(format!("mcptap-bench-measure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (out, err) = (dir.join("out"), dir.join("err"));
        let day = Duration::from_secs(86400);
        let ok = run(
            Path::new("sh"),
            &["-c", "echo hello"],
            &out,
            &err,
            day,
            u64::MAX,
        )
        .unwrap();
        assert!(ok.failure.is_none());
        assert!(ok.peak_kib > 0);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
        let failed = run(
            Path::new("sh"),
            &["-c", "echo first >&2; echo 'no such capture' >&2; exit 2"],
            &out,
            &err,
            day,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(
            failed.failure.as_deref(),
            Some("exit status 2: first / no such capture")
        );
        let slow = run(
            Path::new("sleep"),
            &["5"],
            &out,
            &err,
            Duration::from_secs(1),
            u64::MAX,
        )
        .unwrap();
        assert_eq!(slow.failure.as_deref(), Some("killed after 1 s"));
        assert!(slow.wall < Duration::from_secs(3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
