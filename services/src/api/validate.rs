//! Strict validation of job specs, and their resolution against the operator's policy. A spec
//! that passes is stored with every limit filled in, so the worker never applies defaults itself.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::types::{JobSpec, LimitsSpec, NetworkMode, RuntimeKind};
use crate::config::LimitPolicy;
use crate::model::decode;

pub const MAX_ARGS: usize = 4096;
pub const MAX_LABELS: usize = 64;
pub const MAX_FILES: usize = 1024;
pub const MAX_ARTIFACT_PATTERNS: usize = 64;
pub const MAX_ARTIFACT_PATTERN_BYTES: usize = 1024;
pub const MAX_PREOPENS: usize = 16;
pub const MAX_PREOPEN_PATH_BYTES: usize = 255;
pub const MAX_EGRESS_DESTINATIONS: usize = runtime_core::egress::MAX_DESTINATIONS;

/// sha256 of a value's canonical JSON (struct fields in declaration order, maps sorted).
pub fn canonical_hash<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(&json).to_vec()
}

/// Whether `s` is a module digest `sha256:` + 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A relative path without `..`, empty or `.` components, NUL or a leading `/`.
pub fn valid_relative_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 1024
        && !p.starts_with('/')
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn check_max(field: &str, value: Option<u64>, min: u64, max: Option<u64>) -> Result<(), ApiError> {
    if let Some(v) = value {
        if v < min {
            return Err(ApiError::invalid(
                field,
                format!("{field} must be at least {min}, got {v}"),
            ));
        }
        if let Some(max) = max
            && v > max
        {
            return Err(ApiError::invalid(
                field,
                format!("{field} is {v}, above this service's maximum of {max}; ask for less"),
            ));
        }
    }
    Ok(())
}

/// Validates a job spec (module or image) and fills in the defaults; an image reference is
/// normalised (`busybox` → `docker.io/library/busybox:latest`). Module existence is checked by the
/// caller (it needs the database); an image is only pulled by the worker that runs the job.
pub fn resolve(mut spec: JobSpec, policy: &LimitPolicy) -> Result<JobSpec, ApiError> {
    let is_image = match (&spec.module, &spec.image) {
        (None, None) => {
            return Err(ApiError::invalid(
                "module",
                "the job names no code: set `image` to an OCI image reference (e.g. `busybox:1.36`) \
                 or `module` to a digest from POST /v1/modules",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "image",
                "set either `module` or `image`, not both",
            ));
        }
        (None, Some(image)) => {
            let parsed = image_store::ImageRef::parse(image)
                .map_err(|e| ApiError::invalid("image", e.to_string()))?;
            spec.image = Some(parsed.to_string());
            true
        }
        (Some(m), None) => {
            if !is_digest(m) {
                return Err(ApiError::invalid(
                    "module",
                    format!(
                        "`{m}` is not a module digest; expected `sha256:` followed by 64 lowercase hex digits, as returned by POST /v1/modules"
                    ),
                ));
            }
            false
        }
    };
    if is_image {
        check_image_fields(&spec)?;
    } else {
        check_module_fields(&spec)?;
    }
    check_network(&spec)?;
    check_wasm(&spec)?;
    check_argv("args", &spec.args)?;
    for key in spec.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(ApiError::invalid(
                format!("env.{key}"),
                format!(
                    "environment variable name `{key}` is invalid: it must be non-empty without `=` or NUL"
                ),
            ));
        }
    }
    if let Some((k, _)) = spec.env.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ApiError::invalid(
            format!("env.{k}"),
            "environment values cannot contain NUL bytes",
        ));
    }
    if let Some(stdin) = &spec.stdin {
        decode(stdin, spec.stdin_encoding)
            .map_err(|e| ApiError::invalid("stdin", format!("stdin: {e}")))?;
    }
    check_files("", &spec.files)?;
    check_artifacts(&spec.artifacts)?;
    if spec.labels.len() > MAX_LABELS {
        return Err(ApiError::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels are allowed"),
        ));
    }
    for (k, v) in &spec.labels {
        if !valid_name(k) {
            return Err(ApiError::invalid(
                format!("labels.{k}"),
                "label keys are 1–64 characters of letters, digits, `-`, `_` and `.`",
            ));
        }
        if v.len() > 256 {
            return Err(ApiError::invalid(
                format!("labels.{k}"),
                "label values are at most 256 bytes",
            ));
        }
    }
    let queue = spec.queue.get_or_insert_with(|| "default".to_string());
    if !valid_name(queue) {
        return Err(ApiError::invalid(
            "queue",
            "queue names are 1–64 characters of letters, digits, `-`, `_` and `.`",
        ));
    }
    let priority = *spec.priority.get_or_insert(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(ApiError::invalid(
            "priority",
            "priority must be between -1000 and 1000",
        ));
    }
    let attempts = *spec.max_attempts.get_or_insert(policy.default_max_attempts);
    if attempts == 0 || attempts > policy.max_max_attempts {
        return Err(ApiError::invalid(
            "max_attempts",
            format!(
                "max_attempts must be between 1 and {}",
                policy.max_max_attempts
            ),
        ));
    }

    let runtime = spec.runtime;
    let limits = spec.limits.get_or_insert_with(LimitsSpec::default);
    check_limits("", limits, is_image, runtime, policy)?;
    limits
        .wall_time_ms
        .get_or_insert(policy.default_wall_time_ms);
    limits
        .memory_bytes
        .get_or_insert(policy.default_memory_bytes);
    limits
        .output_bytes
        .get_or_insert(policy.default_output_bytes);
    if limits.fuel.is_none() {
        limits.fuel = policy.default_fuel;
    }
    if is_image {
        limits.pids.get_or_insert(policy.default_pids);
    }
    // Containers: the writable layer; Wasm: the directory preopened at `/`.
    limits.disk_bytes.get_or_insert(policy.default_disk_bytes);
    let job_limits = limits.clone();
    if let Some(suite) = spec.tests.as_mut() {
        check_suite(suite, &job_limits, is_image, runtime, policy)?;
    }
    spec.runtime.get_or_insert(if is_image {
        RuntimeKind::Auto
    } else {
        RuntimeKind::Wasm
    });
    Ok(spec)
}

/// The limits' own rules (`prefix` is where they are in the body, e.g. `tests.build.`).
fn check_limits(
    prefix: &str,
    limits: &LimitsSpec,
    is_image: bool,
    runtime: Option<RuntimeKind>,
    policy: &LimitPolicy,
) -> Result<(), ApiError> {
    let field = |name: &str| format!("{prefix}limits.{name}");
    if is_image {
        check_image_limits(limits, runtime).map_err(|e| match e.field.clone() {
            Some(f) => e.with_field(format!("{prefix}{f}")),
            None => e,
        })?;
    } else if limits.cpu_time_ms.is_some() {
        return Err(ApiError::invalid(
            field("cpu_time_ms"),
            "cpu_time_ms applies to container jobs; limit a Wasm job's CPU with `fuel`",
        ));
    }
    if !is_image && limits.pids.is_some() {
        return Err(ApiError::invalid(
            field("pids"),
            "pids applies to container jobs; Wasm jobs cannot create processes",
        ));
    }
    check_max(
        &field("wall_time_ms"),
        limits.wall_time_ms,
        1,
        Some(policy.max_wall_time_ms),
    )?;
    check_max(
        &field("memory_bytes"),
        limits.memory_bytes,
        65_536,
        Some(policy.max_memory_bytes),
    )?;
    check_max(&field("fuel"), limits.fuel, 1, policy.max_fuel)?;
    check_max(&field("pids"), limits.pids, 1, Some(policy.max_pids))?;
    check_max(
        &field("disk_bytes"),
        limits.disk_bytes,
        1 << 20,
        Some(policy.max_disk_bytes),
    )?;
    check_max(
        &field("output_bytes"),
        limits.output_bytes,
        0,
        Some(policy.max_output_bytes),
    )?;
    Ok(())
}

/// A step's or case's limits: checked like the job's, then every omitted field taken from the
/// job's resolved limits.
fn resolve_step_limits(
    prefix: &str,
    limits: &mut Option<LimitsSpec>,
    job: &LimitsSpec,
    is_image: bool,
    runtime: Option<RuntimeKind>,
    policy: &LimitPolicy,
) -> Result<(), ApiError> {
    let l = limits.get_or_insert_with(LimitsSpec::default);
    check_limits(prefix, l, is_image, runtime, policy)?;
    l.wall_time_ms = l.wall_time_ms.or(job.wall_time_ms);
    l.cpu_time_ms = l.cpu_time_ms.or(job.cpu_time_ms);
    l.memory_bytes = l.memory_bytes.or(job.memory_bytes);
    l.fuel = l.fuel.or(job.fuel);
    l.output_bytes = l.output_bytes.or(job.output_bytes);
    l.pids = l.pids.or(job.pids);
    l.disk_bytes = l.disk_bytes.or(job.disk_bytes);
    Ok(())
}

/// Input files: relative paths, each once, valid modes, decodable content.
fn check_files(prefix: &str, files: &[super::types::InputFileSpec]) -> Result<(), ApiError> {
    if files.len() > MAX_FILES {
        return Err(ApiError::invalid(
            format!("{prefix}files"),
            format!("at most {MAX_FILES} files are allowed"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, f) in files.iter().enumerate() {
        if !valid_relative_path(&f.path) {
            return Err(ApiError::invalid(
                format!("{prefix}files[{i}].path"),
                format!(
                    "`{}` is not allowed: use a relative path like `input/a.txt`, without `..`, `.` or empty parts",
                    f.path
                ),
            ));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(ApiError::invalid(
                format!("{prefix}files[{i}].path"),
                format!("`{}` is given twice", f.path),
            ));
        }
        if f.mode.is_some_and(|m| m > 0o7777) {
            return Err(ApiError::invalid(
                format!("{prefix}files[{i}].mode"),
                "mode must be Unix permission bits (at most 0o7777 = 4095)",
            ));
        }
        decode(&f.content, f.encoding).map_err(|e| {
            ApiError::invalid(
                format!("{prefix}files[{i}].content"),
                format!("file content: {e}"),
            )
        })?;
    }
    Ok(())
}

fn check_argv(field: &str, argv: &[String]) -> Result<(), ApiError> {
    if argv.len() > MAX_ARGS {
        return Err(ApiError::invalid(
            field,
            format!("at most {MAX_ARGS} arguments are allowed"),
        ));
    }
    if let Some(i) = argv.iter().position(|a| a.contains('\0')) {
        return Err(ApiError::invalid(
            format!("{field}[{i}]"),
            "arguments cannot contain NUL bytes",
        ));
    }
    Ok(())
}

/// A build or checker step: containers run `command` in the job's image; Wasm jobs run `module`.
fn check_step(
    prefix: &str,
    step: &mut super::types::StepSpec,
    job: &LimitsSpec,
    is_image: bool,
    runtime: Option<RuntimeKind>,
    policy: &LimitPolicy,
) -> Result<(), ApiError> {
    check_argv(&format!("{prefix}command"), &step.command)?;
    match (&step.module, is_image) {
        (Some(_), true) => {
            return Err(ApiError::invalid(
                format!("{prefix}module"),
                "an image job's steps run in its image: give `command`, not `module`",
            ));
        }
        (None, true) if step.command.is_empty() => {
            return Err(ApiError::invalid(
                format!("{prefix}command"),
                "give the step's program and arguments, e.g. [\"sh\", \"-c\", \"make\"]",
            ));
        }
        (None, false) => {
            return Err(ApiError::invalid(
                format!("{prefix}module"),
                "a Wasm job's steps are modules: set `module` to a digest from POST /v1/modules",
            ));
        }
        (Some(m), false) if !is_digest(m) => {
            return Err(ApiError::invalid(
                format!("{prefix}module"),
                format!("`{m}` is not a module digest (`sha256:` and 64 lowercase hex digits)"),
            ));
        }
        _ => {}
    }
    check_files(prefix, &step.files)?;
    resolve_step_limits(prefix, &mut step.limits, job, is_image, runtime, policy)
}

/// A test suite: its steps, cases, comparison and options.
fn check_suite(
    suite: &mut super::types::TestSuiteSpec,
    job: &LimitsSpec,
    is_image: bool,
    runtime: Option<RuntimeKind>,
    policy: &LimitPolicy,
) -> Result<(), ApiError> {
    use crate::grading::{MAX_CASES, MAX_PARALLELISM};
    if suite.cases.is_empty() || suite.cases.len() > MAX_CASES {
        return Err(ApiError::invalid(
            "tests.cases",
            format!(
                "a suite has 1 to {MAX_CASES} cases, got {}",
                suite.cases.len()
            ),
        ));
    }
    if let Some(p) = suite.parallelism
        && !(1..=MAX_PARALLELISM).contains(&p)
    {
        return Err(ApiError::invalid(
            "tests.parallelism",
            format!("parallelism is 1 to {MAX_PARALLELISM}, got {p}"),
        ));
    }
    if let Some(c) = &suite.compare {
        c.validate()
            .map_err(|e| ApiError::invalid("tests.compare", e))?;
    }
    if let Some(b) = suite.build.as_mut() {
        check_step("tests.build.", b, job, is_image, runtime, policy)?;
    }
    if let Some(c) = suite.checker.as_mut() {
        if suite.compare.is_some() {
            return Err(ApiError::invalid(
                "tests.checker",
                "give either `compare` or `checker`: the checker judges the output itself",
            ));
        }
        check_step("tests.checker.", c, job, is_image, runtime, policy)?;
    }
    let mut names = BTreeSet::new();
    for (i, c) in suite.cases.iter_mut().enumerate() {
        let prefix = format!("tests.cases[{i}].");
        if c.name.is_empty()
            || c.name.len() > 128
            || c.name.chars().any(|ch| ch.is_control() || ch == '/')
        {
            return Err(ApiError::invalid(
                format!("{prefix}name"),
                "case names are 1–128 characters without control characters or `/`",
            ));
        }
        if !names.insert(c.name.clone()) {
            return Err(ApiError::invalid(
                format!("{prefix}name"),
                format!("case name `{}` is given twice", c.name),
            ));
        }
        if let Some(args) = &c.args {
            check_argv(&format!("{prefix}args"), args)?;
        }
        if let Some(stdin) = &c.stdin {
            decode(stdin, c.stdin_encoding)
                .map_err(|e| ApiError::invalid(format!("{prefix}stdin"), format!("stdin: {e}")))?;
        }
        if let Some(out) = &c.expect.stdout {
            decode(out, c.expect.stdout_encoding).map_err(|e| {
                ApiError::invalid(
                    format!("{prefix}expect.stdout"),
                    format!("expect.stdout: {e}"),
                )
            })?;
        }
        if let Some(cmp) = &c.compare {
            cmp.validate()
                .map_err(|e| ApiError::invalid(format!("{prefix}compare"), e))?;
        }
        if c.weight.is_some_and(|w| w > 1_000_000) {
            return Err(ApiError::invalid(
                format!("{prefix}weight"),
                "a case's weight is at most 1000000",
            ));
        }
        check_files(&prefix, &c.files)?;
        resolve_step_limits(&prefix, &mut c.limits, job, is_image, runtime, policy)?;
    }
    Ok(())
}

/// Artifact patterns: relative or absolute, no `..` and no empty component, valid globs
/// (`runtime_core::collect::check_pattern`, the backends' own reading), bounded in number and size.
fn check_artifacts(patterns: &[String]) -> Result<(), ApiError> {
    if patterns.len() > MAX_ARTIFACT_PATTERNS {
        return Err(ApiError::invalid(
            "artifacts",
            format!("at most {MAX_ARTIFACT_PATTERNS} artifact patterns are allowed"),
        ));
    }
    for (i, p) in patterns.iter().enumerate() {
        let field = format!("artifacts[{i}]");
        let bad = |why: &str| {
            ApiError::invalid(
                field.clone(),
                format!(
                    "artifact pattern `{p}` {why}: use a path or glob like `reports/*.xml`, \
                     `out/**` or `/work/app`"
                ),
            )
        };
        if p.len() > MAX_ARTIFACT_PATTERN_BYTES {
            return Err(bad(&format!(
                "is longer than {MAX_ARTIFACT_PATTERN_BYTES} bytes"
            )));
        }
        let body = p.strip_prefix('/').unwrap_or(p);
        if body.is_empty() || body.split('/').any(str::is_empty) {
            return Err(bad(
                "has an empty component (`//`, a trailing `/`, or nothing)",
            ));
        }
        if body.split('/').any(|c| c == "..") {
            return Err(bad("contains `..`"));
        }
        runtime_core::collect::check_pattern(p).map_err(|e| bad(&format!("is invalid ({e})")))?;
    }
    Ok(())
}

/// Fields that only container images use, refused on module jobs.
fn check_module_fields(spec: &JobSpec) -> Result<(), ApiError> {
    if spec.runtime == Some(RuntimeKind::Container) {
        return Err(ApiError::invalid(
            "runtime",
            "a Wasm module cannot run on the container runtime; use `auto` or `wasm`",
        ));
    }
    if spec.network_mode() == Some(NetworkMode::Bridge) {
        return Err(ApiError::invalid(
            "network",
            "Wasm jobs have no network; `bridge` applies to container jobs",
        ));
    }
    if spec.workdir.is_some() {
        return Err(ApiError::invalid(
            "workdir",
            "`workdir` applies to container jobs; Wasm jobs see their files at `/` (or where \
             `wasm.preopens` puts them)",
        ));
    }
    if spec.user.is_some() {
        return Err(ApiError::invalid(
            "user",
            "`user` applies to container jobs",
        ));
    }
    if spec.entrypoint.is_some() {
        return Err(ApiError::invalid(
            "entrypoint",
            "`entrypoint` applies to image jobs; a module's arguments are `args`",
        ));
    }
    Ok(())
}

/// The container-side fields of an image job: entrypoint, workdir, user (any `network` is
/// accepted: a worker without bridge networking ends a bridge job with the reason).
fn check_image_fields(spec: &JobSpec) -> Result<(), ApiError> {
    if let Some(entrypoint) = &spec.entrypoint {
        if entrypoint.len() > MAX_ARGS {
            return Err(ApiError::invalid(
                "entrypoint",
                format!("at most {MAX_ARGS} entrypoint elements are allowed"),
            ));
        }
        if let Some(i) = entrypoint.iter().position(|a| a.contains('\0')) {
            return Err(ApiError::invalid(
                format!("entrypoint[{i}]"),
                "entrypoint elements cannot contain NUL bytes",
            ));
        }
        if entrypoint.is_empty() && spec.args.is_empty() {
            return Err(ApiError::invalid(
                "entrypoint",
                "an empty `entrypoint` clears the image's entrypoint and cmd: give the program in `args`",
            ));
        }
    }
    if let Some(dir) = &spec.workdir
        && (!dir.starts_with('/') || dir.contains('\0') || dir.len() > 4096)
    {
        return Err(ApiError::invalid(
            "workdir",
            format!("`{dir}` is not an absolute path; use something like `/work`"),
        ));
    }
    if let Some(user) = &spec.user
        && !valid_user(user)
    {
        return Err(ApiError::invalid(
            "user",
            format!(
                "`{user}` is not a user: use `uid[:gid]` (numbers, e.g. `1000:1000`) or \
                 `name[:group]` as found in the image's /etc/passwd and /etc/group"
            ),
        ));
    }
    Ok(())
}

/// `wasm.preopens`: at most [`MAX_PREOPENS`], each `guest` an absolute path given once, each
/// `dir` a relative one, both of plain components; not with the container runtime.
fn check_wasm(spec: &JobSpec) -> Result<(), ApiError> {
    let Some(wasm) = &spec.wasm else {
        return Ok(());
    };
    if spec.runtime == Some(RuntimeKind::Container) {
        return Err(ApiError::invalid(
            "wasm",
            "`wasm` options apply to Wasm jobs; this job insists on the container runtime: \
             drop `wasm`, or use `runtime: wasm` with a Wasm module or image",
        ));
    }
    if wasm.preopens.len() > MAX_PREOPENS {
        return Err(ApiError::invalid(
            "wasm.preopens",
            format!(
                "at most {MAX_PREOPENS} preopens are allowed, got {}",
                wasm.preopens.len()
            ),
        ));
    }
    let plain = |path: &str| {
        path.split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
    };
    let mut seen = std::collections::BTreeSet::new();
    for (i, preopen) in wasm.preopens.iter().enumerate() {
        let guest = &preopen.guest;
        let field = format!("wasm.preopens[{i}].guest");
        let body = guest.strip_prefix('/');
        let ok = guest.len() <= MAX_PREOPEN_PATH_BYTES
            && !guest.contains('\0')
            && body.is_some_and(|b| b.is_empty() || plain(b));
        if !ok {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{guest}` is not a guest directory: give an absolute path such as `/` or \
                     `/data`, without `.`, `..`, empty components or a trailing `/`, at most \
                     {MAX_PREOPEN_PATH_BYTES} bytes"
                ),
            ));
        }
        if !seen.insert(guest.as_str()) {
            return Err(ApiError::invalid(
                field,
                format!("`{guest}` is preopened twice; give each guest path once"),
            ));
        }
        if let Some(dir) = &preopen.dir {
            let ok = dir.len() <= MAX_PREOPEN_PATH_BYTES && !dir.contains('\0') && plain(dir);
            if !ok {
                return Err(ApiError::invalid(
                    format!("wasm.preopens[{i}].dir"),
                    format!(
                        "`{dir}` is not a directory of the job's: give a relative path such as \
                         `input` or `a/b`, without `.`, `..`, empty components or a leading or \
                         trailing `/`, at most {MAX_PREOPEN_PATH_BYTES} bytes (omit `dir` for \
                         the job's whole directory)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `network.allow`: only with `mode: bridge`, at most [`MAX_EGRESS_DESTINATIONS`] entries, each
/// an IPv4 `CIDR[:PORT]` (the syntax of `runtime_core::egress`; IPv6 parses but bridge jobs have
/// no IPv6). Errors name the entry (`network.allow[2]`).
fn check_network(spec: &JobSpec) -> Result<(), ApiError> {
    let Some(network) = &spec.network else {
        return Ok(());
    };
    let Some(allow) = network.allow() else {
        return Ok(());
    };
    if network.mode() != NetworkMode::Bridge {
        return Err(ApiError::invalid(
            "network.allow",
            "`allow` is an egress allow-list for bridge jobs; with `mode: none` the job has no \
             network at all: drop `allow`, or use `mode: bridge`",
        ));
    }
    if allow.len() > MAX_EGRESS_DESTINATIONS {
        return Err(ApiError::invalid(
            "network.allow",
            format!(
                "at most {MAX_EGRESS_DESTINATIONS} destinations are allowed, got {}; list wider \
                 networks (e.g. `203.0.113.0/24` instead of its addresses)",
                allow.len()
            ),
        ));
    }
    for (i, entry) in allow.iter().enumerate() {
        let field = format!("network.allow[{i}]");
        let d: runtime_core::egress::Destination = entry
            .parse()
            .map_err(|e: String| ApiError::invalid(field.clone(), e))?;
        if !matches!(d.net, runtime_core::egress::IpNet::V4(_)) {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{entry}` is an IPv6 destination, and bridge jobs have no IPv6 (only IPv4 \
                     leaves a job's network); list IPv4 networks"
                ),
            ));
        }
    }
    Ok(())
}

/// Limits of an image job: containers bound CPU with `cpu_time_ms`; `fuel` only makes sense when
/// the job insists on the Wasm runtime.
fn check_image_limits(limits: &LimitsSpec, runtime: Option<RuntimeKind>) -> Result<(), ApiError> {
    if limits.fuel.is_some() && runtime != Some(RuntimeKind::Wasm) {
        return Err(ApiError::invalid(
            "limits.fuel",
            "fuel applies to Wasm jobs; limit a container's CPU with `cpu_time_ms` \
             (or set `runtime: wasm` to run a Wasm image with a fuel budget)",
        ));
    }
    if limits.cpu_time_ms.is_some() && runtime == Some(RuntimeKind::Wasm) {
        return Err(ApiError::invalid(
            "limits.cpu_time_ms",
            "cpu_time_ms applies to container jobs; limit a Wasm job's CPU with `fuel`",
        ));
    }
    check_max("limits.cpu_time_ms", limits.cpu_time_ms, 1, None)?;
    Ok(())
}

/// `uid[:gid]` or `name[:group]`: each part a number or a POSIX-ish account name.
pub fn valid_user(s: &str) -> bool {
    fn part(p: &str) -> bool {
        if p.is_empty() || p.len() > 32 {
            return false;
        }
        if p.bytes().all(|b| b.is_ascii_digit()) {
            return p.parse::<u32>().is_ok();
        }
        let mut bytes = p.bytes();
        let first = bytes.next().unwrap_or(b'-');
        (first.is_ascii_alphabetic() || first == b'_')
            && p.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric()
                    || b == b'_'
                    || b == b'-'
                    || b == b'.'
                    || (b == b'$' && i == p.len() - 1)
            })
    }
    match s.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(s),
    }
}

impl ApiError {
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module_spec() -> JobSpec {
        JobSpec {
            module: Some(format!("sha256:{}", "a".repeat(64))),
            ..Default::default()
        }
    }

    /// The edge conversion: a resolved wire spec becomes the model's job, stored as version 1,
    /// and reads back identically; the previous storage (the resolved wire spec itself) reads
    /// back to the same job.
    #[test]
    fn resolved_specs_convert_to_the_stored_job() {
        use crate::api::types::{Encoding, InputFileSpec};
        use crate::model::{ProgramRef, ResolvedJob};
        let policy = LimitPolicy::default();
        let spec = JobSpec {
            image: Some("127.0.0.1:5000/tools:1".into()),
            args: vec!["-c".into(), "cat".into()],
            stdin: Some("aGk=".into()),
            stdin_encoding: Some(Encoding::Base64),
            files: vec![InputFileSpec {
                path: "in/a.txt".into(),
                content: "text".into(),
                encoding: None,
                mode: Some(0o600),
            }],
            ..Default::default()
        };
        let resolved = resolve(spec, &policy).unwrap();
        let job = ResolvedJob::try_from(resolved.clone()).unwrap();
        assert_eq!(
            job.program,
            ProgramRef::Image {
                reference: "127.0.0.1:5000/tools:1".into()
            }
        );
        assert_eq!(job.stdin, b"hi");
        assert_eq!(job.files[0].content, b"text");
        assert_eq!(job.limits.wall_time_ms, policy.default_wall_time_ms);
        let stored = job.to_stored();
        assert_eq!(stored["v"], 1);
        assert_eq!(ResolvedJob::from_stored(&stored).unwrap(), job);
        let previous = serde_json::to_value(&resolved).unwrap();
        assert_eq!(ResolvedJob::from_stored(&previous).unwrap(), job);
    }

    #[test]
    fn fills_defaults() {
        let policy = LimitPolicy::default();
        let r = resolve(module_spec(), &policy).unwrap();
        let l = r.limits.unwrap();
        assert_eq!(l.wall_time_ms, Some(policy.default_wall_time_ms));
        assert_eq!(l.memory_bytes, Some(policy.default_memory_bytes));
        assert_eq!(l.output_bytes, Some(policy.default_output_bytes));
        assert_eq!(r.queue.as_deref(), Some("default"));
        assert_eq!(r.max_attempts, Some(3));
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let policy = LimitPolicy::default();
        let cases: Vec<(JobSpec, &str)> = vec![
            (JobSpec::default(), "module"),
            (
                JobSpec {
                    module: Some("sha256:xyz".into()),
                    ..Default::default()
                },
                "module",
            ),
            (
                JobSpec {
                    limits: Some(LimitsSpec {
                        memory_bytes: Some(u64::MAX),
                        ..Default::default()
                    }),
                    ..module_spec()
                },
                "limits.memory_bytes",
            ),
            (
                JobSpec {
                    limits: Some(LimitsSpec {
                        wall_time_ms: Some(0),
                        ..Default::default()
                    }),
                    ..module_spec()
                },
                "limits.wall_time_ms",
            ),
            (
                JobSpec {
                    files: vec![super::super::types::InputFileSpec {
                        path: "../etc/passwd".into(),
                        content: String::new(),
                        encoding: None,
                        mode: None,
                    }],
                    ..module_spec()
                },
                "files[0].path",
            ),
            (
                JobSpec {
                    stdin: Some("!!".into()),
                    stdin_encoding: Some(super::super::types::Encoding::Base64),
                    ..module_spec()
                },
                "stdin",
            ),
            (
                JobSpec {
                    max_attempts: Some(0),
                    ..module_spec()
                },
                "max_attempts",
            ),
            (
                JobSpec {
                    queue: Some("a b".into()),
                    ..module_spec()
                },
                "queue",
            ),
        ];
        for (spec, field) in cases {
            let err = resolve(spec, &policy).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{}", err.message);
            assert!(err.status.is_client_error());
        }
    }

    #[test]
    fn artifact_patterns_are_checked_naming_the_pattern() {
        let policy = LimitPolicy::default();
        let with = |patterns: &[&str]| JobSpec {
            artifacts: patterns.iter().map(|p| p.to_string()).collect(),
            ..module_spec()
        };
        let ok = resolve(
            with(&["reports/*.xml", "out/app", "/work/**/*.log", "[ab]?.txt"]),
            &policy,
        )
        .unwrap();
        assert_eq!(ok.artifacts.len(), 4);
        let long = "a".repeat(MAX_ARTIFACT_PATTERN_BYTES + 1);
        for (patterns, field, says) in [
            (vec!["ok", "../etc/passwd"], "artifacts[1]", "`..`"),
            (vec!["a/../b"], "artifacts[0]", "`..`"),
            (vec!["a//b"], "artifacts[0]", "empty component"),
            (vec!["out/"], "artifacts[0]", "empty component"),
            (vec![""], "artifacts[0]", "empty component"),
            (vec!["/"], "artifacts[0]", "empty component"),
            (vec!["a**b"], "artifacts[0]", "invalid"),
            (vec!["[x"], "artifacts[0]", "invalid"),
            (vec![long.as_str()], "artifacts[0]", "longer than"),
        ] {
            let err = resolve(with(&patterns), &policy).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some(field),
                "{patterns:?}: {}",
                err.message
            );
            assert!(err.message.contains(says), "{patterns:?}: {}", err.message);
            assert_eq!(err.status.as_u16(), 422);
        }
        let many: Vec<String> = (0..=MAX_ARTIFACT_PATTERNS)
            .map(|i| format!("f{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = resolve(with(&many), &policy).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("artifacts"));

        // Resolved with the policy's caps, and into the backend's request.
        let job = crate::model::ResolvedJob::try_from(ok).unwrap();
        let artifacts = job.artifacts.unwrap().to_runtime();
        assert_eq!(artifacts.patterns[0], "reports/*.xml");
        assert_eq!(artifacts.max_file_bytes, policy.artifact_file_bytes);
        assert_eq!(artifacts.max_total_bytes, policy.artifact_total_bytes);
        assert_eq!(artifacts.max_files, 1000);
    }

    fn image_spec() -> JobSpec {
        JobSpec {
            image: Some("busybox".into()),
            ..Default::default()
        }
    }

    fn bridge_with(allow: Option<Vec<&str>>, mode: NetworkMode) -> JobSpec {
        use super::super::types::{NetworkPolicy, NetworkSpec};
        JobSpec {
            network: Some(NetworkSpec::Policy(NetworkPolicy {
                mode,
                allow: allow.map(|a| a.into_iter().map(String::from).collect()),
            })),
            ..image_spec()
        }
    }

    #[test]
    fn egress_allow_lists_are_checked_naming_the_entry() {
        let policy = LimitPolicy::default();
        let long: Vec<String> = (0..=MAX_EGRESS_DESTINATIONS)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        for (spec, field, says) in [
            (
                bridge_with(
                    Some(vec!["10.0.0.0/8", "192.0.2.1:53", "example.com"]),
                    NetworkMode::Bridge,
                ),
                "network.allow[2]",
                "not an IP address",
            ),
            (
                bridge_with(Some(vec!["198.51.100.2/24"]), NetworkMode::Bridge),
                "network.allow[0]",
                "host bits",
            ),
            (
                bridge_with(Some(vec!["10.0.0.1/32:0"]), NetworkMode::Bridge),
                "network.allow[0]",
                "1..=65535",
            ),
            (
                bridge_with(
                    Some(vec!["10.0.0.1/32", "[2001:db8::1]:443"]),
                    NetworkMode::Bridge,
                ),
                "network.allow[1]",
                "no IPv6",
            ),
            (
                bridge_with(Some(vec!["10.0.0.0/8"]), NetworkMode::None),
                "network.allow",
                "mode: none",
            ),
            (
                bridge_with(Some(vec![]), NetworkMode::None),
                "network.allow",
                "mode: none",
            ),
            (
                bridge_with(
                    Some(long.iter().map(String::as_str).collect()),
                    NetworkMode::Bridge,
                ),
                "network.allow",
                "at most 64",
            ),
        ] {
            let err = resolve(spec, &policy).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{}", err.message);
            assert!(err.message.contains(says), "{field}: {}", err.message);
            assert_eq!(err.status.as_u16(), 422);
        }
        // Module jobs have no network, in either form.
        let module_bridge = JobSpec {
            image: None,
            ..bridge_with(Some(vec!["10.0.0.0/8"]), NetworkMode::Bridge)
        };
        let err = resolve(
            JobSpec {
                module: module_spec().module,
                ..module_bridge
            },
            &policy,
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("network"), "{}", err.message);
    }

    #[test]
    fn egress_allow_lists_resolve_to_the_canonical_stored_form() {
        use crate::model::ResolvedJob;
        let policy = LimitPolicy::default();
        let sixty_four: Vec<String> = (0..MAX_EGRESS_DESTINATIONS)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        let ok = resolve(
            bridge_with(
                Some(sixty_four.iter().map(String::as_str).collect()),
                NetworkMode::Bridge,
            ),
            &policy,
        )
        .unwrap();
        assert_eq!(
            ResolvedJob::try_from(ok)
                .unwrap()
                .network_allow
                .unwrap()
                .len(),
            64
        );
        let resolved = resolve(
            bridge_with(
                Some(vec!["198.51.100.2:8000", "203.0.113.0/24"]),
                NetworkMode::Bridge,
            ),
            &policy,
        )
        .unwrap();
        let job = ResolvedJob::try_from(resolved).unwrap();
        assert_eq!(job.network, crate::model::NetworkMode::Bridge);
        let stored = job.to_stored();
        assert_eq!(
            stored["network_allow"],
            serde_json::json!(["198.51.100.2/32:8000", "203.0.113.0/24"])
        );
        assert_eq!(ResolvedJob::from_stored(&stored).unwrap(), job);
        // An empty list is a policy (DNS only), not the absence of one.
        let job = ResolvedJob::try_from(
            resolve(bridge_with(Some(vec![]), NetworkMode::Bridge), &policy).unwrap(),
        )
        .unwrap();
        assert_eq!(job.network_allow, Some(vec![]));
        assert_eq!(job.to_stored()["network_allow"], serde_json::json!([]));
        // The object form without `allow`, and the plain mode: no policy, nothing stored.
        for spec in [
            bridge_with(None, NetworkMode::Bridge),
            JobSpec {
                network: Some(NetworkMode::Bridge.into()),
                ..image_spec()
            },
        ] {
            let job = ResolvedJob::try_from(resolve(spec, &policy).unwrap()).unwrap();
            assert_eq!(job.network, crate::model::NetworkMode::Bridge);
            assert_eq!(job.network_allow, None);
            assert!(job.to_stored().get("network_allow").is_none());
        }
    }

    #[test]
    fn network_accepts_the_mode_and_the_object_form() {
        use super::super::error::parse_json;
        use super::super::types::{NetworkPolicy, NetworkSpec};
        let spec: JobSpec = parse_json(br#"{"image": "busybox", "network": "bridge"}"#).unwrap();
        assert_eq!(spec.network, Some(NetworkSpec::Mode(NetworkMode::Bridge)));
        // The plain form serialises as before (the idempotency hash of old requests is unchanged).
        assert_eq!(serde_json::to_value(&spec).unwrap()["network"], "bridge");
        let spec: JobSpec = parse_json(
            br#"{"image": "busybox", "network": {"mode": "bridge", "allow": ["198.51.100.2/32:8000"]}}"#,
        )
        .unwrap();
        assert_eq!(
            spec.network,
            Some(NetworkSpec::Policy(NetworkPolicy {
                mode: NetworkMode::Bridge,
                allow: Some(vec!["198.51.100.2/32:8000".into()]),
            }))
        );
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["network"],
            serde_json::json!({"mode": "bridge", "allow": ["198.51.100.2/32:8000"]})
        );
        for (body, field, says) in [
            (
                r#"{"image": "b", "network": "wifi"}"#,
                "network",
                "unknown variant",
            ),
            (r#"{"image": "b", "network": 3}"#, "network", "\"bridge\""),
            (
                r#"{"image": "b", "network": {"mode": "bridge", "alow": []}}"#,
                "network.alow",
                "unknown field",
            ),
            (
                r#"{"image": "b", "network": {"allow": []}}"#,
                "network",
                "mode",
            ),
            (
                r#"{"image": "b", "network": {"mode": "bridge", "allow": ["10.0.0.0/8", 7]}}"#,
                "network.allow[1]",
                "string",
            ),
        ] {
            let err = parse_json::<JobSpec>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status.as_u16(), 422, "{body}: {}", err.message);
            assert_eq!(err.field.as_deref(), Some(field), "{body}: {}", err.message);
            assert!(err.message.contains(says), "{body}: {}", err.message);
        }
    }

    #[test]
    fn container_pids_and_disk_get_defaults_and_maxima() {
        let policy = LimitPolicy::default();
        let r = resolve(image_spec(), &policy).unwrap();
        let l = r.limits.unwrap();
        assert_eq!(l.pids, Some(policy.default_pids));
        assert_eq!(l.disk_bytes, Some(policy.default_disk_bytes));
        let with = |pids, disk_bytes| JobSpec {
            limits: Some(LimitsSpec {
                pids,
                disk_bytes,
                ..Default::default()
            }),
            ..image_spec()
        };
        let l = resolve(with(Some(16), Some(8 << 20)), &policy)
            .unwrap()
            .limits
            .unwrap();
        assert_eq!((l.pids, l.disk_bytes), (Some(16), Some(8 << 20)));
        for (spec, field) in [
            (with(Some(0), None), "limits.pids"),
            (with(Some(policy.max_pids + 1), None), "limits.pids"),
            (with(None, Some(4096)), "limits.disk_bytes"),
            (
                with(None, Some(policy.max_disk_bytes + 1)),
                "limits.disk_bytes",
            ),
        ] {
            let e = resolve(spec, &policy).unwrap_err();
            assert!(format!("{e:?}").contains(field), "{e:?}");
        }
        // Wasm modules get no pids limit, but a disk limit (their directory at `/`), checked
        // against the same maximum.
        let wasm_spec = |disk_bytes| JobSpec {
            module: Some(format!("sha256:{}", "0".repeat(64))),
            limits: Some(LimitsSpec {
                disk_bytes,
                ..Default::default()
            }),
            ..Default::default()
        };
        let l = resolve(wasm_spec(None), &policy).unwrap().limits.unwrap();
        assert_eq!(
            (l.pids, l.disk_bytes),
            (None, Some(policy.default_disk_bytes))
        );
        let l = resolve(wasm_spec(Some(8 << 20)), &policy)
            .unwrap()
            .limits
            .unwrap();
        assert_eq!(l.disk_bytes, Some(8 << 20));
        let e = resolve(wasm_spec(Some(policy.max_disk_bytes + 1)), &policy).unwrap_err();
        assert!(format!("{e:?}").contains("limits.disk_bytes"), "{e:?}");
    }

    #[test]
    fn image_jobs_are_normalised_and_checked() {
        let policy = LimitPolicy::default();
        let r = resolve(
            JobSpec {
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
                args: vec!["echo hi".into()],
                workdir: Some("/work".into()),
                user: Some("1000:1000".into()),
                limits: Some(LimitsSpec {
                    cpu_time_ms: Some(500),
                    ..Default::default()
                }),
                ..image_spec()
            },
            &policy,
        )
        .unwrap();
        assert_eq!(r.image.as_deref(), Some("docker.io/library/busybox:latest"));
        assert_eq!(r.runtime, Some(RuntimeKind::Auto));
        let cases: Vec<(JobSpec, &str, &str)> = vec![
            (
                JobSpec {
                    image: Some("busybox:bad tag!".into()),
                    ..Default::default()
                },
                "image",
                "invalid image reference",
            ),
            (
                JobSpec {
                    workdir: Some("work".into()),
                    ..image_spec()
                },
                "workdir",
                "absolute",
            ),
            (
                JobSpec {
                    user: Some("1000:".into()),
                    ..image_spec()
                },
                "user",
                "uid[:gid]",
            ),
            (
                JobSpec {
                    limits: Some(LimitsSpec {
                        fuel: Some(10),
                        ..Default::default()
                    }),
                    ..image_spec()
                },
                "limits.fuel",
                "cpu_time_ms",
            ),
            (
                JobSpec {
                    entrypoint: Some(vec![]),
                    ..image_spec()
                },
                "entrypoint",
                "args",
            ),
            (
                JobSpec {
                    entrypoint: Some(vec!["x".into()]),
                    ..module_spec()
                },
                "entrypoint",
                "image jobs",
            ),
        ];
        for (spec, field, text) in cases {
            let err = resolve(spec, &policy).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{}", err.message);
            assert!(err.message.contains(text), "{}", err.message);
            assert_eq!(err.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        }
        // A Wasm image with runtime: wasm may carry a fuel budget.
        let r = resolve(
            JobSpec {
                runtime: Some(RuntimeKind::Wasm),
                limits: Some(LimitsSpec {
                    fuel: Some(1000),
                    ..Default::default()
                }),
                ..image_spec()
            },
            &policy,
        )
        .unwrap();
        assert_eq!(r.limits.unwrap().fuel, Some(1000));
    }

    #[test]
    fn user_shapes() {
        for ok in [
            "0",
            "1000:1000",
            "nobody",
            "www-data:www-data",
            "_apt",
            "app$",
            "1000:staff",
        ] {
            assert!(valid_user(ok), "{ok:?}");
        }
        for bad in [
            "",
            ":",
            "1000:",
            ":1000",
            "a b",
            "-x",
            "99999999999",
            "a:b:c",
            "x/y",
        ] {
            assert!(!valid_user(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        assert!(valid_relative_path("a/b.txt"));
        for bad in ["", "/a", "a/../b", "a//b", "./a", "a\0b", ".."] {
            assert!(!valid_relative_path(bad), "{bad:?}");
        }
    }
}
