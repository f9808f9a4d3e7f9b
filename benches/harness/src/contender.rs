//! The contenders: direct to the upstream, mcptap recording on and off, nginx, mitmdump.
//! Each proxy runs as its own process, started fresh for each workload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::client;
use crate::Env;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Direct,
    McptapOn,
    McptapOff,
    Nginx,
    Mitmproxy,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::McptapOn,
        Kind::McptapOff,
        Kind::Nginx,
        Kind::Mitmproxy,
    ];
    pub const PROXIES: [Kind; 4] = [
        Kind::McptapOn,
        Kind::McptapOff,
        Kind::Nginx,
        Kind::Mitmproxy,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::McptapOn => "mcptap, recording",
            Kind::McptapOff => "mcptap, --capture /dev/null",
            Kind::Nginx => "nginx",
            Kind::Mitmproxy => "mitmdump -w",
        }
    }
}

/// The contenders in the order of round `round`: rotated, so none always goes first.
pub fn rotation(kinds: &[Kind], round: usize) -> Vec<Kind> {
    let mut v = kinds.to_vec();
    if !v.is_empty() {
        let n = v.len();
        v.rotate_left(round % n);
    }
    v
}

/// How the listener faces the client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Plain,
    Tls,
}

/// A started contender.
pub struct Running {
    pub kind: Kind,
    /// HTTP/1.1 (and h2c prior knowledge where the contender has it) in plain text.
    pub plain: Option<SocketAddr>,
    /// Where h2c prior knowledge is served, or why not.
    pub h2c: Result<SocketAddr, String>,
    /// TLS on the client side.
    pub tls: Option<SocketAddr>,
    child: Option<Child>,
    /// Files to delete when stopped (captures, flows, logs).
    scratch: Vec<PathBuf>,
    /// The recording folder or file, for its size.
    pub record: Option<PathBuf>,
    /// Where the process's stderr goes.
    log: Option<PathBuf>,
}

impl Running {
    /// The process ids that make up the proxy (nginx: the workers).
    pub fn pids(&self) -> Vec<u32> {
        let Some(pid) = self.child.as_ref().and_then(|c| c.id()) else {
            return Vec::new();
        };
        if self.kind == Kind::Nginx {
            let workers = children_of(pid);
            if !workers.is_empty() {
                return workers;
            }
        }
        vec![pid]
    }

    /// Resident memory of the proxy now, KiB (nginx: its workers added up).
    pub fn rss_kib(&self) -> u64 {
        self.pids().iter().map(|p| status_kib(*p, "VmRSS:")).sum()
    }

    /// Starts a new peak-RSS window (Linux: `5` into clear_refs resets VmHWM).
    pub fn reset_peak(&self) {
        for pid in self.pids() {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// Peak resident memory since `reset_peak`, KiB (nginx: the largest worker).
    pub fn peak_kib(&self) -> u64 {
        self.pids()
            .iter()
            .map(|p| status_kib(*p, "VmHWM:"))
            .max()
            .unwrap_or(0)
    }

    /// CPU seconds used so far by the process's threads, added up by thread name.
    pub fn thread_cpu(&self) -> Vec<(String, f64)> {
        let mut by_name: Vec<(String, f64)> = Vec::new();
        for pid in self.pids() {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue;
                };
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                let name = stat[open + 1..close].to_string();
                let ticks: f64 = stat[close + 1..]
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|x| x.parse::<f64>().ok())
                    .sum();
                // SAFETY: sysconf reads a constant.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                match by_name.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, t)) => *t += ticks / hz,
                    None => by_name.push((name, ticks / hz)),
                }
            }
        }
        by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
        by_name
    }

    /// The first line of the process's log that contains `needle`.
    pub fn log_line(&self, needle: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.log.as_ref()?).ok()?;
        let line = text.lines().find(|l| l.contains(needle))?;
        // mitmproxy prefixes "[time][peer] ".
        Some(line.rsplit("] ").next().unwrap_or(line).trim().to_string())
    }

    /// Bytes recorded so far (capture folder or flows file).
    pub fn recorded_bytes(&self) -> u64 {
        self.record.as_deref().map(dir_size).unwrap_or(0)
    }

    /// Keeps the recording when the contender stops: `stop` deletes every other file, and
    /// the caller deletes this one when done with it.
    pub fn keep_record(&mut self) -> Option<PathBuf> {
        let record = self.record.clone()?;
        self.scratch.retain(|p| *p != record);
        Some(record)
    }

    /// Stops the process (SIGTERM, then SIGKILL after 10 s) and deletes its files.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) on a child process id we started; no memory is involved.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        for path in &self.scratch {
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
        }
    }
}

/// Starts one contender and waits until it forwards.
pub async fn start(kind: Kind, env: &Env, listen: Listen) -> Result<Running, String> {
    let up = env.upstream.plain;
    let tmp = &env.tmp;
    let id = next_id();
    match kind {
        Kind::Direct => Ok(Running {
            kind,
            plain: Some(up),
            h2c: Ok(up),
            tls: Some(env.upstream.tls),
            child: None,
            scratch: Vec::new(),
            record: None,
            log: None,
        }),
        Kind::McptapOn | Kind::McptapOff => {
            let port = free_port()?;
            let listen_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let log = tmp.join(format!("mcptap-{id}.log"));
            let captures = tmp.join(format!("captures-{id}"));
            let mut cmd = Command::new(&env.mcptap);
            cmd.arg("proxy")
                .arg("--upstream")
                .arg(format!("http://{up}"))
                .arg("--listen")
                .arg(listen_addr.to_string())
                .arg("--quiet")
                .arg("--grace")
                .arg("1")
                .args(&env.mcptap_flags);
            if kind == Kind::McptapOn {
                cmd.arg("--captures-dir").arg(&captures);
            } else {
                cmd.arg("--capture").arg("/dev/null");
            }
            if listen == Listen::Tls {
                cmd.arg("--self-signed").arg("--certs-dir").arg(&env.certs);
            }
            let child = spawn(cmd, &log)?;
            let tls = listen == Listen::Tls;
            let mut running = Running {
                kind,
                plain: (!tls).then_some(listen_addr),
                h2c: if tls {
                    Err("TLS listener".into())
                } else {
                    Ok(listen_addr)
                },
                tls: tls.then_some(listen_addr),
                child: Some(child),
                scratch: vec![log.clone()],
                record: None,
                log: Some(log.clone()),
            };
            if kind == Kind::McptapOn {
                running.scratch.push(captures.clone());
                running.record = Some(captures);
            }
            ready(&mut running, listen_addr, !tls, &log).await?;
            Ok(running)
        }
        Kind::Nginx => {
            let Some(nginx) = &env.nginx else {
                return Err("nginx not installed".into());
            };
            let (p1, p2, p3) = (free_port()?, free_port()?, free_port()?);
            let dir = tmp.join(format!("nginx-{id}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let conf = nginx_conf(env, &dir, p1, p2, p3);
            std::fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
            let log = dir.join("stderr.log");
            let mut cmd = Command::new(nginx);
            cmd.arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-g")
                .arg("daemon off;");
            let child = spawn(cmd, &log)?;
            let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().expect("addr") };
            let mut running = Running {
                kind,
                plain: Some(addr(p1)),
                h2c: Ok(addr(p2)),
                tls: Some(addr(p3)),
                child: Some(child),
                scratch: vec![dir.clone()],
                record: Some(dir.join("access.log")),
                log: Some(log.clone()),
            };
            ready(&mut running, addr(p1), true, &log).await?;
            Ok(running)
        }
        Kind::Mitmproxy => {
            let mitmdump = env.mitmdump.as_ref().map_err(Clone::clone)?;
            let port = free_port()?;
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            let flows = tmp.join(format!("mitm-{id}.flows"));
            let log = tmp.join(format!("mitm-{id}.log"));
            let mut cmd = Command::new(mitmdump);
            cmd.arg("--mode")
                .arg(format!("reverse:http://{up}"))
                .arg("--listen-host")
                .arg("127.0.0.1")
                .arg("--listen-port")
                .arg(port.to_string())
                .arg("-w")
                .arg(&flows)
                .arg("-q")
                .arg("--set")
                .arg("flow_detail=0")
                .arg("--set")
                .arg(format!("confdir={}", env.tmp.join("mitm-conf").display()));
            let child = spawn(cmd, &log)?;
            let mut running = Running {
                kind,
                plain: Some(addr),
                h2c: Ok(addr),
                tls: Some(addr),
                child: Some(child),
                scratch: vec![flows.clone(), log.clone()],
                record: Some(flows),
                log: Some(log.clone()),
            };
            ready(&mut running, addr, true, &log).await?;
            Ok(running)
        }
    }
}

/// Waits until a POST goes through (or, for a TLS-only listener, the port accepts).
async fn ready(
    running: &mut Running,
    addr: SocketAddr,
    post: bool,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(child) = running.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited at start ({status}): {}", tail(log)));
            }
        }
        let ok = if post {
            matches!(client::post_once(addr).await, Ok(200))
        } else {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        };
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within 30 s: {}", tail(log)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn(mut cmd: Command, log: &Path) -> Result<Child, String> {
    let err = std::fs::File::create(log).map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .kill_on_drop(true);
    cmd.spawn().map_err(|e| format!("cannot start: {e}"))
}

fn nginx_conf(env: &Env, dir: &Path, plain: u16, h2c: u16, tls: u16) -> String {
    let d = dir.display();
    let up = env.upstream.plain;
    let cert = env.certs.join("localhost.pem");
    let key = env.certs.join("localhost-key.pem");
    // The descriptors a worker may use: the harness raised the limit to its hard maximum.
    let nofile = env.nofile;
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let location = "location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffering off;
            proxy_read_timeout 3600s;
        }";
    format!(
        "# Written by mcptap's benchmark harness.
{user}
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
events {{ worker_connections {nofile}; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 3600s;
    upstream up {{
        server {up};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{plain};
        listen 127.0.0.1:{tls} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        {location}
    }}
    server {{
        listen 127.0.0.1:{h2c} http2;
        {location}
    }}
}}
",
        cert = cert.display(),
        key = key.display(),
    )
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ID: AtomicU64 = AtomicU64::new(1);
    ID.fetch_add(1, Ordering::Relaxed)
}

/// A port that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let mut lines: Vec<&str> = lines.into_iter().rev().collect();
    lines.retain(|l| !l.trim().is_empty());
    lines.join(" / ")
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The fields after the parenthesised command name: state, ppid, ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        if rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(pid)
        {
            out.push(child);
        }
    }
    out
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}
