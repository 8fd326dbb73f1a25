//! The server under test: either one this process starts (`nekton serve` on a free 127.0.0.1 port
//! with a fresh state directory, stopped with SIGTERM and cleaned up afterwards), or an existing
//! one given by URL — which must be on 127.0.0.1.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Refuses any URL that does not point at 127.0.0.1 over http.
pub fn check_local_url(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url.trim()).with_context(|| {
        format!("--server {url:?} is not a URL (expected http://127.0.0.1:PORT)")
    })?;
    if parsed.scheme() != "http" || parsed.host_str() != Some("127.0.0.1") {
        bail!(
            "--server {url:?}: the load tests only talk to http://127.0.0.1:PORT (this machine's loopback)"
        );
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

/// The default `nekton` binary: the one next to this executable (same target directory).
pub fn default_nekton() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe
        .parent()
        .context("this executable's path has no directory")?;
    Ok(dir.join("nekton"))
}

/// A `nekton serve` this process started.
pub struct OwnServer {
    child: Child,
    pub pid: i32,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The temporary directory holding `state/` and `server.log`.
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// The command line, for the report.
    pub command: String,
    keep: bool,
}

impl OwnServer {
    /// Starts `nekton serve` and waits until `/readyz` answers 200.
    pub async fn start(
        nekton: &Path,
        database_url: Option<&str>,
        extra_args: &[String],
        keep: bool,
        ready_timeout: Duration,
    ) -> Result<Self> {
        if !nekton.is_file() {
            bail!(
                "no nekton binary at {}: build it (`cargo build --release -p nekton -p load-tests`) \
                 or pass --nekton PATH",
                nekton.display()
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .context("finding a free port on 127.0.0.1")?;
            l.local_addr()?.port()
        };
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let root = PathBuf::from(format!(
            "/tmp/nekton-load-{}-{}",
            std::process::id(),
            &tag[..8]
        ));
        let state_dir = root.join("state");
        for dir in [&root, &state_dir] {
            fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
            // PostgreSQL's own account must be able to reach its data directory below.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod 0755 {}", dir.display()))?;
        }
        let log_path = root.join("server.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let listen = format!("127.0.0.1:{port}");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            listen.clone(),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ];
        if let Some(url) = database_url {
            args.push("--database-url".into());
            args.push(url.into());
        }
        args.extend(extra_args.iter().cloned());
        let command = format!("{} {}", nekton.display(), args.join(" "));
        let child = Command::new(nekton)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file handle")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {command}"))?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .context("the server exited at once")?;
        let mut server = Self {
            child,
            pid,
            url: format!("http://{listen}"),
            root,
            state_dir,
            log_path,
            command,
            keep,
        };
        if let Err(e) = server.wait_ready(ready_timeout).await {
            let tail = server.log_tail(30);
            let _ = server.stop().await;
            return Err(e.context(format!("the server's log ends with:\n{tail}")));
        }
        Ok(server)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/readyz", self.url);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "`{}` exited with {status} before it was ready",
                    self.command
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "`{}` did not answer 200 on {url} within {timeout:?}",
                    self.command
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The admin token the server wrote to `<state-dir>/admin.token` (None with `--auth off`).
    pub fn admin_token(&self) -> Option<String> {
        std::fs::read_to_string(self.state_dir.join("admin.token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    /// The last `n` lines of the server's output.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, wait (up to 90 s: the server lets running jobs finish), then SIGKILL; removes the
    /// temporary directory unless asked to keep it. Returns the server's exit description.
    pub async fn stop(mut self) -> Result<String> {
        let status = match self.child.try_wait()? {
            Some(s) => s,
            None => {
                kill(Pid::from_raw(self.pid), Signal::SIGTERM)
                    .context("sending SIGTERM to the server")?;
                match tokio::time::timeout(Duration::from_secs(90), self.child.wait()).await {
                    Ok(s) => s?,
                    Err(_) => {
                        self.child.kill().await.context("killing the server")?;
                        self.child.wait().await?
                    }
                }
            }
        };
        let mut what = format!("server exited with {status}");
        if self.keep {
            what.push_str(&format!("; state and log kept in {}", self.root.display()));
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            what.push_str(&format!("; could not remove {}: {e}", self.root.display()));
        }
        Ok(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_servers_are_accepted() {
        assert_eq!(
            check_local_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "http://localhost:8080",
            "http://10.0.0.1:8080",
            "https://127.0.0.1:8080",
            "http://127.0.0.2",
            "nonsense",
        ] {
            assert!(check_local_url(bad).is_err(), "{bad}");
        }
    }
}
