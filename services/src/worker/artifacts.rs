//! Storing what a backend collected for a job's `artifacts` (docs/artifacts.md).
//!
//! [`store`] runs once per attempt, after the backend returned and before the attempt's
//! completion goes to the writer, so a client that sees the job finished can list its
//! artifacts. It hashes each file's stored bytes (SHA-256), gives a path that appears twice (a
//! test suite's build can collect a file under `cases/NAME/` too) to the first file only and
//! lists the others as skipped, and writes everything in one transaction fenced to the attempt
//! (`store::artifacts::insert`).
//!
//! A failure to store is an infrastructure failure: the caller ends the attempt
//! `internal_error` (retried while attempts remain, like any other), since finishing the job
//! without the files it asked for would look like success with nothing to show for it.

use std::collections::HashSet;

use runtime_core::ArtifactReport;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::StoreError;
use crate::store::artifacts::{self, Inserted, NewArtifact, NewSkipped};

/// What [`store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored: this many files and skipped entries.
    Stored { files: usize, skipped: usize },
    /// The job is no longer this worker's attempt: nothing was stored (and nothing else of
    /// the attempt will be).
    NotOurs,
}

/// The reason a second file with an already stored path is listed as skipped.
pub const DUPLICATE: &str =
    "another artifact of this attempt has the same path (only the first one is kept)";

/// Stores `report` as the artifacts of `job`'s `attempt`, fenced to `worker`.
pub async fn store(
    pool: &PgPool,
    job: Uuid,
    attempt: i32,
    worker: Uuid,
    report: &ArtifactReport,
) -> Result<Stored, StoreError> {
    let (files, skipped) = prepare(report);
    let n = (files.len(), skipped.len());
    match artifacts::insert(pool, job, attempt, worker, &files, &skipped).await? {
        Inserted::Stored => Ok(Stored::Stored {
            files: n.0,
            skipped: n.1,
        }),
        Inserted::NotOurs => Ok(Stored::NotOurs),
    }
}

/// The rows to insert: files with their digests, unique paths, and the skipped entries (a
/// repeated path's later files among them).
fn prepare(report: &ArtifactReport) -> (Vec<NewArtifact<'_>>, Vec<NewSkipped<'_>>) {
    let mut seen = HashSet::new();
    let mut files = Vec::with_capacity(report.files.len());
    let mut skipped: Vec<NewSkipped<'_>> = report
        .skipped
        .iter()
        .map(|s| NewSkipped {
            path: &s.path,
            reason: &s.reason,
        })
        .collect();
    for f in &report.files {
        if !seen.insert(f.path.as_str()) {
            skipped.push(NewSkipped {
                path: &f.path,
                reason: DUPLICATE,
            });
            continue;
        }
        files.push(NewArtifact {
            path: &f.path,
            size: f.size,
            data: &f.data,
            truncated: f.truncated,
            sha256: Sha256::digest(&f.data).into(),
            mode: f.mode,
        });
    }
    (files, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_core::{Artifact, SkippedArtifact};

    fn file(path: &str, data: &[u8]) -> Artifact {
        Artifact {
            path: path.into(),
            size: data.len() as u64,
            data: data.to_vec(),
            truncated: false,
            mode: 0o644,
        }
    }

    #[test]
    fn digests_are_of_the_stored_bytes_and_a_repeated_path_is_skipped() {
        let report = ArtifactReport {
            files: vec![
                file("cases/a/out.txt", b"build"),
                file("cases/a/out.txt", b"case"),
                file("b", b""),
            ],
            skipped: vec![SkippedArtifact {
                path: "link".into(),
                reason: "symlink (never followed)".into(),
            }],
        };
        let (files, skipped) = prepare(&report);
        assert_eq!(
            files.iter().map(|f| f.path).collect::<Vec<_>>(),
            ["cases/a/out.txt", "b"]
        );
        assert_eq!(files[0].data, b"build");
        assert_eq!(
            hex::encode(files[1].sha256),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].path, "link");
        assert_eq!(
            (skipped[1].path, skipped[1].reason),
            ("cases/a/out.txt", DUPLICATE)
        );
    }
}
