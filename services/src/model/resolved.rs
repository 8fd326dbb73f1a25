//! [`ResolvedJob`]: what a worker needs to run a job, already validated and resolved against the
//! operator's limits by the API, and its storage format in `job_specs.spec`.
//!
//! Storage is versioned: version 1 is `{"v": 1, "program": {...}, ...}` (byte fields as standard
//! base64). Rows written before versioning hold the API's wire `JobSpec` after resolution (no
//! `"v"` key); [`ResolvedJob::from_stored`] still reads them through a frozen copy of that shape
//! ([`legacy`]), so a worker of this version runs jobs queued by the previous one. A version this
//! worker does not know is a `spec_error` naming it (upgrade the worker).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{NetworkMode, RuntimeKind};

/// The storage version [`ResolvedJob::to_stored`] writes.
pub const STORAGE_VERSION: u64 = 1;

/// Why a stored spec cannot be run (the job ends `spec_error` with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// The code a job runs, as submitted (an image is pulled and classified by the worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProgramRef {
    /// An uploaded Wasm module, `sha256:<hex>`.
    Module { digest: String },
    /// A normalised OCI image reference.
    Image { reference: String },
}

impl ProgramRef {
    /// The module digest or image reference (the job record's `program`).
    pub fn name(&self) -> &str {
        match self {
            Self::Module { digest } => digest,
            Self::Image { reference } => reference,
        }
    }
}

/// Limits after the operator's defaults and maxima were applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedLimits {
    pub wall_time_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<u64>,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    pub output_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl ResolvedLimits {
    /// The backend's limits.
    pub fn to_runtime(&self) -> runtime_core::Limits {
        runtime_core::Limits {
            wall_time: Duration::from_millis(self.wall_time_ms),
            cpu_time: self.cpu_time_ms.map(Duration::from_millis),
            memory_bytes: self.memory_bytes,
            fuel: self.fuel,
            output_bytes: self.output_bytes,
            pids: self.pids,
            disk_bytes: self.disk_bytes,
        }
    }
}

/// An input file, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedFile {
    pub path: String,
    #[serde(with = "b64")]
    pub content: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

impl ResolvedFile {
    /// The backend's input file.
    pub fn to_runtime(&self) -> runtime_core::InputFile {
        self.clone().into()
    }
}

impl From<ResolvedFile> for runtime_core::InputFile {
    fn from(f: ResolvedFile) -> Self {
        runtime_core::InputFile {
            path: f.path,
            content: f.content,
            mode: f.mode,
        }
    }
}

/// What a worker needs to run a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedJob {
    pub program: ProgramRef,
    pub runtime: RuntimeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub stdin: Vec<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ResolvedFile>,
    pub limits: ResolvedLimits,
    #[serde(default)]
    pub network: NetworkMode,
    /// Bridge jobs: the egress allow-list (`network.allow`), stored as its canonical strings
    /// (`198.51.100.2/32:8000`). Absent: the host's bridge rules alone — and in every row written
    /// before it existed. A worker that does not know the field refuses the row
    /// (`deny_unknown_fields`): a job is never run without the policy it asked for.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "egress_list")]
    pub network_allow: Option<Vec<runtime_core::egress::Destination>>,
    /// Wasm jobs: the guest's preopens (`wasm.preopens`). Absent: the default layout — and in
    /// every row written before it existed; an older worker refuses a row that has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_preopens: Option<Vec<ResolvedPreopen>>,
    /// A test suite: build once, then run and judge every case (see [`crate::grading`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<crate::grading::ResolvedSuite>,
    /// Files to collect after the run (added after v1 was released: absent in older rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ResolvedArtifacts>,
}

/// One of a Wasm job's preopens, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedPreopen {
    pub guest: String,
    /// Below the job's directory; empty: the directory itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dir: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl From<ResolvedPreopen> for runtime_core::Preopen {
    fn from(p: ResolvedPreopen) -> Self {
        Self {
            guest: p.guest,
            dir: p.dir,
            read_only: p.read_only,
        }
    }
}

/// The job's artifact patterns with the operator's caps at submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedArtifacts {
    pub patterns: Vec<String>,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_files: u64,
}

impl ResolvedArtifacts {
    /// `patterns` (validated) with `policy`'s caps.
    pub fn new(patterns: Vec<String>, policy: &crate::config::LimitPolicy) -> Self {
        Self {
            patterns,
            max_file_bytes: policy.artifact_file_bytes,
            max_total_bytes: policy.artifact_total_bytes,
            max_files: policy.artifact_files,
        }
    }

    /// The backend's request.
    pub fn to_runtime(&self) -> runtime_core::Artifacts {
        runtime_core::Artifacts {
            patterns: self.patterns.clone(),
            max_file_bytes: self.max_file_bytes,
            max_total_bytes: self.max_total_bytes,
            max_files: usize::try_from(self.max_files).unwrap_or(usize::MAX),
        }
    }
}

impl ResolvedJob {
    /// The JSON stored in `job_specs.spec`.
    pub fn to_stored(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(map) = value.as_object_mut() {
            map.insert("v".into(), STORAGE_VERSION.into());
        }
        value
    }

    /// Reads a stored spec of any known version.
    pub fn from_stored(value: &serde_json::Value) -> Result<Self, SpecError> {
        let Some(map) = value.as_object() else {
            return Err(SpecError("stored job spec is not a JSON object".into()));
        };
        match map.get("v") {
            None => legacy::read(value),
            Some(v) if v.as_u64() == Some(STORAGE_VERSION) => {
                // Read from the stored map in place, every key but "v": no copy of the spec is made
                // (this runs for every job a worker claims).
                let fields = map
                    .iter()
                    .filter(|(k, _)| k.as_str() != "v")
                    .map(|(k, v)| (k.as_str(), v));
                let de = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields);
                Self::deserialize(de)
                    .map_err(|e| SpecError(format!("stored job spec (v1) is malformed: {e}")))
            }
            Some(v) => Err(SpecError(format!(
                "stored job spec has version {v}; this worker reads versions up to {STORAGE_VERSION} \
                 (run a worker as new as the API that queued the job)"
            ))),
        }
    }
}

/// Optional byte fields as standard base64 strings.
pub(crate) mod b64_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::b64::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::b64")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

/// Byte fields as standard base64 strings.
pub(crate) mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The unversioned format: the API's resolved wire `JobSpec` as JSON, as every row written before
/// storage version 1 holds it. Frozen here so that the API's wire type can evolve.
mod legacy {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::{ProgramRef, ResolvedFile, ResolvedJob, ResolvedLimits, SpecError};
    use crate::model::{Encoding, NetworkMode, RuntimeKind, decode};

    #[derive(Deserialize)]
    struct File {
        path: String,
        content: String,
        #[serde(default)]
        encoding: Option<Encoding>,
        #[serde(default)]
        mode: Option<u32>,
    }

    #[derive(Deserialize, Default)]
    struct Limits {
        wall_time_ms: Option<u64>,
        cpu_time_ms: Option<u64>,
        memory_bytes: Option<u64>,
        fuel: Option<u64>,
        output_bytes: Option<u64>,
        pids: Option<u64>,
        disk_bytes: Option<u64>,
    }

    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        module: Option<String>,
        #[serde(default)]
        image: Option<String>,
        #[serde(default)]
        runtime: Option<RuntimeKind>,
        #[serde(default)]
        entrypoint: Option<Vec<String>>,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        workdir: Option<String>,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        stdin: Option<String>,
        #[serde(default)]
        stdin_encoding: Option<Encoding>,
        #[serde(default)]
        files: Vec<File>,
        #[serde(default)]
        limits: Option<Limits>,
        #[serde(default)]
        network: Option<NetworkMode>,
        // `labels`, `max_attempts`, `priority` and `queue` live in their own columns.
    }

    pub(super) fn read(value: &serde_json::Value) -> Result<ResolvedJob, SpecError> {
        let err = |m: String| SpecError(m);
        let spec = Spec::deserialize(value)
            .map_err(|e| err(format!("stored job spec is malformed: {e}")))?;
        let program = match (spec.module, spec.image) {
            (Some(digest), None) => ProgramRef::Module { digest },
            (None, Some(reference)) => ProgramRef::Image { reference },
            _ => {
                return Err(err(
                    "stored job spec names neither exactly one module nor one image".into(),
                ));
            }
        };
        let limits = spec.limits.unwrap_or_default();
        let stdin = match &spec.stdin {
            Some(s) => decode(s, spec.stdin_encoding).map_err(|e| err(format!("stdin: {e}")))?,
            None => Vec::new(),
        };
        let files = spec
            .files
            .into_iter()
            .map(|f| {
                Ok(ResolvedFile {
                    content: decode(&f.content, f.encoding)
                        .map_err(|e| err(format!("file {}: {e}", f.path)))?,
                    path: f.path,
                    mode: f.mode,
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        Ok(ResolvedJob {
            program,
            runtime: spec.runtime.unwrap_or_default(),
            entrypoint: spec.entrypoint,
            args: spec.args,
            env: spec.env,
            workdir: spec.workdir,
            user: spec.user,
            stdin,
            files,
            limits: ResolvedLimits {
                wall_time_ms: limits
                    .wall_time_ms
                    .ok_or_else(|| err("stored spec lacks wall_time_ms".into()))?,
                cpu_time_ms: limits.cpu_time_ms,
                memory_bytes: limits
                    .memory_bytes
                    .ok_or_else(|| err("stored spec lacks memory_bytes".into()))?,
                fuel: limits.fuel,
                output_bytes: limits
                    .output_bytes
                    .ok_or_else(|| err("stored spec lacks output_bytes".into()))?,
                pids: limits.pids,
                disk_bytes: limits.disk_bytes,
            },
            network: spec.network.unwrap_or_default(),
            network_allow: None,
            wasm_preopens: None,
            tests: None,
            artifacts: None,
        })
    }
}

/// `Option<Vec<Destination>>` as a list of canonical strings; an entry that does not parse makes
/// the row unreadable (the job ends `spec_error` naming it).
mod egress_list {
    use runtime_core::egress::Destination;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<Destination>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(list) => s.collect_seq(list.iter().map(|d| d.to_string())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<Destination>>, D::Error> {
        let Some(list) = Option::<Vec<String>>::deserialize(d)? else {
            return Ok(None);
        };
        runtime_core::egress::parse_all(&list)
            .map(Some)
            .map_err(|(i, e)| serde::de::Error::custom(format!("network_allow[{i}]: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> ResolvedJob {
        ResolvedJob {
            program: ProgramRef::Image {
                reference: "127.0.0.1:5000/tools:1".into(),
            },
            runtime: RuntimeKind::Container,
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: vec!["cat in.bin".into()],
            env: BTreeMap::from([("K".into(), "v".into())]),
            workdir: Some("/work".into()),
            user: Some("1000:1000".into()),
            stdin: b"hello\n".to_vec(),
            files: vec![ResolvedFile {
                path: "in.bin".into(),
                content: vec![0, 159, 255],
                mode: Some(0o755),
            }],
            limits: ResolvedLimits {
                wall_time_ms: 5000,
                cpu_time_ms: Some(1000),
                memory_bytes: 64 << 20,
                fuel: None,
                output_bytes: 1 << 20,
                pids: Some(64),
                disk_bytes: None,
            },
            network: NetworkMode::Bridge,
            network_allow: None,
            wasm_preopens: None,
            tests: None,
            artifacts: None,
        }
    }

    /// v1 rows written before `network_allow` existed read as none; with it, they round-trip as
    /// canonical strings; an entry that does not parse makes the row a `spec_error` naming it.
    #[test]
    fn network_allow_is_optional_in_v1() {
        let stored = sample().to_stored();
        assert!(stored.get("network_allow").is_none());
        assert_eq!(
            ResolvedJob::from_stored(&stored).unwrap().network_allow,
            None
        );
        let mut job = sample();
        job.network_allow = Some(vec![
            "198.51.100.2/32:8000".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
        ]);
        let mut stored = job.to_stored();
        assert_eq!(
            stored["network_allow"],
            json!(["198.51.100.2/32:8000", "203.0.113.0/24"])
        );
        assert_eq!(ResolvedJob::from_stored(&stored).unwrap(), job);
        stored["network_allow"] = json!(["198.51.100.2/32:8000", "nonsense"]);
        let err = ResolvedJob::from_stored(&stored).unwrap_err();
        assert!(err.0.contains("network_allow[1]"), "{err}");
    }

    /// A v1 row is read in place, its "v" key aside: any other key the struct does not know is
    /// refused, and a field of the wrong type makes the row malformed.
    #[test]
    fn a_v1_row_with_a_key_of_no_field_or_a_wrong_type_is_refused() {
        let mut stored = sample().to_stored();
        stored["surprise"] = json!(1);
        let err = ResolvedJob::from_stored(&stored).unwrap_err();
        assert!(err.0.contains("unknown field `surprise`"), "{err}");
        let mut stored = sample().to_stored();
        stored["program"] = json!("sha256:00");
        let err = ResolvedJob::from_stored(&stored).unwrap_err();
        assert!(
            err.0.starts_with("stored job spec (v1) is malformed: "),
            "{err}"
        );
    }

    /// v1 rows written before `artifacts` existed read as none; with them, they round-trip.
    #[test]
    fn artifacts_are_optional_in_v1() {
        let mut stored = sample().to_stored();
        assert!(stored.get("artifacts").is_none());
        assert_eq!(ResolvedJob::from_stored(&stored).unwrap().artifacts, None);
        let mut job = sample();
        job.artifacts = Some(ResolvedArtifacts::new(
            vec!["reports/*.xml".into()],
            &crate::config::LimitPolicy::default(),
        ));
        stored = job.to_stored();
        assert_eq!(
            stored["artifacts"],
            json!({"patterns": ["reports/*.xml"], "max_file_bytes": 64 << 20,
                   "max_total_bytes": 256 << 20, "max_files": 1000})
        );
        assert_eq!(ResolvedJob::from_stored(&stored).unwrap(), job);
    }

    #[test]
    fn v1_round_trips_and_is_tagged() {
        let job = sample();
        let stored = job.to_stored();
        assert_eq!(stored["v"], json!(1));
        assert_eq!(
            stored["program"],
            json!({"kind": "image", "reference": "127.0.0.1:5000/tools:1"})
        );
        assert_eq!(stored["stdin"], json!("aGVsbG8K"));
        assert_eq!(ResolvedJob::from_stored(&stored).unwrap(), job);
    }

    /// A row as the previous version wrote it: the resolved wire `JobSpec` (base64 file, utf8
    /// stdin, defaults filled in by the API).
    #[test]
    fn reads_rows_written_before_versioning() {
        let row = json!({
            "image": "127.0.0.1:5000/tools:1",
            "runtime": "container",
            "entrypoint": ["/bin/sh", "-c"],
            "args": ["cat in.bin"],
            "env": {"K": "v"},
            "workdir": "/work",
            "user": "1000:1000",
            "stdin": "hello\n",
            "files": [{"path": "in.bin", "content": "AJ//", "encoding": "base64", "mode": 493}],
            "limits": {"wall_time_ms": 5000, "cpu_time_ms": 1000, "memory_bytes": 67108864,
                       "output_bytes": 1048576, "pids": 64},
            "network": "bridge",
            "labels": {"team": "a"},
            "max_attempts": 3,
            "priority": 0,
            "queue": "default"
        });
        assert_eq!(ResolvedJob::from_stored(&row).unwrap(), sample());

        let module = json!({
            "module": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "runtime": "wasm",
            "limits": {"wall_time_ms": 100, "memory_bytes": 1024, "output_bytes": 10},
        });
        let job = ResolvedJob::from_stored(&module).unwrap();
        assert_eq!(
            job.program,
            ProgramRef::Module {
                digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                    .into()
            }
        );
        assert_eq!(job.network, NetworkMode::None);
        assert!(job.stdin.is_empty());
    }

    #[test]
    fn unusable_rows_say_why() {
        let no_limit =
            json!({"image": "busybox", "limits": {"memory_bytes": 1, "output_bytes": 1}});
        assert_eq!(
            ResolvedJob::from_stored(&no_limit).unwrap_err().0,
            "stored spec lacks wall_time_ms"
        );
        let both = json!({"image": "busybox", "module": "sha256:00"});
        assert!(
            ResolvedJob::from_stored(&both)
                .unwrap_err()
                .0
                .contains("neither exactly one module nor one image")
        );
        let future = json!({"v": 2, "program": {}});
        assert!(
            ResolvedJob::from_stored(&future)
                .unwrap_err()
                .0
                .contains("version 2")
        );
        let bad_b64 = json!({"image": "busybox", "stdin": "***", "stdin_encoding": "base64",
            "limits": {"wall_time_ms": 1, "memory_bytes": 1, "output_bytes": 1}});
        assert!(
            ResolvedJob::from_stored(&bad_b64)
                .unwrap_err()
                .0
                .starts_with("stdin: invalid base64")
        );
    }
}
