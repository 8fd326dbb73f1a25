//! Owner identity for crash cleanup: "is the process that left this behind still running?"
//!
//! Every crash-cleanup path of nekton (container job directories and cgroups, bridge-network
//! address leases, image-store temp entries, the embedded PostgreSQL's lock files, the Wasm
//! backend's job-directory pools) asks the same
//! question about a leftover. A pid alone cannot answer it: pids are recycled (a restarted worker
//! in a container is often pid 1 again, and a busy host wraps `pid_max`), so `kill(pid, 0)` says
//! "alive" for a leftover whose owner died long ago. An [`Owner`] is a pid *and* that process's
//! start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot), which together name one
//! process for the life of the machine: a recycled pid has a later start time.
//!
//! Rules:
//! - [`Owner::is_alive`] is true only when `<proc>/<pid>/stat` exists, its start time equals the
//!   recorded one and the process is not a zombie (state `Z`/`X`: it ran its last instruction and
//!   only waits to be reaped, so it holds no work in progress).
//! - The stat line is parsed after the *last* `)`: the command name (field 2) is chosen by the
//!   program, may contain spaces, parentheses and digits, and must never shift the fields.
//! - The text form is `<pid>.<start time>` (decimal, no sign, no padding): [`Display`] and
//!   [`FromStr`] round-trip, and [`Owner::parse_prefix`] reads it at the start of a name such as
//!   a job directory `<pid>.<start>.<seq>-<job>` or a temp entry `<pid>.<start>.<n>.<what>`.
//! - The proc root is an argument (the `*_in` functions) so tests can use fixture trees; the
//!   plain functions use [`PROC_ROOT`]. If `/proc` is not mounted, [`Owner::current`] fails (with
//!   an error that says so) rather than letting every other owner look dead.
//!
//! [`Display`]: std::fmt::Display
//! [`FromStr`]: std::str::FromStr

use std::fmt;
use std::io;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// Where the kernel's process information is mounted.
pub const PROC_ROOT: &str = "/proc";

/// One process, for the life of the machine: its pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pid: u32,
    start_time: u64,
}

/// What `/proc/<pid>/stat` says about a process (the fields [`Owner`] needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z`, `X`, ...
    pub state: char,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Parses one `/proc/<pid>/stat` line. The command name is taken as everything between the
    /// first `(` and the last `)`, so names like `a) (b 1 2` cannot shift the fields after it.
    pub fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.rsplit_once(')')?;
        let mut fields = rest.split_ascii_whitespace();
        let state_field = fields.next()?;
        let mut chars = state_field.chars();
        let state = chars.next()?;
        if chars.next().is_some() {
            return None;
        }
        // `rest` starts at field 3 (the state): field 22 is 19 further on.
        let start = fields.nth(18)?;
        Some(Self {
            state,
            start_time: parse_decimal(start)?,
        })
    }

    /// Whether the process has exited and only waits to be reaped (or is being torn down).
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Error of [`Owner::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an owner identity (expected `<pid>.<start time>`, two decimal numbers, pid > 0)"
)]
pub struct ParseOwnerError(String);

fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    // `u64::from_str` accepts a leading `+`; the text form has digits only.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn read_stat(proc_root: &Path, pid: u32) -> io::Result<String> {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
}

impl Owner {
    /// An identity as recorded earlier (no check that it is alive).
    pub fn new(pid: u32, start_time: u64) -> Self {
        Self { pid, start_time }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub fn start_time(&self) -> u64 {
        self.start_time
    }

    /// This process. Fails when `/proc` is not mounted (then no owner can be checked at all).
    pub fn current() -> io::Result<Self> {
        Self::current_in(Path::new(PROC_ROOT))
    }

    /// This process, reading `<proc_root>/<pid>/stat`.
    pub fn current_in(proc_root: &Path) -> io::Result<Self> {
        let pid = std::process::id();
        let stat = read_stat(proc_root, pid).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot read {}/{pid}/stat ({e}): mount procfs at {} (it tells live owners of \
                     leftovers from dead ones)",
                    proc_root.display(),
                    proc_root.display()
                ),
            )
        })?;
        let parsed = ProcStat::parse(&stat).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}/{pid}/stat has no start time field: is procfs mounted there?",
                    proc_root.display()
                ),
            )
        })?;
        Ok(Self::new(pid, parsed.start_time))
    }

    /// The identity of the running process `pid`: `None` when there is none, or it is a zombie.
    pub fn of(pid: u32) -> Option<Self> {
        Self::of_in(Path::new(PROC_ROOT), pid)
    }

    /// [`of`](Self::of) reading `<proc_root>/<pid>/stat`.
    pub fn of_in(proc_root: &Path, pid: u32) -> Option<Self> {
        if pid == 0 {
            return None;
        }
        let stat = ProcStat::parse(&read_stat(proc_root, pid).ok()?)?;
        (!stat.is_zombie()).then_some(Self::new(pid, stat.start_time))
    }

    /// Whether this very process still runs: its pid exists, is not a zombie, and started at the
    /// recorded time (a recycled pid has another start time).
    pub fn is_alive(&self) -> bool {
        self.is_alive_in(Path::new(PROC_ROOT))
    }

    /// [`is_alive`](Self::is_alive) reading `<proc_root>/<pid>/stat`.
    pub fn is_alive_in(&self, proc_root: &Path) -> bool {
        Self::of_in(proc_root, self.pid) == Some(*self)
    }

    /// Reads `<pid>.<start>` at the start of `name`, followed by the end or a `.`; returns the
    /// owner and what follows the dot (empty at the end). `None` when `name` does not start
    /// with an owner identity.
    pub fn parse_prefix(name: &str) -> Option<(Self, &str)> {
        let mut parts = name.splitn(3, '.');
        let pid = parts.next()?;
        let start = parts.next()?;
        let rest = parts.next().unwrap_or("");
        let owner = format!("{pid}.{start}").parse().ok()?;
        Some((owner, rest))
    }

    /// When this process started, as wall-clock time: the boot time (`btime` in
    /// `<proc_root>/stat`, whole seconds) plus the start time in clock ticks. Accurate to about
    /// a second (the boot time is truncated); for comparing with timestamps that other programs
    /// wrote before nekton recorded owners this way.
    pub fn started_at_in(&self, proc_root: &Path) -> io::Result<SystemTime> {
        let path = proc_root.join("stat");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?;
        let btime: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| parse_decimal(v.trim()))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} has no `btime` line", path.display()),
                )
            })?;
        let ticks = clock_ticks_per_second();
        let since_boot = Duration::from_secs(self.start_time / ticks)
            + Duration::from_nanos((self.start_time % ticks) * 1_000_000_000 / ticks);
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(btime) + since_boot)
    }

    /// [`started_at_in`](Self::started_at_in) with [`PROC_ROOT`].
    pub fn started_at(&self) -> io::Result<SystemTime> {
        self.started_at_in(Path::new(PROC_ROOT))
    }
}

/// `sysconf(_SC_CLK_TCK)`, the unit of the start time (100 on every Linux ABI; that is also the
/// fallback if the call fails).
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name, touches no caller memory and is thread-safe.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.pid, self.start_time)
    }
}

impl FromStr for Owner {
    type Err = ParseOwnerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseOwnerError(s.chars().take(64).collect());
        let (pid, start) = s.split_once('.').ok_or_else(err)?;
        let pid: u32 = parse_decimal(pid).ok_or_else(err)?;
        let start = parse_decimal(start).ok_or_else(err)?;
        if pid == 0 {
            return Err(err());
        }
        Ok(Self::new(pid, start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as the kernel writes it, with `comm` as the command name.
    fn stat_line(pid: u32, comm: &str, state: char, start: u64) -> String {
        // Fields 4..=21 (18 of them), then 22 = start time, then a few more.
        let middle: Vec<String> = (4..=21).map(|i| i.to_string()).collect();
        format!(
            "{pid} ({comm}) {state} {} {start} 8192 2 18446744073709551615 0 0 0\n",
            middle.join(" ")
        )
    }

    fn fixture(entries: &[(u32, &str, char, u64)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for (pid, comm, state, start) in entries {
            let dir = root.path().join(pid.to_string());
            std::fs::create_dir(&dir).expect("mkdir");
            std::fs::write(dir.join("stat"), stat_line(*pid, comm, *state, *start))
                .expect("write stat");
        }
        std::fs::write(
            root.path().join("stat"),
            "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n",
        )
        .expect("write stat");
        root
    }

    #[test]
    fn this_process_is_alive_and_round_trips() {
        let me = Owner::current().expect("current");
        assert_eq!(me.pid(), std::process::id());
        assert!(me.is_alive());
        assert_eq!(Owner::of(me.pid()), Some(me));
        let text = me.to_string();
        assert_eq!(text, format!("{}.{}", me.pid(), me.start_time()));
        assert_eq!(text.parse::<Owner>(), Ok(me));
        let started = me.started_at().expect("started_at");
        let now = SystemTime::now();
        assert!(
            started <= now + Duration::from_secs(2),
            "{started:?} vs {now:?}"
        );
        assert!(
            now.duration_since(started).expect("started before now") < Duration::from_secs(3600),
            "a test process started within the hour"
        );
    }

    #[test]
    fn a_reaped_child_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep (coreutils)");
        let owner = Owner::of(child.id()).expect("the child runs");
        assert!(owner.is_alive());
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert!(!owner.is_alive(), "{owner} was reaped");
        assert_eq!(Owner::of(owner.pid()).filter(|o| *o == owner), None);
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true (coreutils)");
        let pid = child.id();
        // Not reaped yet: once it exits it is a zombie, which holds no work.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            if ProcStat::parse(&stat).expect("parse").is_zombie() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(Owner::of(pid), None);
        child.wait().expect("reap");
    }

    #[test]
    fn a_live_pid_with_another_start_time_is_a_recycled_pid() {
        let me = Owner::current().expect("current");
        assert!(!Owner::new(me.pid(), me.start_time() + 1).is_alive());
        assert!(!Owner::new(me.pid(), me.start_time().wrapping_sub(1)).is_alive());
        assert!(!Owner::new(0, me.start_time()).is_alive());
    }

    #[test]
    fn odd_command_names_do_not_shift_the_fields() {
        let odd = [
            (10, "a b", 'S', 111),
            (11, "x) (y", 'R', 222),
            (
                12,
                ") 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
                'S',
                333,
            ),
            (13, "((", 'D', 444),
            (14, "", 'S', 555),
            (15, "zomb) Z 1", 'Z', 666),
        ];
        let root = fixture(&odd);
        let p = root.path();
        for (pid, comm, _, start) in &odd[..5] {
            assert_eq!(
                Owner::of_in(p, *pid),
                Some(Owner::new(*pid, *start)),
                "comm {comm:?}"
            );
            assert!(Owner::new(*pid, *start).is_alive_in(p));
            assert!(!Owner::new(*pid, start + 1).is_alive_in(p));
        }
        // A zombie, even one whose name looks like a running process.
        assert_eq!(Owner::of_in(p, 15), None);
        assert!(!Owner::new(15, 666).is_alive_in(p));
        // No such pid.
        assert_eq!(Owner::of_in(p, 16), None);
        // Boot time + ticks (100 per second on Linux).
        let started = Owner::new(10, 250).started_at_in(p).expect("started_at");
        assert_eq!(
            started,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_002_500)
        );
    }

    #[test]
    fn malformed_stat_lines_are_not_owners() {
        for bad in [
            "",
            "17 (no closing paren S 1 2 3",
            "17 (short) S 1 2 3",
            "17 (x) S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 -5 0",
            "17 (x) S 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 +5 0",
            "17 (x) SS 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 5 0",
        ] {
            assert_eq!(ProcStat::parse(bad), None, "{bad:?}");
        }
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("17")).expect("mkdir");
        std::fs::write(root.path().join("17/stat"), "17 (x) S 1").expect("write");
        assert_eq!(Owner::of_in(root.path(), 17), None);
        assert!(Owner::current_in(root.path()).is_err());
        assert!(Owner::new(1, 1).started_at_in(root.path()).is_err());
    }

    #[test]
    fn text_form() {
        assert_eq!("42.7".parse::<Owner>(), Ok(Owner::new(42, 7)));
        assert_eq!(Owner::new(42, 7).to_string(), "42.7");
        for bad in [
            "", "42", "42.", ".7", "0.7", "+42.7", "42.+7", "42.7.1", "a.7", "42 7",
        ] {
            assert!(bad.parse::<Owner>().is_err(), "{bad:?}");
        }
        assert_eq!(
            Owner::parse_prefix("42.7.3-job"),
            Some((Owner::new(42, 7), "3-job"))
        );
        assert_eq!(Owner::parse_prefix("42.7"), Some((Owner::new(42, 7), "")));
        assert_eq!(Owner::parse_prefix("42.1a.3.layer"), None);
        assert_eq!(Owner::parse_prefix("junk"), None);
    }
}
