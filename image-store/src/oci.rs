//! The JSON documents of the OCI image spec, parsed leniently (unknown fields ignored) and then
//! validated strictly (digests, sizes, media types) before anything is fetched or stored.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::media::{Platform, is_index, is_manifest};
use super::{Digest, ImageError};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RawDescriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<RawPlatform>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawPlatform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl RawPlatform {
    pub fn to_platform(&self) -> Platform {
        Platform::new(&self.os, &self.architecture, self.variant.as_deref())
    }
}

/// A descriptor whose digest and size have been validated.
#[derive(Debug, Clone)]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
}

impl RawDescriptor {
    pub fn validate(&self, what: &str) -> Result<Descriptor, ImageError> {
        let digest = Digest::parse(&self.digest).map_err(|_| ImageError::Malformed {
            what: what.to_string(),
            reason: format!(
                "descriptor digest `{}` is not sha256:<hex>",
                super::display_bytes(self.digest.as_bytes())
            ),
        })?;
        let size = u64::try_from(self.size).map_err(|_| ImageError::Malformed {
            what: what.to_string(),
            reason: format!("negative size for {digest}"),
        })?;
        Ok(Descriptor {
            media_type: self.media_type.clone(),
            digest,
            size,
            platform: self.platform.as_ref().map(RawPlatform::to_platform),
            annotations: self.annotations.clone().unwrap_or_default(),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDoc {
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

/// A manifest or an index.
#[derive(Debug, Clone)]
pub(crate) enum Document {
    Index { manifests: Vec<Descriptor> },
    Manifest(Manifest),
}

#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// Parses a manifest or index (`what` names it in errors). The media type comes from the
/// document's `mediaType`, or from its shape when that field is absent (it is optional in OCI).
pub(crate) fn parse_document(bytes: &[u8], what: &str) -> Result<Document, ImageError> {
    let malformed = |reason: String| ImageError::Malformed {
        what: what.to_string(),
        reason,
    };
    let doc: RawDoc = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if doc.schema_version != Some(2) {
        return Err(ImageError::Unsupported {
            what: "manifest schema version",
            value: format!("{:?} (only 2 is supported)", doc.schema_version),
        });
    }
    let media_type = match doc.media_type.clone() {
        Some(m) => m,
        None if doc.manifests.is_some() => super::media_types::OCI_INDEX.to_string(),
        None if doc.config.is_some() => super::media_types::OCI_MANIFEST.to_string(),
        None => return Err(malformed("neither a manifest nor an index".to_string())),
    };
    if is_index(&media_type) {
        let manifests = doc
            .manifests
            .ok_or_else(|| malformed("index without `manifests`".to_string()))?
            .iter()
            .map(|d| d.validate(what))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Document::Index { manifests });
    }
    if !is_manifest(&media_type) {
        return Err(ImageError::Unsupported {
            what: "manifest media type",
            value: media_type,
        });
    }
    let config = doc
        .config
        .ok_or_else(|| malformed("manifest without `config`".to_string()))?
        .validate(what)?;
    let layers = doc
        .layers
        .unwrap_or_default()
        .iter()
        .map(|d| d.validate(what))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Document::Manifest(Manifest {
        media_type,
        config,
        layers,
    }))
}

/// The parts of an image config this store records.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawConfigFile {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<RawRunConfig>,
    #[serde(default)]
    pub rootfs: Option<RawRootFs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawRunConfig {
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "StopSignal", default)]
    pub stop_signal: Option<String>,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawRootFs {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub diff_ids: Option<Vec<String>>,
}

pub(crate) fn parse_config(bytes: &[u8]) -> Result<RawConfigFile, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
        what: "image config".to_string(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn parses_manifests_and_indexes() {
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D}","size":5}}]}}"#
        );
        let Document::Manifest(m) = parse_document(m.as_bytes(), "m").unwrap() else {
            panic!()
        };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 5);
        let i = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":7,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        );
        let Document::Index { manifests, .. } = parse_document(i.as_bytes(), "i").unwrap() else {
            panic!()
        };
        assert_eq!(
            manifests[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn refuses_bad_descriptors() {
        for bad in [
            r#"{"schemaVersion":2,"config":{"digest":"sha256:../../etc","size":1}}"#.to_string(),
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D}","size":-1}}}}"#),
            format!(r#"{{"schemaVersion":1,"config":{{"digest":"{D}","size":1}}}}"#),
            r#"{"schemaVersion":2}"#.to_string(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+json","config":{{"digest":"{D}","size":1}}}}"#
            ),
        ] {
            assert!(parse_document(bad.as_bytes(), "x").is_err(), "{bad}");
        }
    }
}
