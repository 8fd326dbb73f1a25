//! Images on a worker host: the registry configuration an operator gives (flags / `NEKTON_*`
//! variables), registry credentials from a Docker-style `config.json`, and the one
//! [`ImageService`] (plus, where the host allows it, the container backend) a worker process
//! builds over `<state_dir>/images`.
//!
//! Credentials are read here and handed to the image service; nothing in this module logs them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use container_backend::{BridgeConfig, ContainerBackend, ContainerConfig};
use image_store::{
    Credentials, ImageError, ImageRef, ImageService, ImageStore, RegistryOptions, StoreLimits,
};
use runtime_core::Backend;

/// How a worker process reaches registries.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Registries (`host:port`, as written in references) reached over plain HTTP. Every other
    /// registry is HTTPS only.
    pub insecure_registries: Vec<String>,
    /// If set, the only registries images may come from.
    pub allowed_registries: Option<Vec<String>>,
    /// A Docker-style `config.json` with an `auths` map.
    pub registry_auth: Option<PathBuf>,
    /// Where container jobs' cgroups go (`ContainerConfig::cgroup_parent`); `None`: below the
    /// worker's own cgroup.
    pub cgroup_parent: Option<String>,
    /// A cgroup2 mount for the job cgroups (`ContainerConfig::cgroup_root`).
    pub cgroup_root: Option<PathBuf>,
    /// User namespaces of container jobs (`--userns*`; `ContainerConfig::userns`).
    pub userns: container_backend::UsernsConfig,
    /// Bridge networking for container jobs; `None`: bridge jobs end with `spec_error`.
    pub network: Option<BridgeConfig>,
    /// Size caps of the image store (`--image-max-*` flags).
    pub store_limits: StoreLimits,
}

/// The image side of a worker process: its image service, and the container backend or the
/// reason there is none.
#[derive(Clone)]
pub struct ImageHost {
    pub images: ImageService,
    pub container: Result<Arc<dyn Backend>, String>,
}

impl std::fmt::Debug for ImageHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageHost")
            .field("images", &self.images)
            .field("container", &self.container.as_ref().map(|b| b.name()))
            .finish()
    }
}

/// Where the image store lives below a state directory.
pub fn store_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("images")
}

/// Where the container backend keeps per-job state below a state directory.
pub fn container_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("containers")
}

/// Opens the image store under `state_dir` and builds the image service and (if the host allows
/// it) the container backend. A container backend that cannot start is not an error: its reason
/// is logged once here and becomes the detail of every container job this worker takes.
pub fn start(state_dir: &Path, options: &ImageOptions) -> anyhow::Result<ImageHost> {
    let credentials = match &options.registry_auth {
        Some(path) => load_registry_auth(path)?,
        None => HashMap::new(),
    };
    let registry = RegistryOptions {
        insecure_registries: options.insecure_registries.clone(),
        allowed_registries: options.allowed_registries.clone(),
        credentials,
        ..RegistryOptions::default()
    };
    let root = store_dir(state_dir);
    let store = ImageStore::open(&root, options.store_limits.clone())
        .with_context(|| format!("opening the image store at {}", root.display()))?;
    // Import uploads a crashed process left behind (the API streams them there).
    let uploads = root.join("uploads");
    if uploads.exists()
        && let Err(e) = std::fs::remove_dir_all(&uploads)
    {
        tracing::warn!(dir = %uploads.display(), error = %e, "cannot remove old image uploads");
    }
    let images = ImageService::new(Arc::new(store), registry).context("starting image pulls")?;
    let config = ContainerConfig {
        state_dir: container_dir(state_dir),
        cgroup_parent: options.cgroup_parent.clone(),
        cgroup_root: options.cgroup_root.clone(),
        userns: options.userns,
        ..ContainerConfig::default()
    };
    let container = match ContainerBackend::new(config, images.clone()) {
        Ok(mut b) => {
            if let Some(net) = &options.network {
                match b.enable_bridge(net.clone()) {
                    Ok(()) => tracing::info!(
                        bridge = %net.bridge,
                        subnet = %net.subnet,
                        table = %net.table,
                        "bridge networking ready"
                    ),
                    Err(reason) => tracing::warn!(
                        reason,
                        "bridge networking unavailable; `network: bridge` jobs will fail with \
                         this reason"
                    ),
                }
            }
            Ok(Arc::new(b) as Arc<dyn Backend>)
        }
        Err(e) => {
            let reason = format!("this worker cannot run container jobs: {e}");
            tracing::warn!(
                reason,
                "container backend unavailable; Wasm jobs are unaffected"
            );
            Err(reason)
        }
    };
    tracing::info!(
        store = %root.display(),
        insecure = ?options.insecure_registries,
        allowed = ?options.allowed_registries,
        container = container.is_ok(),
        "images ready"
    );
    Ok(ImageHost { images, container })
}

/// The text of a pull error as a job's `image_error` detail or an API message: the error itself,
/// plus a hint when a registry that is not listed as insecure seems to speak plain HTTP.
pub fn describe_image_error(e: &ImageError, options: &RegistryOptions) -> String {
    let text = e.to_string();
    if let ImageError::Registry { reference, .. } = e
        && let Ok(image) = ImageRef::parse(reference)
        && !options
            .insecure_registries
            .iter()
            .any(|r| r == image.registry())
        && looks_like_tls_failure(&text)
    {
        let host = image.registry();
        return format!(
            "{text} (registries are reached over HTTPS; if {host} serves plain HTTP, list it with \
             --insecure-registry {host} or NEKTON_INSECURE_REGISTRIES on the worker)"
        );
    }
    text
}

fn looks_like_tls_failure(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "tls",
        "ssl",
        "certificate",
        "corrupt message",
        "invalidcontenttype",
        "wrong version",
        "handshake",
    ]
    .iter()
    .any(|needle| t.contains(needle))
}

/// Reads registry credentials from a Docker-style `config.json`.
pub fn load_registry_auth(path: &Path) -> anyhow::Result<HashMap<String, Credentials>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading registry credentials from {}", path.display()))?;
    parse_registry_auth(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "registry credentials in {}: {e} (expected {{\"auths\": {{\"HOST\": {{\"auth\": \
             base64(user:password)}} | {{\"username\", \"password\"}} | {{\"registrytoken\"}}}}}})",
            path.display()
        )
    })
}

/// The registry host a `config.json` key names: `https://index.docker.io/v1/` → `index.docker.io`.
fn auth_key_host(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_ascii_lowercase()
}

/// Parses the `auths` map of a Docker-style `config.json`. Error messages name the host, never
/// a secret.
pub fn parse_registry_auth(json: &[u8]) -> Result<HashMap<String, Credentials>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("not valid JSON: {e}"))?;
    let auths = match value.get("auths") {
        None => return Ok(HashMap::new()),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => return Err("`auths` is not an object".into()),
    };
    let mut out = HashMap::new();
    for (key, entry) in auths {
        let host = auth_key_host(key);
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        let creds = if let Some(token) = field("registrytoken") {
            Credentials::Bearer {
                token: token.to_string(),
            }
        } else if let Some(auth) = field("auth") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| format!("`auths.{key}.auth` is not base64"))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| format!("`auths.{key}.auth` is not UTF-8 user:password"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| format!("`auths.{key}.auth` is not base64 of user:password"))?;
            Credentials::Basic {
                username: user.to_string(),
                password: password.to_string(),
            }
        } else if let (Some(user), Some(password)) = (field("username"), field("password")) {
            Credentials::Basic {
                username: user.to_string(),
                password: password.to_string(),
            }
        } else if let Some(token) = field("identitytoken") {
            Credentials::Bearer {
                token: token.to_string(),
            }
        } else {
            return Err(format!(
                "`auths.{key}` has no usable credentials (auth, username+password or registrytoken)"
            ));
        };
        out.insert(host, creds);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        let json = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                "ghcr.io": {{"registrytoken": "tok"}}
            }}, "credsStore": "desktop"}}"#
        );
        let m = parse_registry_auth(json.as_bytes()).unwrap();
        assert_eq!(
            m["index.docker.io"],
            Credentials::Basic {
                username: "alice".into(),
                password: "s3:cret".into()
            }
        );
        assert_eq!(
            m["127.0.0.1:5000"],
            Credentials::Basic {
                username: "bob".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            m["ghcr.io"],
            Credentials::Bearer {
                token: "tok".into()
            }
        );
        assert!(parse_registry_auth(b"{}").unwrap().is_empty());
    }

    #[test]
    fn bad_auth_files_name_the_host_not_the_secret() {
        let e = parse_registry_auth(br#"{"auths": {"r.io": {"auth": "!!secret!!"}}}"#).unwrap_err();
        assert!(e.contains("r.io") && !e.contains("secret!!"), "{e}");
        let e = parse_registry_auth(br#"{"auths": {"r.io": {}}}"#).unwrap_err();
        assert!(e.contains("r.io"), "{e}");
        assert!(parse_registry_auth(b"[").is_err());
    }
}
