//! Import of an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`), as a directory or
//! as a tar of one (optionally gzip/zstd-compressed) — for hosts without registry access. Every
//! blob goes through the same verification and extraction as a pull.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;

use super::extract::split_entry_path;
use super::fsx;
use super::oci::{Descriptor, Document, parse_document};
use super::pull::{Progress, Source, Stats, blocking};
use super::store::{BlobWriter, Lease};
use super::{Digest, ImageError, ImageRecord, ImageRef, ImageService, ImageStore, ProgressFn};

const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

fn import_error(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Import {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A layout directory, read beneath a directory fd without following symlinks.
struct DirSource {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl DirSource {
    fn open_blob(&self, digest: &Digest) -> Result<File, ImageError> {
        let rel = PathBuf::from("blobs/sha256").join(digest.hex());
        fsx::open_beneath(self.fd.as_fd(), &rel, OFlag::O_RDONLY)
            .map(File::from)
            .map_err(|e| {
                import_error(
                    &self.path,
                    format!("blob {digest}: {}", std::io::Error::from(e)),
                )
            })
    }
}

fn read_capped(mut r: impl Read, max: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    r.by_ref()
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ImageError::io("read", Path::new(what), e))?;
    if out.len() as u64 > max {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            limit: max,
        });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Source for DirSource {
    async fn manifest(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let file = self.open_blob(digest)?;
        let what = format!("manifest {digest}");
        blocking(move || read_capped(file, max, &what)).await
    }

    async fn blob(&self, desc: &Descriptor, out: &mut BlobWriter) -> Result<(), ImageError> {
        let file = self.open_blob(&desc.digest)?;
        // One byte more than declared, so an oversized blob is detected rather than truncated.
        let mut reader = tokio::io::AsyncReadExt::take(
            tokio::fs::File::from_std(file),
            desc.size.saturating_add(1),
        );
        tokio::io::copy(&mut reader, out)
            .await
            .map(drop)
            .map_err(|e| import_error(&self.path, format!("blob {}: {e}", desc.digest)))
    }
}

/// A layout tar whose blobs were already ingested (verified) into the store.
struct IngestedSource {
    path: PathBuf,
    store: Arc<ImageStore>,
}

#[async_trait::async_trait]
impl Source for IngestedSource {
    async fn manifest(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, ImageError> {
        let (store, d, path) = (self.store.clone(), digest.clone(), self.path.clone());
        blocking(move || {
            store.read_blob(&d, max).map_err(|e| match e {
                ImageError::NotFound(_) => {
                    import_error(&path, format!("manifest {d} is missing from the layout"))
                }
                other => other,
            })
        })
        .await
    }

    async fn blob(&self, desc: &Descriptor, _out: &mut BlobWriter) -> Result<(), ImageError> {
        Err(import_error(
            &self.path,
            format!("blob {} is missing from the layout", desc.digest),
        ))
    }
}

fn check_layout_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    #[derive(serde::Deserialize)]
    struct LayoutFile {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let f: LayoutFile = serde_json::from_slice(bytes)
        .map_err(|e| import_error(path, format!("invalid oci-layout file: {e}")))?;
    if !f.version.starts_with("1.") {
        return Err(import_error(
            path,
            format!("unsupported imageLayoutVersion {}", f.version),
        ));
    }
    Ok(())
}

/// Reads a layout tar: `oci-layout` and `index.json` into memory, every `blobs/sha256/<hex>` into
/// the store (verified against its name, pinned by the returned lease). Other entries are ignored;
/// nothing is ever written at a path taken from the tar.
fn ingest_tar(store: &ImageStore, path: &Path) -> Result<(Vec<u8>, Vec<u8>, Lease), ImageError> {
    let file = File::open(path).map_err(ImageError::io_at("open", path))?;
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let head = input
        .fill_buf()
        .map_err(ImageError::io_at("read", path))?
        .to_vec();
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(ImageError::io_at("decompress", path))?,
        )
    } else {
        Box::new(input)
    };
    let max_doc = store.limits().max_document_bytes;
    let mut archive = tar::Archive::new(reader);
    let mut lease = store.pin([]);
    let (mut layout, mut index) = (None, None);
    let malformed = |e: std::io::Error| import_error(path, format!("reading the tar: {e}"));
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        if !matches!(
            entry.header().entry_type(),
            tar::EntryType::Regular | tar::EntryType::Continuous
        ) {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let Ok(components) = split_entry_path(&raw) else {
            continue;
        };
        match components.as_slice() {
            [b"oci-layout"] => layout = Some(read_capped(&mut entry, max_doc, "oci-layout")?),
            [b"index.json"] => index = Some(read_capped(&mut entry, max_doc, "index.json")?),
            [b"blobs", b"sha256", hex] => {
                let Some(digest) = std::str::from_utf8(hex).ok().and_then(Digest::from_hex) else {
                    continue;
                };
                let size = entry.size();
                lease.add(&digest);
                store.ingest_blob(&mut entry, &digest, Some(size))?;
            }
            _ => {}
        }
    }
    let layout =
        layout.ok_or_else(|| import_error(path, "not an OCI image layout: no oci-layout file"))?;
    let index =
        index.ok_or_else(|| import_error(path, "not an OCI image layout: no index.json"))?;
    Ok((layout, index, lease))
}

/// The reference an index.json entry names, if it names a full one.
fn entry_name(entry: &Descriptor) -> Option<&str> {
    if let Some(name) = entry.annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return Some(name);
    }
    // `ref.name` is often only a tag (`latest`): use it only when it looks like a name.
    entry
        .annotations
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
        .filter(|n| n.contains('/') || n.contains(':'))
}

fn choose_entries(
    path: &Path,
    entries: Vec<Descriptor>,
    wanted: Option<ImageRef>,
) -> Result<Vec<(Descriptor, ImageRef)>, ImageError> {
    let names = || {
        entries
            .iter()
            .map(|e| {
                e.annotations
                    .get(ANNOTATION_CONTAINERD_NAME)
                    .or_else(|| e.annotations.get(ANNOTATION_REF_NAME))
                    .map_or_else(|| e.digest.to_string(), String::clone)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if entries.is_empty() {
        return Err(import_error(path, "index.json lists no image"));
    }
    match wanted {
        Some(image) if entries.len() == 1 => Ok(vec![(entries[0].clone(), image)]),
        Some(image) => {
            let matches = |e: &Descriptor| {
                let by_name = entry_name(e)
                    .and_then(|n| ImageRef::parse(n).ok())
                    .is_some_and(|r| r == image);
                let by_tag = e
                    .annotations
                    .get(ANNOTATION_REF_NAME)
                    .is_some_and(|t| Some(t.as_str()) == image.tag());
                let by_digest = image.digest() == Some(&e.digest);
                by_name || by_tag || by_digest
            };
            match entries.iter().find(|e| matches(e)) {
                Some(e) => Ok(vec![(e.clone(), image)]),
                None => Err(import_error(
                    path,
                    format!(
                        "the layout holds {} images ({}); none matches {image}",
                        entries.len(),
                        names()
                    ),
                )),
            }
        }
        None => {
            let mut out = Vec::new();
            for e in &entries {
                if let Some(name) = entry_name(e) {
                    out.push((e.clone(), ImageRef::parse(name)?));
                }
            }
            if out.is_empty() {
                return Err(import_error(
                    path,
                    format!(
                        "no image in the layout has a full name ({}): pass a reference",
                        names()
                    ),
                ));
            }
            Ok(out)
        }
    }
}

impl ImageService {
    /// Imports the image(s) of an OCI image layout at `path` — a directory, or a tar of one
    /// (plain, gzip or zstd). With `reference`, the layout's only image (or the one whose name or
    /// tag matches) is stored under that reference; without, every image the layout names with a
    /// full reference (`io.containerd.image.name`, or an `org.opencontainers.image.ref.name` that
    /// is more than a tag) is imported. Blobs are verified exactly as in a pull.
    pub async fn import(
        &self,
        path: &Path,
        reference: Option<&str>,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        let wanted = reference.map(ImageRef::parse).transpose()?;
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(ImageError::io_at("stat", path))?;
        let progress = Progress::new(progress);
        let store = self.store().clone();
        let max_doc = store.limits().max_document_bytes;
        if meta.is_dir() {
            let fd = Arc::new(fsx::open_dir_path(path).map_err(ImageError::io_at("open", path))?);
            let (layout, index) = {
                let (fd, p) = (fd.clone(), path.to_path_buf());
                blocking(move || {
                    let read = |name: &str| {
                        let f = fsx::open_beneath(fd.as_fd(), Path::new(name), OFlag::O_RDONLY)
                            .map_err(|e| {
                                import_error(
                                    &p,
                                    format!(
                                        "not an OCI image layout: {name}: {}",
                                        std::io::Error::from(e)
                                    ),
                                )
                            })?;
                        read_capped(File::from(f), max_doc, name)
                    };
                    Ok((read("oci-layout")?, read("index.json")?))
                })
                .await?
            };
            let source = DirSource {
                path: path.to_path_buf(),
                fd,
            };
            self.import_from(&source, path, &layout, &index, wanted, &progress)
                .await
        } else {
            let (layout, index, lease) = {
                let (s, p) = (store.clone(), path.to_path_buf());
                blocking(move || ingest_tar(&s, &p)).await?
            };
            let source = IngestedSource {
                path: path.to_path_buf(),
                store,
            };
            let result = self
                .import_from(&source, path, &layout, &index, wanted, &progress)
                .await;
            drop(lease);
            result
        }
    }

    async fn import_from(
        &self,
        source: &dyn Source,
        path: &Path,
        layout: &[u8],
        index: &[u8],
        wanted: Option<ImageRef>,
        progress: &Progress,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        check_layout_file(path, layout)?;
        let entries = match parse_document(index, "index.json")? {
            Document::Index { manifests, .. } => manifests,
            Document::Manifest(_) => {
                return Err(import_error(path, "index.json is a manifest, not an index"));
            }
        };
        let max_doc = self.store().limits().max_document_bytes;
        let mut out = Vec::new();
        for (entry, image) in choose_entries(path, entries, wanted)? {
            let top = source.manifest(&entry.digest, max_doc).await?;
            let actual = Digest::of(&top);
            if actual != entry.digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest {} in {}", entry.digest, path.display()),
                    expected: entry.digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            let stats = Stats::default();
            let record = self
                .inner()
                .materialize(source, &image, top, progress, &stats)
                .await?;
            tracing::info!(reference = %record.reference, path = %path.display(), "image imported");
            out.push(record);
        }
        Ok(out)
    }
}
