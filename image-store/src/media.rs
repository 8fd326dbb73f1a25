//! Media types and platforms.

use std::fmt;

/// The media types this module understands.
pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";

    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
    pub const WASM_CONFIG_V1: &str = "application/vnd.wasm.config.v1+json";

    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_NONDIST_TAR: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar";
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const OCI_LAYER_NONDIST_ZSTD: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    pub const WASM_LAYER: &str = "application/wasm";
    pub const WASM_CONTENT_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
    pub const WASM_COMPONENT_LAYER_V0: &str =
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";

    /// What we ask registries for.
    pub const ACCEPTED_MANIFESTS: &[&str] = &[
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
    ];
}

use media_types::*;

/// How a layer's tar stream is compressed (declared by its media type; extraction also checks the
/// magic bytes, which win).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What a layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    /// A filesystem changeset (tar), to be extracted.
    Tar(Compression),
    /// A WebAssembly module or component, stored as a blob and never extracted.
    Wasm,
}

/// Classifies a layer media type; `None` for anything this store does not accept.
pub fn layer_format(media_type: &str) -> Option<LayerFormat> {
    // Parameters (`; charset=...`) are not part of the type.
    let media_type = media_type.split(';').next().unwrap_or("").trim();
    Some(match media_type {
        OCI_LAYER_TAR | OCI_LAYER_NONDIST_TAR | DOCKER_LAYER_TAR => {
            LayerFormat::Tar(Compression::None)
        }
        OCI_LAYER_GZIP | OCI_LAYER_NONDIST_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_LAYER_GZIP => {
            LayerFormat::Tar(Compression::Gzip)
        }
        OCI_LAYER_ZSTD | OCI_LAYER_NONDIST_ZSTD | DOCKER_LAYER_ZSTD => {
            LayerFormat::Tar(Compression::Zstd)
        }
        WASM_LAYER | WASM_CONTENT_LAYER_V1 | WASM_COMPONENT_LAYER_V0 => LayerFormat::Wasm,
        _ => return None,
    })
}

pub(crate) fn is_wasm_config(media_type: &str) -> bool {
    matches!(media_type, WASM_CONFIG_V0 | WASM_CONFIG_V1)
}

pub(crate) fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

pub(crate) fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// An OS/architecture pair in OCI (Go) spelling: `linux/amd64`, `linux/arm64/v8`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform this process runs on, from `std::env::consts`.
    pub fn host() -> Self {
        Self::from_rust(std::env::consts::OS, std::env::consts::ARCH)
    }

    /// Maps Rust's `OS`/`ARCH` names to OCI's.
    pub fn from_rust(os: &str, arch: &str) -> Self {
        let little = cfg!(target_endian = "little");
        let os = match os {
            "macos" => "darwin",
            other => other,
        };
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if little => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "mips64" if little => ("mips64le", None),
            "mips" if little => ("mipsle", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Self::new(os, architecture, variant)
    }

    /// True if an image built for `image` runs here. A missing variant on either side matches
    /// (`arm64` images rarely say `v8`).
    pub fn accepts(&self, image: &Platform) -> bool {
        self.os == image.os
            && self.architecture == image.architecture
            && match (&self.variant, &image.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// How well an index entry fits: `None` if it does not run here, higher is better.
    pub(crate) fn score(&self, image: &Platform) -> Option<u8> {
        if !self.accepts(image) {
            return None;
        }
        Some(match (&self.variant, &image.variant) {
            (Some(_), Some(_)) | (None, None) => 2,
            _ => 1,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_platform_uses_oci_names() {
        assert_eq!(
            Platform::from_rust("linux", "x86_64").to_string(),
            "linux/amd64"
        );
        assert_eq!(
            Platform::from_rust("linux", "aarch64").to_string(),
            "linux/arm64/v8"
        );
        assert_eq!(
            Platform::from_rust("linux", "arm").to_string(),
            "linux/arm/v7"
        );
        let host = Platform::host();
        assert_eq!(host.os, std::env::consts::OS);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(host.to_string(), "linux/amd64");
    }

    #[test]
    fn platform_matching() {
        let arm64 = Platform::from_rust("linux", "aarch64");
        assert!(arm64.accepts(&Platform::new("linux", "arm64", None)));
        assert!(arm64.accepts(&Platform::new("linux", "arm64", Some("v8"))));
        assert!(!arm64.accepts(&Platform::new("linux", "arm64", Some("v9"))));
        assert!(!arm64.accepts(&Platform::new("linux", "amd64", None)));
        assert!(
            arm64.score(&Platform::new("linux", "arm64", Some("v8")))
                > arm64.score(&Platform::new("linux", "arm64", None))
        );
        let amd64 = Platform::new("linux", "amd64", None);
        assert!(!amd64.accepts(&Platform::new("windows", "amd64", None)));
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            layer_format(OCI_LAYER_GZIP),
            Some(LayerFormat::Tar(Compression::Gzip))
        );
        assert_eq!(
            layer_format(DOCKER_LAYER_GZIP),
            Some(LayerFormat::Tar(Compression::Gzip))
        );
        assert_eq!(
            layer_format(OCI_LAYER_ZSTD),
            Some(LayerFormat::Tar(Compression::Zstd))
        );
        assert_eq!(
            layer_format(OCI_LAYER_TAR),
            Some(LayerFormat::Tar(Compression::None))
        );
        assert_eq!(layer_format("application/wasm"), Some(LayerFormat::Wasm));
        assert_eq!(layer_format(WASM_CONTENT_LAYER_V1), Some(LayerFormat::Wasm));
        assert_eq!(layer_format("application/json"), None);
    }
}
