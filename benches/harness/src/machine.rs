//! What the machine is, and whether something else was using it while we measured.

use std::time::{Duration, Instant};

/// CPU time of the whole machine against this process's own (its children included once
/// they are reaped: every contender and load generator is stopped within its workload).
pub struct CpuMeter {
    busy: u64,
    ours: u64,
    at: Instant,
}

impl CpuMeter {
    pub fn start() -> Self {
        CpuMeter {
            busy: machine_busy_ticks(),
            ours: own_ticks(),
            at: Instant::now(),
        }
    }

    /// The share of the machine's CPU that other processes used since `start`, 0..1.
    pub fn others(&self) -> f64 {
        let busy = machine_busy_ticks().saturating_sub(self.busy) as f64;
        let ours = own_ticks().saturating_sub(self.ours) as f64;
        let capacity = self.at.elapsed().as_secs_f64() * ticks_per_second() * cores();
        ((busy - ours) / capacity).clamp(0.0, 1.0)
    }
}

/// Waits until other processes use less than `share` of the machine over 3 s, at most
/// `patience`; returns their last measured share.
pub async fn wait_quiet(share: f64, patience: Duration) -> f64 {
    let until = Instant::now() + patience;
    let mut said = false;
    loop {
        let meter = CpuMeter::start();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let others = meter.others();
        if others < share || Instant::now() >= until {
            return others;
        }
        if !said {
            eprintln!(
                "bench: other processes use {:.0}% of the CPU; waiting up to {:.0} s for quiet",
                others * 100.0,
                patience.as_secs_f64()
            );
            said = true;
        }
    }
}

/// user + nice + system ticks of all CPUs (interrupt time is left out: our own loopback
/// traffic is processed there).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    v.iter().take(3).sum()
}

/// utime + stime + cutime + cstime of this process.
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    // After the command: state(0) ppid(1) ... utime is field 14 of the line, index 11 here.
    rest.split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse::<u64>().ok())
        .sum()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn cores() -> f64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0)
}

pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// The machine's RAM, KiB (`MemTotal`).
pub fn memory_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// "2 cores of <CPU>, 24 GiB RAM, Linux <release>"
pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = memory_kib()
        .map(|kib| format!("{:.0} GiB", kib as f64 / 1048576.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} cores of {cpu}, {mem} RAM, Linux {}",
        cores(),
        kernel.trim()
    )
}
