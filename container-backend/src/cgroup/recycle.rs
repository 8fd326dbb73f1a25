//! Recycled job cgroups (v1): an emptied job cgroup, reset, is kept for a later job of the same
//! backend instead of one `mkdir` per hierarchy before each job and one `rmdir` after it.
//!
//! Why: on a v1 (or hybrid) host a job cgroup is four or five directories, and the memory one is
//! the costly part — the kernel allocates a memory cgroup with per-CPU state (≈ 0.1 ms here) and,
//! after `rmdir`, keeps it as a "dying" memory cgroup until the page cache charged to it is
//! reclaimed, so a busy worker leaves thousands of them behind. A kept directory costs a rename
//! per hierarchy on the job's path (≈ 7 µs each) and its reset in the background after the job.
//!
//! What is reset between two jobs, and why it is enough:
//! - **Processes**: none. A cgroup is kept only once it has no process (what was left is killed
//!   first, as before a removal) and its freezer is thawed.
//! - **Limits**: every limit is written again for the next job (`JobCgroup::apply`); the v1 CPU
//!   quota is a backend setting, the same for every job of the pool.
//! - **The bill**: `cpuacct.usage` is written 0 (this zeroes the user/system split too), the
//!   page cache still charged to the cgroup is reclaimed (`memory.force_empty`), then the memory
//!   high-water mark is reset to what is left (`memory.max_usage_in_bytes`: a few KiB of kernel
//!   objects at most, which the next job's peak includes). A cgroup whose job was OOM-killed is
//!   removed, not kept (`memory.oom_control` counts kills for the cgroup's whole life).
//! - **pids**: not kept. `pids.peak` and the `max` count in `pids.events` cannot be reset, so the
//!   pids directory is made per job, as before (≈ 20 µs); if the pids controller shares its
//!   hierarchy with another one, nothing is recycled.
//!
//! Names: a job's cgroup is renamed to the job's name when taken (`<owner>.<seq>-<job id>`, so
//! an operator sees which job it holds) and to `<owner>.<seq>-recycled` when kept; the
//! stale-cgroup cleanup at start removes a dead owner's kept cgroups like its job cgroups. The
//! pool is bounded (`ContainerConfig::recycled_cgroups`); the kept cgroups are removed when the
//! backend is dropped.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::{JobCgroup, Kind};

/// The kept cgroups of one backend.
#[derive(Debug)]
pub(crate) struct Recycler {
    /// The `nekton-jobs` directories whose job directories are kept (every hierarchy but
    /// pids), without duplicates (co-mounted controllers share one).
    parents: Vec<PathBuf>,
    /// The pids hierarchy's `nekton-jobs` (its job directory is made and removed per job).
    pids_parent: Option<PathBuf>,
    /// Names of the kept cgroups, ready for a job.
    idle: Mutex<Vec<String>>,
    cap: usize,
}

impl Recycler {
    /// A pool over these parents (`kind`, `nekton-jobs` directory), or `None` when there is
    /// nothing to keep (`cap` 0, or the pids controller shares a hierarchy with another).
    pub fn new(parents: &[(Kind, PathBuf)], cap: usize) -> Option<Self> {
        if cap == 0 {
            return None;
        }
        let pids_parent = parents
            .iter()
            .find(|(k, _)| *k == Kind::Pids)
            .map(|(_, d)| d.clone());
        let mut kept: Vec<PathBuf> = Vec::new();
        for (kind, dir) in parents {
            if *kind == Kind::Pids {
                continue;
            }
            if pids_parent.as_ref() == Some(dir) {
                return None;
            }
            if !kept.contains(dir) {
                kept.push(dir.clone());
            }
        }
        (!kept.is_empty()).then(|| Self {
            parents: kept,
            pids_parent,
            idle: Mutex::new(Vec::new()),
            cap,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many cgroups are kept now.
    pub fn kept(&self) -> usize {
        self.idle().len()
    }

    /// Turns a kept cgroup into the job cgroup `name` (renames, and the pids directory), if
    /// one is kept. `Ok(false)`: none was; `Err`: one was but could not be used (it is removed).
    pub fn take(&self, name: &str) -> Result<bool, String> {
        let Some(idle) = self.idle().pop() else {
            return Ok(false);
        };
        let mut done: Vec<&Path> = Vec::new();
        let mut result = Ok(true);
        for parent in &self.parents {
            if let Err(e) = std::fs::rename(parent.join(&idle), parent.join(name)) {
                result = Err(format!(
                    "renaming the kept cgroup {} to {name}: {e}",
                    parent.join(&idle).display()
                ));
                break;
            }
            done.push(parent);
        }
        if result.is_ok()
            && let Some(p) = &self.pids_parent
            && let Err(e) = std::fs::create_dir(p.join(name))
        {
            result = Err(format!("creating {}: {e}", p.join(name).display()));
        }
        if result.is_err() {
            for parent in &self.parents {
                let _ = std::fs::remove_dir(parent.join(&idle));
                if done.contains(&parent.as_path()) {
                    let _ = std::fs::remove_dir(parent.join(name));
                }
            }
        }
        result
    }

    /// After the job (every process gone, the bill read): empties `job` (killing what is
    /// left), resets it and keeps it as `idle`, or removes it when it cannot be kept (OOM kill,
    /// a reset that failed, the pool full). Blocking: runs on the blocking pool.
    pub fn recycle_blocking(&self, job: &JobCgroup, idle: &str) -> Result<(), String> {
        job.empty_blocking()?;
        let keep = self.kept() < self.cap && job.oom_kills() == 0;
        if !keep {
            return job.remove_blocking();
        }
        // The pids directory goes (its peak cannot be reset); the rest is reset and kept.
        if let Some(p) = &self.pids_parent {
            remove_dir_retrying(&p.join(&job.name))?;
        }
        if let Err(e) = self.reset(&job.name) {
            tracing::debug!(cgroup = %job.name, error = %e, "a job cgroup is removed, not kept");
            return job.remove_blocking();
        }
        let mut done: Vec<&Path> = Vec::new();
        for parent in &self.parents {
            if let Err(e) = std::fs::rename(parent.join(&job.name), parent.join(idle)) {
                for d in &done {
                    let _ = std::fs::remove_dir(d.join(idle));
                }
                let _ = job.remove_blocking();
                return Err(format!(
                    "renaming {} to {idle} to keep it: {e}",
                    parent.join(&job.name).display()
                ));
            }
            done.push(parent);
        }
        let mut kept = self.idle();
        if kept.len() < self.cap {
            kept.push(idle.to_string());
            return Ok(());
        }
        drop(kept);
        for parent in &self.parents {
            remove_dir_retrying(&parent.join(idle))?;
        }
        Ok(())
    }

    /// Zeroes the bill of the job cgroup `name` (every process gone) and checks it is thawed.
    fn reset(&self, name: &str) -> Result<(), String> {
        let write = |file: &Path, value: &str| {
            std::fs::write(file, value).map_err(|e| format!("writing {}: {e}", file.display()))
        };
        for parent in &self.parents {
            let dir = parent.join(name);
            let usage = dir.join("cpuacct.usage");
            if usage.exists() {
                write(&usage, "0")?;
                let left = std::fs::read_to_string(&usage).unwrap_or_default();
                if left.trim() != "0" {
                    return Err(format!("{} still reads {left:?}", usage.display()));
                }
            }
            if dir.join("memory.max_usage_in_bytes").exists() {
                write(&dir.join("memory.force_empty"), "1")?;
                write(&dir.join("memory.max_usage_in_bytes"), "0")?;
                let memsw = dir.join("memory.memsw.max_usage_in_bytes");
                if memsw.exists() {
                    write(&memsw, "0")?;
                }
            }
            let freezer = dir.join("freezer.state");
            if freezer.exists() {
                let state = std::fs::read_to_string(&freezer).unwrap_or_default();
                if state.trim() != "THAWED" {
                    return Err(format!("{} reads {state:?}", freezer.display()));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Recycler {
    fn drop(&mut self) {
        for name in self
            .idle
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            for parent in &self.parents {
                if let Err(e) = std::fs::remove_dir(parent.join(&name)) {
                    tracing::warn!(cgroup = %parent.join(&name).display(), error = %e,
                        "cannot remove a kept job cgroup");
                }
            }
        }
    }
}

/// `rmdir` of an empty cgroup directory, retried for a while: right after its last process
/// exits the kernel may still hold it busy.
pub(super) fn remove_dir_retrying(dir: &Path) -> Result<(), String> {
    let mut delay = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if waited > Duration::from_secs(5) => {
                return Err(format!("removing {}: {e}", dir.display()));
            }
            Err(_) => {}
        }
        std::thread::sleep(delay);
        waited += delay;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}
