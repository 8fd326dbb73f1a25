//! CPU accounting from `/proc`: the whole machine, this process, the nekton server (by thread
//! name) and its PostgreSQL processes (its descendants, by role), so a report can say who used the
//! cores during a benchmark.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::stats::num;

/// Clock ticks per second of `/proc` CPU times.
fn ticks_per_sec() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// The fields of `/proc/<pid>/stat` (or a task's) that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    pub ppid: i32,
    /// utime + stime of the process itself.
    pub own: u64,
    /// cutime + cstime: its children that exited and were waited for.
    pub children: u64,
}

/// Parses a `stat` line; the command name may contain spaces and parentheses.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |i: usize| rest.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(ProcStat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        own: field(11)? + field(12)?,
        children: field(13)? + field(14)?,
    })
}

fn read_stat(path: &Path) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(path).ok()?)
}

/// Busy and total ticks of all CPUs from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is included in user)
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let idle = get(3) + get(4);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    Some((busy, busy + idle))
}

/// What a PostgreSQL process is, from its command line.
fn postgres_role(pid: i32) -> String {
    let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
    let cmd = cmd.trim();
    match cmd.strip_prefix("postgres: ") {
        Some(rest) if rest.contains("[local]") || rest.contains("127.0.0.1") => {
            "backends".to_string()
        }
        Some(rest) if rest.starts_with("autovacuum worker") => "autovacuum workers".to_string(),
        Some(rest) => rest.trim().to_string(),
        None => "postmaster".to_string(),
    }
}

/// One reading of everything.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    machine: Option<(u64, u64)>,
    this: u64,
    server: Option<ServerTicks>,
    /// What the server process is called in the report ("nekton" unless told otherwise).
    label: String,
}

#[derive(Debug, Clone, Default)]
struct ServerTicks {
    /// The server process (all its threads, including exited ones).
    process: u64,
    /// Live threads by name.
    threads: BTreeMap<String, u64>,
    /// Descendant processes by role (PostgreSQL roles, or the command name), own + reaped children.
    descendants: BTreeMap<String, u64>,
    /// False if the server process was gone.
    alive: bool,
    /// Resident set size and its peak so far (VmRSS, VmHWM), in KiB.
    rss_kib: Option<(u64, u64)>,
}

/// Reads the CPU times of the machine, this process and (when known) the server's process tree.
pub fn snapshot(server_pid: Option<i32>) -> CpuSnapshot {
    snapshot_with(server_pid, &[], "nekton")
}

/// Like [`snapshot`], with more process trees counted as the server's descendants (an external
/// PostgreSQL's postmaster, worker processes) and the server process called `label`.
pub fn snapshot_with(server_pid: Option<i32>, extra_roots: &[i32], label: &str) -> CpuSnapshot {
    let this = read_stat(Path::new("/proc/self/stat")).map_or(0, |s| s.own);
    CpuSnapshot {
        at: Instant::now(),
        machine: machine_ticks(),
        this,
        server: server_pid.map(|p| server_ticks(p, extra_roots)),
        label: label.to_string(),
    }
}

fn server_ticks(pid: i32, extra_roots: &[i32]) -> ServerTicks {
    let mut t = ServerTicks::default();
    let Some(me) = read_stat(Path::new(&format!("/proc/{pid}/stat"))) else {
        return t;
    };
    t.alive = true;
    // Its own time and that of its children it reaped (worker processes that exited).
    t.process = me.own + me.children;
    t.rss_kib = memory_kib(pid);
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some(s) = read_stat(&task.path().join("stat")) {
                *t.threads.entry(thread_group(&s.comm)).or_default() += s.own;
            }
        }
    }
    // Every process with its parent, to find the server's descendants.
    let mut all: Vec<(i32, ProcStat)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(s) = read_stat(&e.path().join("stat")) {
                all.push((p, s));
            }
        }
    }
    let mut tree = vec![pid];
    tree.extend(extra_roots.iter().filter(|p| **p != pid));
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (p, s) in &all {
            if s.ppid == parent && !tree.contains(p) {
                tree.push(*p);
            }
        }
        i += 1;
    }
    for (p, s) in &all {
        if *p == pid || !tree.contains(p) {
            continue;
        }
        let role = if s.comm.starts_with("postgres") || s.comm == "postmaster" {
            format!("postgres: {}", postgres_role(*p))
        } else {
            s.comm.clone()
        };
        *t.descendants.entry(role).or_default() += s.own + s.children;
    }
    t
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: i32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Thread names with numbers folded (`tokio-runtime-w`, `nekton-sandbox`, ...).
fn thread_group(comm: &str) -> String {
    comm.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '#')
        .to_string()
}

/// CPU used between two snapshots, in seconds.
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub wall_s: f64,
    pub cores: usize,
    pub machine_busy_s: Option<f64>,
    pub load_tests_s: f64,
    pub nekton_s: Option<f64>,
    pub nekton_threads: Vec<(String, f64)>,
    pub postgres_s: Option<f64>,
    pub descendants: Vec<(String, f64)>,
    /// Descendants that are not PostgreSQL (worker processes, a job's processes, node children).
    pub children_s: Option<f64>,
    /// What the server process is called ("nekton").
    pub label: String,
    /// nekton's resident memory at the end and its peak since it started, in KiB.
    pub nekton_rss_kib: Option<(u64, u64)>,
}

impl CpuUse {
    pub fn between(a: &CpuSnapshot, b: &CpuSnapshot) -> Self {
        let hz = ticks_per_sec();
        let s = |t: u64| t as f64 / hz;
        let d = |x: u64, y: u64| s(y.saturating_sub(x));
        let machine_busy_s = match (a.machine, b.machine) {
            (Some((ab, _)), Some((bb, _))) => Some(d(ab, bb)),
            _ => None,
        };
        let (mut nekton_s, mut postgres_s, mut children_s) = (None, None, None);
        let mut nekton_threads = Vec::new();
        let mut descendants = Vec::new();
        let nekton_rss_kib = b.server.as_ref().and_then(|s| s.rss_kib);
        if let (Some(x), Some(y)) = (&a.server, &b.server)
            && x.alive
            && y.alive
        {
            nekton_s = Some(d(x.process, y.process));
            for (name, after) in &y.threads {
                let before = x.threads.get(name).copied().unwrap_or(0);
                nekton_threads.push((name.clone(), d(before, *after)));
            }
            let (mut pg, mut other) = (0.0, 0.0);
            for (role, after) in &y.descendants {
                let before = x.descendants.get(role).copied().unwrap_or(0);
                let used = d(before, *after);
                if role.starts_with("postgres") {
                    pg += used;
                } else {
                    other += used;
                }
                descendants.push((role.clone(), used));
            }
            postgres_s = Some(pg);
            children_s = Some(other);
            nekton_threads.sort_by(|p, q| q.1.total_cmp(&p.1));
            descendants.sort_by(|p, q| q.1.total_cmp(&p.1));
        }
        Self {
            wall_s: b.at.duration_since(a.at).as_secs_f64(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            machine_busy_s,
            load_tests_s: d(a.this, b.this),
            nekton_s,
            nekton_threads,
            postgres_s,
            descendants,
            children_s,
            label: b.label.clone(),
            nekton_rss_kib,
        }
    }

    /// CPU seconds not accounted to nekton, its PostgreSQL or this process.
    pub fn others_s(&self) -> Option<f64> {
        let busy = self.machine_busy_s?;
        Some(
            (busy
                - self.load_tests_s
                - self.nekton_s.unwrap_or(0.0)
                - self.postgres_s.unwrap_or(0.0)
                - self.children_s.unwrap_or(0.0))
            .max(0.0),
        )
    }

    /// Report lines; per-job figures when `jobs` is given.
    pub fn lines(&self, jobs: Option<u64>) -> Vec<String> {
        let avail = self.wall_s * self.cores as f64;
        let per_job = |secs: f64| match jobs {
            Some(n) if n > 0 => format!(" ({} ms/job)", num(secs * 1000.0 / n as f64)),
            _ => String::new(),
        };
        let mut out = vec![format!(
            "  cpu over {} s wall × {} cores = {} core-s: machine busy {}",
            num(self.wall_s),
            self.cores,
            num(avail),
            self.machine_busy_s.map_or("?".into(), |b| format!(
                "{} core-s ({:.0}%)",
                num(b),
                100.0 * b / avail.max(1e-9)
            ))
        )];
        if let Some(n) = self.nekton_s {
            let top: Vec<String> = self
                .nekton_threads
                .iter()
                .filter(|(_, s)| *s >= 0.005)
                .take(5)
                .map(|(t, s)| format!("{t} {}", num(*s)))
                .collect();
            out.push(format!(
                "    {:<9} {} core-s{}  [threads: {}]{}",
                self.label,
                num(n),
                per_job(n),
                top.join(", "),
                self.nekton_rss_kib
                    .map_or(String::new(), |(rss, hwm)| format!(
                        "  RSS {} MiB (peak since start {} MiB)",
                        rss / 1024,
                        hwm / 1024
                    ))
            ));
        }
        if let Some(p) = self.postgres_s {
            let top: Vec<String> = self
                .descendants
                .iter()
                .filter(|(r, s)| r.starts_with("postgres") && *s >= 0.005)
                .take(5)
                .map(|(r, s)| format!("{} {}", r.trim_start_matches("postgres: "), num(*s)))
                .collect();
            out.push(format!(
                "    postgres  {} core-s{}  [{}]",
                num(p),
                per_job(p),
                top.join(", ")
            ));
        }
        if let Some(c) = self.children_s.filter(|c| *c > 0.0) {
            let top: Vec<String> = self
                .descendants
                .iter()
                .filter(|(r, s)| !r.starts_with("postgres") && *s >= 0.005)
                .take(5)
                .map(|(r, s)| format!("{r} {}", num(*s)))
                .collect();
            out.push(format!(
                "    children  {} core-s{}  [{}]",
                num(c),
                per_job(c),
                top.join(", ")
            ));
        }
        out.push(format!(
            "    load-tests {} core-s{}",
            num(self.load_tests_s),
            per_job(self.load_tests_s)
        ));
        if let Some(o) = self.others_s() {
            out.push(format!(
                "    other processes on the machine {} core-s",
                num(o)
            ));
        }
        out
    }

    pub fn json(&self, jobs: Option<u64>) -> Value {
        let pairs = |v: &[(String, f64)]| -> Value {
            v.iter()
                .map(|(k, s)| (k.clone(), json!(crate::stats::r3(*s))))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        json!({
            "wall_s": crate::stats::r3(self.wall_s),
            "cores": self.cores,
            "machine_busy_core_s": self.machine_busy_s.map(crate::stats::r3),
            "nekton_core_s": self.nekton_s.map(crate::stats::r3),
            "nekton_threads_core_s": pairs(&self.nekton_threads),
            "nekton_rss_kib": self.nekton_rss_kib.map(|m| m.0),
            "nekton_peak_rss_kib": self.nekton_rss_kib.map(|m| m.1),
            "postgres_core_s": self.postgres_s.map(crate::stats::r3),
            "server_label": self.label,
            "children_core_s": self.children_s.map(crate::stats::r3),
            "server_descendants_core_s": pairs(&self.descendants),
            "load_tests_core_s": crate::stats::r3(self.load_tests_s),
            "other_processes_core_s": self.others_s().map(crate::stats::r3),
            "jobs": jobs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines_with_odd_names() {
        let line = "42 (tokio (x) 1) S 7 42 42 0 -1 4194560 100 0 0 0 15 5 3 2 20 0 9 0 1 2 3";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "tokio (x) 1");
        assert_eq!(s.ppid, 7);
        assert_eq!(s.own, 20);
        assert_eq!(s.children, 5);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process_is_readable() {
        let s = read_stat(Path::new("/proc/self/stat")).unwrap();
        assert!(s.ppid > 0);
        let snap = snapshot(Some(std::process::id() as i32));
        let use_ = CpuUse::between(&snap, &snapshot(Some(std::process::id() as i32)));
        assert!(use_.nekton_s.is_some());
        assert!(!use_.lines(Some(1)).is_empty());
    }

    #[test]
    fn thread_names_fold_numbers() {
        assert_eq!(thread_group("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_group("worker-12"), "worker");
    }
}
