//! `nekton image pull|ls|rm|import|gc`: the image store of the server's worker host.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::client::{Client, PullStreamEvent};
use super::commands::{ServerArgs, time_cell};
use crate::api::types::{Image, ImageKindView, PullResult};

/// `nekton image`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image into the server's image store, with a progress bar per layer.
    Pull {
        /// The image, e.g. `busybox:1.36`, `ghcr.io/org/app@sha256:...`, `127.0.0.1:5000/x:1`.
        #[arg(value_name = "REFERENCE")]
        reference: String,
        /// Ask the registry again even if the image is stored (only new blobs are downloaded).
        #[arg(long)]
        always: bool,
        /// No progress bars; print only the result.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the stored images.
    Ls {
        /// Print the images as JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove images, then delete the blobs and layers no other image uses.
    Rm {
        #[arg(value_name = "REFERENCE", required = true)]
        references: Vec<String>,
    },
    /// Import an OCI image layout (for hosts without registry access): a directory (sent as a
    /// tar made on the fly) or a `.tar` / `.tar.gz` / `.tar.zst` of one (sent as it is).
    Import {
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Store the image under this reference (needed when the layout does not name its
        /// image, or holds several).
        #[arg(long, value_name = "REFERENCE")]
        reference: Option<String>,
    },
    /// Delete blobs and layers no stored image uses.
    Gc,
}

/// Runs `nekton image ...`; returns the exit code.
pub async fn image(args: ImageArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        ImageCommand::Pull {
            reference,
            always,
            quiet,
        } => {
            let result = if quiet {
                client.pull_image(&reference, always).await?
            } else {
                pull_with_progress(&client, &reference, always).await?
            };
            let how = if result.from_cache {
                "already stored".to_string()
            } else {
                format!(
                    "{} downloaded in {} blobs, {} blobs already stored",
                    human_bytes(result.stats.bytes_downloaded),
                    result.stats.blobs_downloaded,
                    result.stats.blobs_cached
                )
            };
            crate::outln!(
                "{} {} ({}, {})",
                result.image.reference,
                result.image.manifest_digest,
                describe_kind(&result.image),
                how
            )?;
            Ok(0)
        }
        ImageCommand::Ls { json } => {
            let list = client.list_images().await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&list.images)?)?;
            } else {
                crate::out!("{}", images_table(&list.images))?;
            }
            Ok(0)
        }
        ImageCommand::Rm { references } => {
            let mut failed = false;
            for r in &references {
                match client.delete_image(r).await {
                    Ok(image) => crate::outln!("removed {}", image.reference)?,
                    Err(e) => {
                        eprintln!("nekton: {r}: {e:#}");
                        failed = true;
                    }
                }
            }
            match client.gc_images().await {
                Ok(gc) if gc.freed_bytes > 0 => {
                    crate::outln!("freed {}", human_bytes(gc.freed_bytes))?
                }
                Ok(_) => {}
                Err(e) => eprintln!("nekton: garbage collection after removal failed: {e:#}"),
            }
            Ok(i32::from(failed))
        }
        ImageCommand::Import { path, reference } => {
            let body = import_body(&path).await?;
            let result = client
                .import_image(body, reference.as_deref())
                .await
                .with_context(|| format!("importing {} failed", path.display()))?;
            for image in &result.images {
                crate::outln!(
                    "imported {} {} ({})",
                    image.reference,
                    image.manifest_digest,
                    describe_kind(image)
                )?;
            }
            Ok(0)
        }
        ImageCommand::Gc => {
            let gc = client.gc_images().await?;
            crate::outln!(
                "removed {} blobs and {} layers, freed {}",
                gc.removed_blobs.len(),
                gc.removed_layers.len(),
                human_bytes(gc.freed_bytes)
            )?;
            Ok(0)
        }
    }
}

fn describe_kind(image: &Image) -> String {
    match (image.kind, &image.platform) {
        (ImageKindView::Wasm, _) => "wasm".to_string(),
        (ImageKindView::Container, Some(p)) => format!("container {p}"),
        (ImageKindView::Container, None) => "container".to_string(),
    }
}

fn short_digest(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

/// Follows the SSE pull stream with one progress bar per layer (on stderr; hidden when stderr is
/// not a terminal).
async fn pull_with_progress(client: &Client, reference: &str, always: bool) -> Result<PullResult> {
    let mut events = client.pull_image_events(reference, always).await?;
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template(
        "{prefix:>12} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let bar_for = |bars: &mut HashMap<String, ProgressBar>, digest: &str, total: u64| {
        bars.entry(digest.to_string())
            .or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(style.clone());
                bar.set_prefix(short_digest(digest).to_string());
                bar
            })
            .clone()
    };
    while let Some(ev) = events.next().await {
        match ev? {
            PullStreamEvent::Resolved(r) => {
                let _ = multi.println(format!(
                    "{}: {} ({} layers{})",
                    r.reference,
                    r.manifest_digest,
                    r.layers.len(),
                    r.platform.map(|p| format!(", {p}")).unwrap_or_default()
                ));
                for l in &r.layers {
                    bar_for(&mut bars, &l.digest, l.total);
                }
            }
            PullStreamEvent::Progress(b) => {
                let bar = bar_for(&mut bars, &b.digest, b.total);
                bar.set_length(b.total);
                bar.set_position(b.done);
                if b.done >= b.total {
                    bar.set_message("downloaded");
                }
            }
            PullStreamEvent::Cached(b) => {
                if let Some(bar) = bars.get(&b.digest) {
                    bar.set_position(b.total);
                    bar.set_message("already stored");
                }
            }
            PullStreamEvent::Extracting(b) => {
                if let Some(bar) = bars.get(&b.digest) {
                    bar.set_message("extracting");
                }
            }
            PullStreamEvent::Extracted(b) => {
                if let Some(bar) = bars.get(&b.digest) {
                    bar.finish_with_message(format!("extracted ({})", human_bytes(b.done)));
                }
            }
            PullStreamEvent::Done(result) => {
                for bar in bars.values() {
                    if !bar.is_finished() {
                        bar.finish();
                    }
                }
                return Ok(*result);
            }
        }
    }
    bail!(
        "the pull stream ended without a result; the pull may go on on the server (pull again to see)"
    )
}

/// The upload body of `image import`: a directory becomes a tar made on the fly (in a blocking
/// thread, streamed), a file is sent as it is.
async fn import_body(path: &Path) -> Result<reqwest::Body> {
    let meta = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_file() {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot open {}", path.display()))?;
        return Ok(reqwest::Body::wrap_stream(
            tokio_util::io::ReaderStream::new(file),
        ));
    }
    if !meta.is_dir() {
        bail!(
            "{} is neither a directory nor a file: give an OCI image layout directory or a tar of one",
            path.display()
        );
    }
    if !path.join("oci-layout").is_file() || !path.join("index.json").is_file() {
        bail!(
            "{} is not an OCI image layout (it needs `oci-layout` and `index.json`); export one with \
             e.g. `skopeo copy docker://IMAGE oci:DIR:TAG`",
            path.display()
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    let root = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let writer = ChannelWriter { tx: tx.clone() };
        let mut builder = tar::Builder::new(io::BufWriter::with_capacity(256 * 1024, writer));
        builder.follow_symlinks(false);
        let result = append_tree(&mut builder, &root, Path::new(""))
            .and_then(|()| builder.into_inner())
            .and_then(|mut w| w.flush());
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(reqwest::Body::wrap_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// Appends `root/rel` recursively with paths relative to `root` (no `./` prefix), sorted.
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, root: &Path, rel: &Path) -> io::Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&name, entry.path())?;
            append_tree(builder, root, &name)?;
        } else if kind.is_file() {
            builder.append_path_with_name(entry.path(), &name)?;
        }
    }
    Ok(())
}

/// `Write` into a channel of byte chunks (the request body stream).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload was aborted"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `1.5 MiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn images_table(images: &[Image]) -> String {
    let header = [
        "REFERENCE",
        "KIND",
        "PLATFORM",
        "SIZE",
        "UNPACKED",
        "LAYERS",
        "DIGEST",
        "STORED",
    ];
    let rows: Vec<[String; 8]> = images
        .iter()
        .map(|i| {
            [
                i.reference.clone(),
                match i.kind {
                    ImageKindView::Container => "container".into(),
                    ImageKindView::Wasm => "wasm".into(),
                },
                i.platform.clone().unwrap_or_else(|| "-".into()),
                human_bytes(i.size_bytes),
                human_bytes(i.unpacked_size_bytes),
                i.layers.len().to_string(),
                short_digest(&i.manifest_digest).to_string(),
                time_cell(&i.stored_at),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_humans() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn directories_become_relative_tars() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(dir.path().join("oci-layout"), b"{}").unwrap();
        std::fs::write(dir.path().join("blobs/sha256/ab"), b"x").unwrap();
        let mut b = tar::Builder::new(Vec::new());
        append_tree(&mut b, dir.path(), Path::new("")).unwrap();
        let bytes = b.into_inner().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            ["blobs", "blobs/sha256", "blobs/sha256/ab", "oci-layout"]
        );
    }
}
