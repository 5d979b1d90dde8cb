//! On-disk layout of the Hugging Face hub cache, name validation, hashing, atomic
//! writes and the per-blob process lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// Read size for hashing and streaming: large enough that SHA-NI, not syscalls, bounds speed.
pub(crate) const BUF_SIZE: usize = 1 << 20;

/// `org/name` or `name`; each part `[A-Za-z0-9._-]{1,96}`, no `..` or `--` (the
/// cache-dir separator), not starting or ending with `-` or `.` (huggingface_hub's rules).
pub fn validate_repo_id(repo: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid_arg(format!(
            "invalid repo id {repo:?}: {why}"
        )))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 2 {
        return bad("expected `org/name` or `name`");
    }
    for p in parts {
        if p.is_empty() || p.len() > 96 {
            return bad("each part must be 1 to 96 characters");
        }
        if !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad("only A-Z a-z 0-9 . _ - are allowed");
        }
        if p.contains("..") || p.contains("--") {
            return bad("`..` and `--` are not allowed");
        }
        if p.starts_with(['-', '.']) || p.ends_with(['-', '.']) {
            return bad("a part may not start or end with `-` or `.`");
        }
    }
    Ok(())
}

/// A relative file path as named by the server (or a revision name such as `refs/pr/1`):
/// `/`-separated, no empty, `.` or `..` components, no backslash or control characters.
/// Purely lexical; callers that create directories re-check containment on disk.
pub fn validate_rel_path(path: &str, what: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid_arg(format!(
            "refusing {what} {path:?}: {why}"
        )))
    };
    if path.is_empty() || path.len() > 1024 {
        return bad("empty or too long");
    }
    if path.starts_with('/') {
        return bad("absolute path");
    }
    if path.contains('\\') {
        return bad("backslash");
    }
    if path.chars().any(|c| c.is_control()) {
        return bad("control character");
    }
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." {
            return bad("empty, `.` or `..` component");
        }
        // Refused up front: the file system would refuse it only after the blob was
        // downloaded, leaving it orphaned.
        if comp.len() > NAME_MAX {
            return bad("a name part is longer than the 255 bytes file systems allow");
        }
    }
    // Belt and braces: std's view must agree that every component is a plain name.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return bad("not a plain relative path");
    }
    Ok(())
}

/// Blob names and commit hashes come from server headers and become file names, so
/// only plain tokens are accepted.
pub fn validate_token(s: &str, what: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::new(
            ErrorKind::Network,
            format!("server sent an invalid {what}: {s:?}"),
        ));
    }
    Ok(())
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `"abc"`, `W/"abc"` → `abc` (huggingface_hub's etag normalisation).
pub fn normalize_etag(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"').to_string()
}

/// `org/name` → `models--org--name`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// Inverse of [`repo_folder`]; `None` for directories that are not model repos.
pub fn repo_id_from_folder(name: &str) -> Option<String> {
    let rest = name.strip_prefix("models--")?;
    let id = rest.replacen("--", "/", 1);
    validate_repo_id(&id).ok().map(|_| id)
}

/// Target of the snapshot symlink for `path`: up to the repo dir, then `blobs/<blob>`.
pub fn link_target(path: &str, blob: &str) -> PathBuf {
    let depth = path.split('/').count() + 1; // commit dir + nested dirs
    let mut t = PathBuf::new();
    for _ in 0..depth {
        t.push("..");
    }
    t.push("blobs");
    t.push(blob);
    t
}

/// Resolve a snapshot entry only when it is a regular file (or a symlink chain ending in
/// one) whose real location stays inside `repo_dir`; never follows links out of the cache.
pub fn resolve_inside(entry: &Path, repo_dir: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(entry).ok()?;
    if !(meta.file_type().is_symlink() || meta.is_file()) {
        return None;
    }
    let real = fs::canonicalize(entry).ok()?;
    let base = fs::canonicalize(repo_dir).ok()?;
    if real.starts_with(&base) && fs::metadata(&real).ok()?.is_file() {
        Some(real)
    } else {
        None
    }
}

pub fn sha256_hex(h: Sha256) -> String {
    let d = h.finalize();
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// SHA-256 of a byte slice, lowercase hex.
pub fn sha256_bytes(data: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(data);
    sha256_hex(h)
}

/// SHA-256 of a file, lowercase hex, read in 1 MiB blocks (sha2 picks SHA-NI / ARMv8
/// SHA instructions at run time).
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Sha256::new();
    hash_reader(&mut f, &mut |b| h.update(b), u64::MAX).map_err(|e| Error::io("read", path, e))?;
    Ok(sha256_hex(h))
}

/// Git's blob id of a file: SHA-1 of `blob <len>\0` then the bytes. The hub names
/// non-LFS files by it (`blobId`, `oid`, resolve's ETag), so it is their checksum.
pub fn git_blob_sha1_file(path: &Path) -> Result<String> {
    let mut f = open_nofollow(path, false)?;
    let len = f.metadata().map_err(|e| Error::io("stat", path, e))?.len();
    let mut h = git_blob_hasher(len);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(hex(&h.finalize()))
}

/// Git's blob id of a byte slice (see [`git_blob_sha1_file`]).
pub fn git_blob_sha1(data: &[u8]) -> String {
    let mut h = git_blob_hasher(data.len() as u64);
    h.update(data);
    hex(&h.finalize())
}

/// A SHA-1 primed with git's blob header for `len` bytes of content.
pub fn git_blob_hasher(len: u64) -> sha1::Sha1 {
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    h
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Open a cache file without following a symlink at its final component (a link
/// planted there would make us read or write outside the cache). `write`: create if
/// missing, append. A planted symlink (or, for writing, a hard link sharing an inode
/// with a file elsewhere) is removed and the open retried; anything else that is not a
/// regular file is refused.
pub fn open_nofollow(path: &Path, write: bool) -> Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    for _ in 0..3 {
        let mut o = OpenOptions::new();
        // O_NONBLOCK: a FIFO planted here must not hang the open; it is refused below.
        o.read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        if write {
            o.append(true).create(true);
        }
        match o.open(path) {
            Ok(f) => {
                let meta = f.metadata().map_err(|e| Error::io("stat", path, e))?;
                if !meta.is_file() {
                    return Err(not_ours(path, "is not a regular file"));
                }
                if write && meta.nlink() > 1 {
                    // Appending would change the other name's file too: drop our name.
                    drop(f);
                    fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
                    continue;
                }
                return Ok(f);
            }
            Err(e) if write && e.raw_os_error() == Some(libc::ELOOP) => {
                remove_symlink(path)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(not_ours(path, "is a symlink"));
            }
            Err(e) => return Err(Error::io("open", path, e)),
        }
    }
    Err(not_ours(path, "keeps being replaced by a link"))
}

fn not_ours(path: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        format!(
            "refusing {}: it {why}, which the cache never creates",
            path.display()
        ),
    )
}

/// Remove `path` only if it is a symlink (the link, never its target).
fn remove_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(path).map_err(|e| Error::io("remove symlink", path, e))
        }
        _ => Ok(()),
    }
}

/// Create `base/rel` one component at a time, never through a symlink: a symlink
/// planted where a cache folder belongs is removed (not followed) and replaced by a real
/// folder; a file there is refused. `base` is the cache root, which the caller chose.
pub fn create_dirs_nofollow(base: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = base.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(Error::invalid_arg(format!(
                "refusing folder {}: not a plain relative path",
                rel.display()
            )));
        };
        cur.push(name);
        for attempt in 0..3 {
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => break,
                Ok(m) if m.file_type().is_symlink() => remove_symlink(&cur)?,
                Ok(_) => return Err(not_ours(&cur, "is not a folder")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("stat", &cur, e)),
            }
            match fs::create_dir(&cur) {
                Ok(()) => break,
                // Made by a concurrent caller (or re-planted): look again.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 2 => {}
                Err(e) => return Err(Error::io("create directory", &cur, e)),
            }
        }
    }
    Ok(cur)
}

/// Feed up to `limit` bytes of `r` to `h` (one or more hashers); returns the count read.
pub fn hash_reader(r: &mut dyn Read, h: &mut dyn FnMut(&[u8]), limit: u64) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut done = 0u64;
    while done < limit {
        let want = (limit - done).min(BUF_SIZE as u64) as usize;
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h(&buf[..n]);
        done += n as u64;
    }
    Ok(done)
}

/// Longest file name (one path component) in bytes on common file systems (ext4,
/// XFS, btrfs, APFS).
pub const NAME_MAX: usize = 255;

/// A unique sibling name for temp files (pid + counter + time) so concurrent writers
/// never share one.
pub fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("tmp");
    // Cut so that a name of NAME_MAX bytes still gets a temp name within NAME_MAX.
    let mut cut = name.len().min(NAME_MAX - 64);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = &name[..cut];
    path.with_file_name(format!(".{name}.tmp-{}-{n}-{nanos}", std::process::id()))
}

/// Write `data` to `path` via temp file + fsync + rename, so readers see old or new.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    }
    let tmp = temp_sibling(path);
    let res = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(data).map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Point `link` at `target` atomically: a temp symlink renamed over the final name, so
/// the snapshot never holds a half-made or dangling entry of ours.
pub fn symlink_atomic(target: &Path, link: &Path) -> Result<()> {
    let tmp = temp_sibling(link);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io("symlink", &tmp, e))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("rename", link, e)
    })
}

/// Exclusive advisory lock on `blobs/<blob>.lock` (flock). Dropping it unlinks the lock
/// file while still holding the lock, and acquirers check the inode they locked is still
/// the one on disk, so the file can be removed without racing a waiter.
pub struct BlobLock {
    file: File,
    path: PathBuf,
}

impl BlobLock {
    /// Try until `timeout`, sleeping between attempts; `wait` is called on each retry and
    /// may return false to give up (cancel).
    pub fn acquire(path: &Path, timeout: Duration, wait: &mut dyn FnMut() -> bool) -> Result<Self> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        use std::os::unix::io::AsRawFd;
        let start = Instant::now();
        loop {
            // No-follow: a symlink planted at the lock's name must not make us create
            // or lock a file elsewhere; it is removed and the open retried.
            let file = match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    remove_symlink(path)?;
                    continue;
                }
                Err(e) => return Err(Error::io("open lock", path, e)),
            };
            // SAFETY: flock on a valid, owned descriptor; no memory is shared.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                let same = match (file.metadata(), fs::symlink_metadata(path)) {
                    (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                    _ => false,
                };
                if same {
                    return Ok(BlobLock {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                // The holder before us unlinked it; lock the new file instead.
                continue;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io("lock", path, err));
            }
            if start.elapsed() >= timeout {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{} is locked by another download for over {}s",
                        path.display(),
                        timeout.as_secs()
                    ),
                ));
            }
            if !wait() {
                return Err(Error::cancelled(
                    "cancelled while waiting for a download lock",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BlobLock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        let _ = fs::remove_file(&self.path);
        // SAFETY: unlocking our own open descriptor.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// fsync a directory so a rename inside it survives a crash (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Percent-encode for a URL path segment; `keep_slash` leaves `/` for file paths.
pub fn url_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
