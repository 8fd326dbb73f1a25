//! Shared helpers of the image tests: tar layers built byte by byte (so malicious ones can be
//! made), compression, and a real local registry (Debian's `docker-registry`) with a pusher.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_store::{Digest, Platform, media_types};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use serde_json::json;
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_700_000_000;

/// Fails (never skips) when not root: extraction preserves owners and makes whiteout devices.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the image tests must run as root (they chown, mknod whiteouts and set trusted.* xattrs)"
    );
}

/// Builds a tar stream entry by entry, writing names raw (no sanitising), so tests can produce
/// exactly what a hostile image would contain.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(path: &str, kind: EntryType, size: u64, mode: u32, link: Option<&str>) -> Header {
        let mut h = Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        assert!(path.len() <= name.len(), "test path too long: {path}");
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        if let Some(link) = link {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        h
    }

    fn push(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = Self::header(path, EntryType::Regular, data.len() as u64, mode, None);
        self.push(h, data)
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut h = Self::header(path, EntryType::Regular, data.len() as u64, mode, None);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, data)
    }

    /// A regular file of `len` zero bytes, streamed (never held in memory).
    pub fn zeros(&mut self, path: &str, len: u64) -> &mut Self {
        let h = Self::header(path, EntryType::Regular, len, 0o644, None);
        self.b
            .append(&h, std::io::Read::take(std::io::repeat(0), len))
            .unwrap();
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let h = Self::header(path, EntryType::Directory, 0, mode, None);
        self.push(h, &[])
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = Self::header(path, EntryType::Symlink, 0, 0o777, Some(target));
        self.push(h, &[])
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let h = Self::header(path, EntryType::Link, 0, 0o644, Some(target));
        self.push(h, &[])
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(path, EntryType::Char, 0, 0o666, None);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    pub fn block_dev(&mut self, path: &str) -> &mut Self {
        let h = Self::header(path, EntryType::Block, 0, 0o660, None);
        self.push(h, &[])
    }

    pub fn fifo(&mut self, path: &str) -> &mut Self {
        let h = Self::header(path, EntryType::Fifo, 0, 0o644, None);
        self.push(h, &[])
    }

    /// A GNU long name (`'L'`) or long link name (`'K'`) entry applying to the next entry.
    pub fn gnu_long(&mut self, kind: u8, value: &[u8]) -> &mut Self {
        let kind = match kind {
            b'L' => EntryType::GNULongName,
            b'K' => EntryType::GNULongLink,
            other => panic!("not a GNU long entry type: {}", other as char),
        };
        let mut data = value.to_vec();
        data.push(0);
        let h = Self::header("././@LongLink", kind, data.len() as u64, 0o644, None);
        self.push(h, &data)
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let rest = 1 + key.len() + 1 + value.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = Self::header(
            "PaxHeaders/x",
            EntryType::XHeader,
            data.len() as u64,
            0o644,
            None,
        );
        self.push(h, &data)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha(data: &[u8]) -> String {
    Digest::of(data).to_string()
}

/// Entries of a directory tree (relative paths), for "nothing was written" checks.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Reads an xattr without following symlinks; `None` if unset.
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: `p` and `n` are NUL-terminated strings and `buf` a writable buffer of `buf.len()`
    // bytes, all alive for the duration of the call.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return None;
    }
    buf.truncate(rc as usize);
    Some(buf)
}

// ---- the local registry ----

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The account of [`Registry::start_with_test_user`].
pub const TEST_USER: &str = "tester";
pub const TEST_PASSWORD: &str = "s3cret-pw";

/// This host's architecture as OCI names it (`amd64`, `arm64`): what pulls resolve an index to.
pub fn host_arch() -> String {
    Platform::host().architecture
}

/// Debian's `docker-registry`, bound to 127.0.0.1 on a free port, storing into a temp dir.
/// Killed (by its pid) when dropped.
pub struct Registry {
    pub port: u16,
    pub data: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Registry {
    pub fn start(base: &Path) -> Self {
        Self::start_with(base, "")
    }

    /// With basic auth: the only account is [`TEST_USER`] / [`TEST_PASSWORD`] (htpasswd).
    pub fn start_with_test_user(base: &Path) -> Self {
        // bcrypt (cost 4) of TEST_PASSWORD.
        let htpasswd = base.join("htpasswd");
        fs::write(
            &htpasswd,
            format!("{TEST_USER}:$2b$04$kp9PwXIvRQkV4xurPsvcoeB7pOpnhB4ZNRAjhuglY4Iy6flp4kXFi\n"),
        )
        .unwrap();
        Self::start_with(
            base,
            &format!(
                "auth:\n  htpasswd:\n    realm: nekton-test\n    path: {}\n",
                htpasswd.display()
            ),
        )
    }

    /// With extra top-level YAML (e.g. an `auth:` section).
    pub fn start_with(base: &Path, extra_yaml: &str) -> Self {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: the registry tests need Debian's docker-registry package \
             (apt-get install -y docker-registry)"
        );
        let data = base.join("registry-data");
        fs::create_dir_all(&data).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = base.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n{extra_yaml}",
                data.display()
            ),
        )
        .unwrap();
        let log = base.join("registry.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Self {
            port,
            data,
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on 127.0.0.1:{port}:\n{}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Blob downloads of `repo` seen by the registry so far (its access log).
    pub fn blob_gets(&self, repo: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/sha256:");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Where the registry keeps the bytes of a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.data
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pushes blobs and manifests (built by the tests, byte-exact) over the registry API.
pub struct Pusher {
    client: oci_client::Client,
    host: String,
}

/// A layer ready to push: the blob, its media type, and the digest of its uncompressed tar.
#[derive(Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub diff_id: String,
}

impl Layer {
    pub fn gzip(tar: &[u8]) -> Self {
        Self {
            blob: gzip(tar),
            media_type: media_types::OCI_LAYER_GZIP.into(),
            diff_id: sha(tar),
        }
    }

    pub fn docker_gzip(tar: &[u8]) -> Self {
        Self {
            blob: gzip(tar),
            media_type: media_types::DOCKER_LAYER_GZIP.into(),
            diff_id: sha(tar),
        }
    }

    pub fn zstd(tar: &[u8]) -> Self {
        Self {
            blob: zstd(tar),
            media_type: media_types::OCI_LAYER_ZSTD.into(),
            diff_id: sha(tar),
        }
    }

    pub fn plain(tar: &[u8]) -> Self {
        Self {
            blob: tar.to_vec(),
            media_type: media_types::OCI_LAYER_TAR.into(),
            diff_id: sha(tar),
        }
    }

    pub fn digest(&self) -> String {
        sha(&self.blob)
    }
}

/// What a pushed image is made of.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub manifest: String,
    pub manifest_size: usize,
    pub config: String,
    pub layers: Vec<String>,
}

pub fn config_json(arch: &str, layers: &[Layer], cmd: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Cmd": cmd,
            "Env": ["PATH=/bin:/usr/bin", "HOME=/root"],
            "WorkingDir": "/",
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
    }))
    .unwrap()
}

impl Pusher {
    /// A pusher that authenticates with basic credentials.
    pub async fn with_basic_auth(host: &str, user: &str, password: &str) -> Self {
        let p = Self::new(host);
        p.client
            .store_auth_if_needed(host, &RegistryAuth::Basic(user.into(), password.into()))
            .await;
        p
    }

    pub fn new(host: &str) -> Self {
        image_store::install_crypto_provider();
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        });
        Self {
            client,
            host: host.to_string(),
        }
    }

    fn reference(&self, repo: &str, tag_or_digest: &str) -> oci_client::Reference {
        if tag_or_digest.starts_with("sha256:") {
            oci_client::Reference::with_digest(
                self.host.clone(),
                repo.to_string(),
                tag_or_digest.to_string(),
            )
        } else {
            oci_client::Reference::with_tag(
                self.host.clone(),
                repo.to_string(),
                tag_or_digest.to_string(),
            )
        }
    }

    pub async fn blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha(data);
        self.client
            .push_blob(&self.reference(repo, "x"), data.to_vec(), &digest)
            .await
            .unwrap_or_else(|e| panic!("push blob {digest} to {repo}: {e}"));
        digest
    }

    pub async fn manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
        body: &[u8],
        media_type: &str,
    ) -> String {
        self.client
            .push_manifest_raw(
                &self.reference(repo, tag_or_digest),
                body.to_vec(),
                media_type.parse().unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("push manifest {repo}:{tag_or_digest}: {e}"));
        sha(body)
    }

    /// Pushes an OCI image index of `manifests` (each a pushed image and its `platform` object)
    /// as `repo:tag`; returns the index's digest.
    pub async fn index(
        &self,
        repo: &str,
        tag: &str,
        manifests: &[(serde_json::Value, Pushed)],
    ) -> String {
        let entries: Vec<_> = manifests
            .iter()
            .map(|(platform, pushed)| {
                json!({
                    "mediaType": media_types::OCI_MANIFEST,
                    "digest": pushed.manifest,
                    "size": pushed.manifest_size,
                    "platform": platform,
                })
            })
            .collect();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_INDEX,
            "manifests": entries,
        }))
        .unwrap();
        self.manifest(repo, tag, &index, media_types::OCI_INDEX)
            .await
    }

    /// Pushes an image manifest with its config and layers; tagged `tag` (or only by digest if
    /// `tag` is a digest placeholder `"@"`).
    pub async fn image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Layer],
        config: &[u8],
        config_media_type: &str,
    ) -> Pushed {
        let mut layer_digests = Vec::new();
        for l in layers {
            layer_digests.push(self.blob(repo, &l.blob).await);
        }
        let config_digest = self.blob(repo, config).await;
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_types::OCI_MANIFEST,
            "config": {"mediaType": config_media_type, "digest": config_digest, "size": config.len()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": l.media_type, "digest": l.digest(), "size": l.blob.len()
            })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let digest = sha(&body);
        let target = if tag == "@" { digest.as_str() } else { tag };
        self.manifest(repo, target, &body, media_types::OCI_MANIFEST)
            .await;
        Pushed {
            manifest: digest,
            manifest_size: body.len(),
            config: config_digest,
            layers: layer_digests,
        }
    }

    pub fn auth() -> RegistryAuth {
        RegistryAuth::Anonymous
    }
}

/// A busybox-static root filesystem layer (uncompressed tar).
pub fn busybox_rootfs_tar() -> Vec<u8> {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: the image tests need Debian's busybox-static package \
         (apt-get install -y busybox-static)"
    );
    let bytes = fs::read(busybox).unwrap();
    let mut t = TarBuilder::new();
    t.dir("bin/", 0o755)
        .file("bin/busybox", &bytes, 0o755)
        .symlink("bin/sh", "busybox")
        .symlink("bin/echo", "busybox")
        .symlink("bin/cat", "/bin/busybox")
        .dir("etc/", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)
        .dir("tmp/", 0o1777)
        .dir("root/", 0o700)
        .dir("proc/", 0o555)
        .dir("sys/", 0o555)
        .dir("dev/", 0o755);
    t.finish()
}

/// Symlinks as real images ship them, `(link, exact target)`: absolute targets, relative targets
/// inside the layer, and relative targets that climb above the layer root (Docker and containerd
/// keep those: `..` at the container's `/` stays at `/`). Parent directories are implicit.
pub const REAL_WORLD_LINKS: &[(&str, &str)] = &[
    // Debian: alternatives (absolute, chained), usrmerge, os-release, mtab into /proc, doc
    // changelogs pointing far above the root.
    ("etc/alternatives/awk", "/usr/bin/mawk"),
    ("usr/bin/awk", "/etc/alternatives/awk"),
    ("lib64", "usr/lib64"),
    ("etc/os-release", "../usr/lib/os-release"),
    ("usr/lib/os-release", "../../etc/debian_version"),
    ("etc/mtab", "../proc/self/mounts"),
    ("etc/localtime", "/usr/share/zoneinfo/Etc/UTC"),
    (
        "usr/share/doc/libc6/changelog.gz",
        "../../../../../../../var/lib/nekton-test/changelog",
    ),
    (
        "usr/share/doc/far/up",
        "../../../../../../../../../../../../..",
    ),
    // Alpine: busybox applets (absolute), libraries one level up.
    ("sbin/init", "/bin/busybox"),
    ("usr/lib/libcrypto.so.3", "../../lib/libcrypto.so.3"),
    ("etc/ssl/cert.pem", "certs/ca-certificates.crt"),
    // distroless: /var/run and /var/lock into /run.
    ("var/run", "/run"),
    ("var/lock", "../run/lock"),
    // The layer root's parent, directly.
    ("up", ".."),
];

/// Files the links of [`REAL_WORLD_LINKS`] resolve to, `(path, contents)`.
pub const REAL_WORLD_FILES: &[(&str, &[u8])] = &[
    ("etc/debian_version", b"12.5\n"),
    ("var/lib/nekton-test/changelog", b"changelog\n"),
    ("etc/ssl/certs/ca-certificates.crt", b"certificates\n"),
];

/// Adds [`REAL_WORLD_FILES`] and [`REAL_WORLD_LINKS`] to `t`.
pub fn add_real_world_links(t: &mut TarBuilder) -> &mut TarBuilder {
    for (path, data) in REAL_WORLD_FILES {
        t.file(path, data, 0o644);
    }
    for (link, target) in REAL_WORLD_LINKS {
        t.symlink(link, target);
    }
    t
}

/// Asserts that every link of [`REAL_WORLD_LINKS`] is in `root` as a symlink with its exact target.
pub fn assert_real_world_links(root: &Path) {
    for (link, target) in REAL_WORLD_LINKS {
        let path = root.join(link);
        let m = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{link}: {e}"));
        assert!(m.file_type().is_symlink(), "{link} is not a symlink");
        assert_eq!(
            fs::read_link(&path).unwrap(),
            Path::new(target),
            "target of {link}"
        );
    }
}

/// A gzip layer that expands to `files` tar entries `bomb/<i>` of `file_len` zero bytes each
/// (`files == 0`: one entry `bomb` declaring `repeat * file_len` bytes, followed by that many
/// zeros). Built from concatenated gzip members — one compressed run of `file_len` zeros reused —
/// so 4 GiB of expansion costs about 4 MiB and nothing of that size is ever in memory. No
/// end-of-archive blocks: extraction is meant to stop at a cap long before.
pub fn gzip_bomb(files: usize, repeat: usize, file_len: u64) -> Vec<u8> {
    assert_eq!(file_len % 512, 0, "tar data comes in 512-byte blocks");
    let zeros = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let chunk = vec![0u8; 64 << 10];
        let mut left = file_len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            e.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        e.finish().unwrap()
    };
    let header = |path: &str, size: u64| {
        let mut h = Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_cksum();
        gzip(h.as_bytes())
    };
    let mut out = Vec::new();
    if files == 0 {
        out.extend(header("bomb", repeat as u64 * file_len));
        for _ in 0..repeat {
            out.extend_from_slice(&zeros);
        }
    } else {
        for i in 0..files {
            out.extend(header(&format!("bomb/{i}"), file_len));
            out.extend_from_slice(&zeros);
        }
    }
    out
}
