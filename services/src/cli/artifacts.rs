//! `nekton jobs artifacts ID [PATH] [-o DIR|FILE]`: a job's artifacts (docs/artifacts.md) —
//! listed as a table, one printed or saved, or all of them written below a directory.
//!
//! Writing below a directory never leaves it, whatever the paths the job chose: a leading `/`
//! is dropped, a path with a `..`, `.` or empty component is refused, and every directory and
//! file below DIR is opened relative to its parent's descriptor with `O_NOFOLLOW`, so a symlink
//! already in DIR is never followed (the file is refused instead). Each download is checked
//! against the SHA-256 the server sent.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::client::{ArtifactDownload, Client};
use crate::api::types::ArtifactList;

/// Runs the command; returns the exit code.
pub async fn run(
    client: &Client,
    id: Uuid,
    path: Option<String>,
    output: Option<PathBuf>,
) -> Result<i32> {
    match (path, output) {
        (Some(path), None) => {
            let download = client.artifact(id, &path).await?;
            let mut stdout = io::stdout().lock();
            match copy(download, &mut stdout, &path).await {
                Err(e) if super::commands::is_broken_pipe(&e) => Ok(0),
                r => r,
            }
        }
        (Some(path), Some(file)) => {
            let download = client.artifact(id, &path).await?;
            let mut out =
                File::create(&file).with_context(|| format!("cannot create {}", file.display()))?;
            let code = copy(download, &mut out, &path).await?;
            out.sync_all()
                .with_context(|| format!("writing {} failed", file.display()))?;
            Ok(code)
        }
        (None, None) => {
            let list = client.list_artifacts(id).await?;
            crate::out!("{}", table(&list))?;
            Ok(0)
        }
        (None, Some(dir)) => write_all(client, id, &dir).await,
    }
}

/// The listing as a table: `PATH SIZE SHA256 TRUNCATED`, then the skipped matches.
pub fn table(list: &ArtifactList) -> String {
    let rows: Vec<Vec<String>> = list
        .artifacts
        .iter()
        .map(|a| {
            vec![
                a.path.clone(),
                if a.truncated {
                    format!("{}/{}", a.stored_bytes, a.size)
                } else {
                    a.size.to_string()
                },
                a.sha256.clone(),
                if a.truncated { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    let mut out = render(&["PATH", "SIZE", "SHA256", "TRUNCATED"], &rows);
    if !list.skipped.is_empty() {
        let rows: Vec<Vec<String>> = list
            .skipped
            .iter()
            .map(|s| {
                vec![
                    if s.path.is_empty() { "-" } else { &s.path }.to_string(),
                    s.reason.clone(),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&render(&["SKIPPED", "REASON"], &rows));
    }
    out
}

/// Columns padded to their widest cell, two spaces apart.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let all = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    for row in all {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()) + 2,
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Copies a download into `out`, checking its length and SHA-256 against the headers. A file a
/// cap cut is written as stored (its first bytes) and said so on stderr; the exit code stays 0.
async fn copy(mut download: ArtifactDownload, out: &mut dyn Write, path: &str) -> Result<i32> {
    let mut hash = Sha256::new();
    let mut written = 0u64;
    while let Some(chunk) = download.body.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        written += chunk.len() as u64;
        out.write_all(&chunk)
            .with_context(|| format!("writing the artifact {path} failed"))?;
    }
    out.flush()
        .with_context(|| format!("writing the artifact {path} failed"))?;
    if let Some(length) = download.length
        && length != written
    {
        bail!("the artifact {path} arrived incomplete: {written} of {length} bytes");
    }
    let got = hex::encode(hash.finalize());
    if let Some(expected) = &download.sha256
        && *expected != got
    {
        bail!(
            "the artifact {path} arrived damaged: its SHA-256 is {got}, the server stored {expected}"
        );
    }
    if download.truncated {
        eprintln!(
            "nekton: artifact {path} was cut by the server's per-file or per-job cap: {written} of {} bytes",
            download
                .size
                .map_or_else(|| "more".to_string(), |s| s.to_string())
        );
    }
    Ok(0)
}

/// Where an artifact goes below the output directory: its path without a leading `/`, split
/// into components, refused when one is empty, `.` or `..`.
pub fn relative_components(path: &str) -> Result<Vec<&str>> {
    let rel = path.trim_start_matches('/');
    let parts: Vec<&str> = rel.split('/').collect();
    if rel.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        bail!("the artifact path {path:?} has an empty, `.` or `..` component; not writing it");
    }
    Ok(parts)
}

/// Writes every artifact below `dir` (created if missing). A file that cannot be written is
/// reported and the others still are; the exit code is then 1.
async fn write_all(client: &Client, id: Uuid, dir: &Path) -> Result<i32> {
    let list = client.list_artifacts(id).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let root: OwnedFd = File::open(dir)
        .with_context(|| format!("cannot open {}", dir.display()))?
        .into();
    let mut failed = 0usize;
    let mut written = 0usize;
    for a in &list.artifacts {
        let result = async {
            let parts = relative_components(&a.path)?;
            let mut file = create_beneath(&root, &parts, a.mode)?;
            let download = client.artifact(id, &a.path).await?;
            copy(download, &mut file, &a.path).await?;
            file.sync_all()
                .with_context(|| format!("writing {} failed", a.path))?;
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => written += 1,
            Err(e) => {
                failed += 1;
                eprintln!("nekton: {e:#}");
            }
        }
    }
    eprintln!(
        "nekton: wrote {written} artifact(s) of job {id} (attempt {}) below {}{}",
        list.attempt,
        dir.display(),
        if list.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; {} match(es) were not collected (`nekton jobs artifacts {id}` lists why)",
                list.skipped.len()
            )
        }
    );
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Creates (or truncates) the file `parts` below `root`, making the directories on the way;
/// never follows a symlink below `root`.
fn create_beneath(root: &OwnedFd, parts: &[&str], mode: u32) -> Result<File> {
    let shown = parts.join("/");
    let (name, dirs) = parts
        .split_last()
        .ok_or_else(|| anyhow!("an empty artifact path"))?;
    let mut at: Option<OwnedFd> = None;
    for d in dirs {
        let parent = at.as_ref().unwrap_or(root).as_fd();
        match mkdirat(parent, *d, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => bail!("cannot create the directory {d} for {shown}: {e}"),
        }
        let next = openat(
            parent,
            *d,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => anyhow!(
                "not writing {shown}: {d} is a symlink or not a directory in the output directory"
            ),
            e => anyhow!("cannot open the directory {d} for {shown}: {e}"),
        })?;
        at = Some(next);
    }
    let parent = at.as_ref().unwrap_or(root).as_fd();
    let fd = openat(
        parent,
        *name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode & 0o777),
    )
    .map_err(|e| match e {
        Errno::ELOOP => {
            anyhow!("not writing {shown}: it is a symlink in the output directory")
        }
        e => anyhow!("cannot create {shown}: {e}"),
    })?;
    Ok(File::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_directory() {
        assert_eq!(relative_components("a/b.txt").unwrap(), ["a", "b.txt"]);
        assert_eq!(relative_components("/tmp/x").unwrap(), ["tmp", "x"]);
        for bad in ["", "/", "a/../b", "..", "a//b", "./a", "a/"] {
            assert!(relative_components(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_symlink_in_the_directory_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join("f")).unwrap();
        let root: OwnedFd = File::open(dir.path()).unwrap().into();
        let e = create_beneath(&root, &["sub", "x"], 0o644).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        let e = create_beneath(&root, &["f"], 0o644).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let mut f = create_beneath(&root, &["new", "deep", "y"], 0o600).unwrap();
        f.write_all(b"ok").unwrap();
        assert_eq!(std::fs::read(dir.path().join("new/deep/y")).unwrap(), b"ok");
    }
}
