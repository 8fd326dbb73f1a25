//! Tokens saved by `nekton login`, per server: `$XDG_CONFIG_HOME/nekton/credentials.json`
//! (default `~/.config/nekton/credentials.json`), a JSON object from server URL to token, mode
//! 0600 (written to a temporary file and renamed, so a reader never sees half a file).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, Result};

/// Where saved tokens live (`None`: no home directory to keep them in).
pub fn path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("nekton/credentials.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config/nekton/credentials.json"))
}

/// The key a server is saved under: its URL without a trailing slash.
fn key(server: &str) -> String {
    server.trim().trim_end_matches('/').to_string()
}

fn read_all() -> BTreeMap<String, String> {
    path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The token saved for `server`, if any.
pub fn load(server: &str) -> Option<String> {
    read_all().remove(&key(server))
}

/// Saves (or, with `None`, forgets) the token for `server`. Returns the file's path.
pub fn store(server: &str, token: Option<&str>) -> Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = path().context(
        "no HOME or XDG_CONFIG_HOME to keep the token in; pass --token or set NEKTON_TOKEN instead",
    )?;
    let mut all = read_all();
    match token {
        Some(t) => {
            all.insert(key(server), t.to_string());
        }
        None => {
            all.remove(&key(server));
        }
    }
    let dir = path
        .parent()
        .context("the credentials path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".credentials.json.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(&all)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
