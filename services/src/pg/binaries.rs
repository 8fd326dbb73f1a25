//! Finding the machine's PostgreSQL server binaries (`initdb` and `postgres`).
//!
//! Search order: each directory on `PATH` (an `initdb` there is followed through symlinks so the
//! `postgres` of the same installation is used), then each library root such as
//! `/usr/lib/postgresql`, whose versioned `*/bin` directories are tried newest version first.
//! Both roots are arguments ([`BinarySearch`]) so tests can point the search at empty directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::PgError;

/// Where Debian and Ubuntu install versioned PostgreSQL servers.
pub const DEFAULT_LIB_ROOT: &str = "/usr/lib/postgresql";

/// Where to look for `initdb` and `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinarySearch {
    /// Directories searched first, in order (normally the entries of `PATH`).
    pub path_dirs: Vec<PathBuf>,
    /// Roots whose `<version>/bin` subdirectories are searched next, newest version first
    /// (normally just `/usr/lib/postgresql`).
    pub lib_roots: Vec<PathBuf>,
}

impl Default for BinarySearch {
    fn default() -> Self {
        Self::system()
    }
}

impl BinarySearch {
    /// The machine's search: the current `PATH`, then `/usr/lib/postgresql/*/bin`.
    pub fn system() -> Self {
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        BinarySearch {
            path_dirs,
            lib_roots: vec![PathBuf::from(DEFAULT_LIB_ROOT)],
        }
    }

    /// A search of exactly these directories and library roots.
    pub fn new(path_dirs: Vec<PathBuf>, lib_roots: Vec<PathBuf>) -> Self {
        BinarySearch {
            path_dirs,
            lib_roots,
        }
    }

    /// Finds the first installation that has both `initdb` and `postgres`, and its version.
    pub fn find(&self) -> Result<PgBinaries, PgError> {
        let found = self
            .path_dirs
            .iter()
            .filter(|d| d.is_absolute())
            .find_map(|d| from_path_dir(d))
            .or_else(|| {
                self.lib_roots
                    .iter()
                    .flat_map(|root| versioned_bin_dirs(root))
                    .find_map(|d| PgBinaries::in_dir(&d))
            });
        let Some((initdb, postgres)) = found.map(|b| (b.initdb, b.postgres)) else {
            return Err(PgError::BinariesNotFound {
                searched: self.describe(),
            });
        };
        let version = server_version(&postgres)?;
        Ok(PgBinaries {
            initdb,
            postgres,
            version,
        })
    }

    fn describe(&self) -> String {
        let path = if self.path_dirs.is_empty() {
            "PATH (empty)".to_string()
        } else {
            format!(
                "PATH ({})",
                std::env::join_paths(&self.path_dirs)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("{} directories", self.path_dirs.len()))
            )
        };
        let libs: Vec<String> = self
            .lib_roots
            .iter()
            .map(|r| format!("{}/*/bin", r.display()))
            .collect();
        if libs.is_empty() {
            path
        } else {
            format!("{path} and {}", libs.join(", "))
        }
    }
}

/// A usable PostgreSQL server installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The `initdb` binary.
    pub initdb: PathBuf,
    /// The `postgres` server binary, from the same installation as `initdb`.
    pub postgres: PathBuf,
    /// The server version, e.g. `15.20`.
    pub version: String,
}

impl PgBinaries {
    /// Both binaries in `dir`, if present and executable (version left empty).
    fn in_dir(dir: &Path) -> Option<PgBinaries> {
        let initdb = dir.join("initdb");
        let postgres = dir.join("postgres");
        (is_executable(&initdb) && is_executable(&postgres)).then(|| PgBinaries {
            initdb,
            postgres,
            version: String::new(),
        })
    }

    /// The major version (`15` for `15.20`), or 0 if it cannot be parsed.
    pub fn major_version(&self) -> u32 {
        leading_number(&self.version).unwrap_or(0)
    }
}

/// `initdb` in a `PATH` directory, with the `postgres` next to the file it resolves to (what
/// initdb itself would run), else the `postgres` in the same directory.
fn from_path_dir(dir: &Path) -> Option<PgBinaries> {
    let initdb = dir.join("initdb");
    if !is_executable(&initdb) {
        return None;
    }
    if let Ok(real) = std::fs::canonicalize(&initdb)
        && let Some(real_dir) = real.parent()
        && let Some(found) = PgBinaries::in_dir(real_dir)
    {
        return Some(found);
    }
    PgBinaries::in_dir(dir)
}

/// `root/<version>/bin` for every version directory under `root`, newest first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let key = name
                .split('.')
                .map(leading_number)
                .collect::<Option<Vec<u32>>>()?;
            Some((key, e.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, d)| d).collect()
}

fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `postgres --version` and returns the version number (`15.20`).
fn server_version(postgres: &Path) -> Result<String, PgError> {
    let output = Command::new(postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PgError::Version {
            binary: postgres.to_path_buf(),
            detail: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(PgError::Version {
            binary: postgres.to_path_buf(),
            detail: format!(
                "{}: {}{}",
                output.status,
                text.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    parse_version(&text).ok_or_else(|| PgError::Version {
        binary: postgres.to_path_buf(),
        detail: format!("unexpected output {:?}", text.trim()),
    })
}

/// `postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` → `15.20`.
fn parse_version(text: &str) -> Option<String> {
    let after = text
        .split_once("(PostgreSQL)")
        .map(|(_, rest)| rest)
        .unwrap_or(text);
    after
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n").as_deref(),
            Some("15.20")
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 17beta1").as_deref(),
            Some("17beta1")
        );
        assert_eq!(parse_version("nonsense"), None);
        assert_eq!(leading_number("17beta1"), Some(17));
    }

    #[test]
    fn versioned_dirs_sort_newest_first() {
        let root = tempfile::tempdir().expect("tempdir");
        for v in ["9.6", "15", "10", "16", "notaversion"] {
            std::fs::create_dir_all(root.path().join(v).join("bin")).expect("mkdir");
        }
        let dirs = versioned_bin_dirs(root.path());
        let names: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.parent()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["16", "15", "10", "9.6"]);
    }
}
