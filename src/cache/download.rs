//! Verified, resumable, cross-process-locked downloads into the cache.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::hub::{Ctx, HubResponse};
use super::layout::{
    self, hash_reader, is_commit_hash, is_sha256_hex, link_target, sha256_hex, validate_rel_path,
    BlobLock, BUF_SIZE,
};
use super::{Cache, Manifest, Progress, VariantStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{log, LogLevel};

fn offline_err(repo: &str, rev: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Offline,
        format!("offline mode: {what} of {repo}@{rev} is not in the cache"),
    )
}

/// `bytes a-b/t` → (a, t).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let r = v.trim().strip_prefix("bytes")?.trim();
    let (span, total) = r.split_once('/')?;
    let start = span.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

impl Cache {
    /// Download one file of `repo@rev` (or find it cached) and return its snapshot path.
    /// A cached file is returned without any network access, also offline.
    pub fn download_file(
        &self,
        repo: &str,
        rev: &str,
        path: &str,
        progress: &mut Progress,
    ) -> Result<PathBuf> {
        Cache::check(repo, rev)?;
        validate_rel_path(path, "file path")?;
        if let Some(c) = self.download_commit(repo, rev) {
            // Lengths from the manifest of the very commit the file was cached from:
            // a branch's newer manifest may list a different size.
            let size = || {
                let m = self.manifest(repo, &c).ok().filter(|m| m.commit == c)?;
                m.file(path)?.size
            };
            if let Some(p) = self.cached_intact(repo, &c, path, size)? {
                self.follow_ref(repo, rev, &c);
                return Ok(p);
            }
        }
        if self.offline {
            return Err(offline_err(repo, rev, path));
        }
        let m = self.manifest_for_download(repo, rev)?;
        self.fetch_file(&m, path, progress)
    }

    /// Download every file (all shards) of one variant, selected by quant label or variant
    /// name; returns snapshot paths, first shard first.
    pub fn download_variant(
        &self,
        repo: &str,
        rev: &str,
        quant: &str,
        progress: &mut Progress,
    ) -> Result<Vec<PathBuf>> {
        Cache::check(repo, rev)?;
        // Fully cached → no network at all.
        let mut missing = None;
        if let Ok(m) = self.manifest_at(repo, rev, self.download_commit(repo, rev)) {
            if let Ok(v) = m.variant(quant) {
                if v.status == VariantStatus::Downloaded {
                    let paths = v
                        .files
                        .iter()
                        .map(|f| self.cached_intact(repo, &m.commit, f, || m.file(f)?.size))
                        .collect::<Result<Vec<_>>>()?;
                    if let Some(paths) = paths.into_iter().collect::<Option<Vec<_>>>() {
                        self.follow_ref(repo, rev, &m.commit);
                        return Ok(paths);
                    }
                }
                let absent: Vec<&str> = v
                    .files
                    .iter()
                    .filter(|f| self.cached_file(repo, &m.commit, f).is_none())
                    .map(String::as_str)
                    .collect();
                missing = Some(absent.join(", "));
            }
        }
        if self.offline {
            // Name what is missing rather than the whole variant when part is cached.
            return Err(match missing {
                Some(files) if !files.is_empty() => Error::new(
                    ErrorKind::Offline,
                    format!("offline mode: {quant} of {repo}@{rev} is only partly cached; missing {files}"),
                ),
                _ => offline_err(repo, rev, quant),
            });
        }
        let m = self.manifest_for_download(repo, rev)?;
        let v = m.variant(quant)?.clone();
        v.files
            .iter()
            .map(|p| self.fetch_file(&m, p, progress))
            .collect()
    }

    /// Online, a branch's ref follows the commit a cached file was served from, best
    /// effort (the cache may be read-only), as huggingface_hub does.
    fn follow_ref(&self, repo: &str, rev: &str, commit: &str) {
        if !self.offline && !is_commit_hash(rev) {
            let _ = self.write_ref(repo, rev, commit);
        }
    }

    /// A commit's file list never changes, so a saved one is reused; a branch is
    /// re-resolved online so we fetch what it points to now.
    fn manifest_for_download(&self, repo: &str, rev: &str) -> Result<Manifest> {
        if is_commit_hash(rev) {
            if let Ok(m) = self.manifest(repo, rev) {
                return Ok(m);
            }
        }
        self.scan(repo, rev)
    }

    fn fetch_file(&self, m: &Manifest, path: &str, progress: &mut Progress) -> Result<PathBuf> {
        let repo = m.repo_id.as_str();
        validate_rel_path(path, "file path")?;
        let entry = m.file(path);
        if let Some(p) = self.cached_intact(repo, &m.commit, path, || entry?.size)? {
            self.follow_ref(repo, &m.revision, &m.commit);
            return Ok(p);
        }
        if self.offline {
            return Err(offline_err(repo, &m.revision, path));
        }
        let entry = entry.ok_or_else(|| {
            Error::not_found(format!("file {path} not found in {repo}@{}", m.revision))
        })?;
        let ctx = Ctx {
            repo,
            rev: &m.revision,
            path: Some(path),
        };
        let url = self.hub.resolve_url(repo, &m.commit, path);
        let (blob, expected, size) = match entry.blob_name() {
            Some(b) => (b.to_string(), entry.sha256.clone(), entry.size),
            None => {
                // The API gave no hash: ask the resolve endpoint, as huggingface_hub does.
                let r = self.hub.request("HEAD", &url, &ctx)?;
                let lfs = r
                    .linked_etag
                    .clone()
                    .or(r.etag.clone())
                    .filter(|e| is_sha256_hex(e));
                let blob = r.linked_etag.clone().or(r.etag.clone()).ok_or_else(|| {
                    Error::new(ErrorKind::Network, format!("{url}: no ETag in reply"))
                })?;
                let size = entry.size.or(r.linked_size).or(r.content_length);
                (blob, lfs, size)
            }
        };
        layout::validate_token(&blob, "blob name")?;
        // huggingface_hub's order: snapshot folder and ref before the blob, so a
        // failed download leaves a repo its `scan_cache_dir` accepts.
        create_dirs_nofollow(
            &self.root,
            &[&layout::repo_folder(repo), "snapshots", &m.commit],
        )?;
        if !is_commit_hash(&m.revision) {
            self.write_ref(repo, &m.revision, &m.commit)?;
        }
        let blobs = self.repo_dir(repo).join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| Error::io("create directory", &blobs, e))?;
        let blob_path = blobs.join(&blob);
        let lock_path = blobs.join(format!("{blob}.lock"));
        let total = size.unwrap_or(0);
        // Another thread or process may be fetching the same blob: wait, then reuse it.
        let _lock = BlobLock::acquire(&lock_path, self.lock_timeout, &mut || {
            progress(path, 0, total)
        })?;
        if blob_path.is_file() && check_size(&blob_path, size).is_err() {
            // Cut short by a power failure before the kernel wrote it out (see
            // `CacheOptions::durable`): the hub's bytes replace it.
            fs::remove_file(&blob_path).map_err(|e| Error::io("remove", &blob_path, e))?;
            log(
                LogLevel::Warn,
                &format!("{}: cut short; fetching it again", blob_path.display()),
            );
        }
        if !blob_path.is_file() {
            let job = Job {
                url: &url,
                ctx: &ctx,
                path,
                blobs: &blobs,
                blob: &blob,
                expected,
                size,
            };
            self.stream(job, progress)?;
        }
        let link = self.link(repo, &m.commit, path, &blob)?;
        if !is_commit_hash(&m.revision) {
            self.write_ref(repo, &m.revision, &m.commit)?;
        }
        Ok(link)
    }

    /// `path` as cached at `commit`, if its length matches the hub's (`size`, asked only
    /// when a copy exists). A copy cut short (see `CacheOptions::durable`) is `None`
    /// online, so it is fetched again, and a `Checksum` error offline.
    fn cached_intact(
        &self,
        repo: &str,
        commit: &str,
        path: &str,
        size: impl FnOnce() -> Option<u64>,
    ) -> Result<Option<PathBuf>> {
        let Some(p) = self.cached_file(repo, commit, path) else {
            return Ok(None);
        };
        match check_size(&p, size()) {
            Ok(()) => Ok(Some(p)),
            Err(e) if self.offline => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// Create `snapshots/<commit>/<path>` → `../../blobs/<blob>` (depth-adjusted).
    fn link(&self, repo: &str, commit: &str, path: &str, blob: &str) -> Result<PathBuf> {
        let dir = self.repo_dir(repo);
        let snap = dir.join("snapshots").join(commit);
        let link = snap.join(path);
        let parent = link.parent().unwrap_or(&snap);
        fs::create_dir_all(parent).map_err(|e| Error::io("create directory", parent, e))?;
        // A symlinked directory planted in the snapshot could send the link elsewhere.
        let canon = |p: &Path| fs::canonicalize(p).map_err(|e| Error::io("resolve", p, e));
        if !canon(parent)?.starts_with(canon(&snap)?) || !canon(&snap)?.starts_with(canon(&dir)?) {
            return Err(Error::invalid_arg(format!(
                "refusing {path}: its snapshot path leaves {}",
                dir.display()
            )));
        }
        layout::symlink_atomic(&link_target(path, blob), &link)?;
        Ok(link)
    }

    /// Stream into `blobs/<blob>.incomplete`, hashing as bytes arrive, then verify and
    /// rename. Resume re-hashes the existing `.incomplete` prefix once (the only re-read
    /// of downloaded data) and continues with `Range: bytes=<len>-`.
    fn stream(&self, job: Job, progress: &mut Progress) -> Result<()> {
        let Job {
            url,
            ctx,
            path,
            blobs,
            blob,
            mut expected,
            size,
        } = job;
        let inc = blobs.join(format!("{blob}.incomplete"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&inc)
            .map_err(|e| Error::io("open", &inc, e))?;
        let mut hasher = Sha256::new();
        let mut have = file
            .metadata()
            .map_err(|e| Error::io("stat", &inc, e))?
            .len();
        if have > 0 && size.is_some_and(|s| have > s) {
            file.set_len(0)
                .map_err(|e| Error::io("truncate", &inc, e))?;
            have = 0;
        } else if have > 0 {
            let mut r = File::open(&inc).map_err(|e| Error::io("open", &inc, e))?;
            have =
                hash_reader(&mut r, &mut hasher, have).map_err(|e| Error::io("read", &inc, e))?;
        }
        let mut total = size.unwrap_or(0);
        let mut attempt = 0u32;
        let mut buf = vec![0u8; BUF_SIZE];
        // Hashing and writing run on a second thread so they overlap the network reads.
        let mut sink = Sink::new(file, hasher, inc.clone(), self.durable);
        let retries = self.hub.retries;
        // Count a transient failure; give up with `err` once the budget is spent.
        let retry = |attempt: &mut u32, err: Error| -> Result<()> {
            if *attempt >= retries {
                return Err(err.context(format!("after {retries} retries")));
            }
            let wait = self.hub.backoff(*attempt);
            log(
                LogLevel::Warn,
                &format!(
                    "{err}; retry {} of {retries} in {} ms",
                    *attempt + 1,
                    wait.as_millis()
                ),
            );
            std::thread::sleep(wait);
            *attempt += 1;
            Ok(())
        };
        'request: loop {
            if size.is_some_and(|s| have == s) {
                break;
            }
            if !progress(path, have, total) {
                return Err(cancelled(path, &inc));
            }
            let resp: HubResponse =
                match self
                    .hub
                    .request_once("GET", url, (have > 0).then_some(have), ctx)
                {
                    Ok(r) => r,
                    Err(f) if f.retryable => {
                        retry(&mut attempt, f.err)?;
                        continue;
                    }
                    Err(f) => return Err(f.err),
                };
            if expected.is_none() {
                expected = resp.linked_etag.clone().filter(|e| is_sha256_hex(e));
            }
            let end = match resp.status {
                // Nothing past `have`: what we hold is the whole file; verify it.
                416 if have > 0 => break,
                206 if have > 0 => {
                    let cr = resp.content_range.as_deref().and_then(parse_content_range);
                    match cr {
                        Some((start, t)) if start == have => {
                            total = t.unwrap_or(total);
                            resp.content_length.map(|n| have + n)
                        }
                        _ => {
                            // Not the range we asked for: start over from zero.
                            sink.reset()?;
                            have = 0;
                            retry(
                                &mut attempt,
                                Error::new(ErrorKind::Network, format!("{url}: bad Content-Range")),
                            )?;
                            continue;
                        }
                    }
                }
                200 => {
                    if have > 0 {
                        // The server ignored Range and sends everything: restart.
                        sink.reset()?;
                        have = 0;
                    }
                    if let Some(n) = resp.content_length {
                        total = n;
                    }
                    resp.content_length
                }
                s => {
                    return Err(Error::new(
                        ErrorKind::Network,
                        format!("{url}: unexpected HTTP {s}"),
                    ))
                }
            };
            let mut body = resp.body;
            // Bytes read but not yet handed to the sink; flushed before any retry so
            // the file always holds exactly `have` bytes when a Range request goes out.
            let mut fill = 0usize;
            let mut flushed_at = std::time::Instant::now();
            loop {
                let n = match body.read(&mut buf[fill..]) {
                    Ok(0) if end.is_some_and(|e| have < e) => 0,
                    Ok(0) => {
                        sink.push(&buf[..fill])?;
                        break 'request;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        sink.push(&buf[..fill])?;
                        let err = Error::new(
                            ErrorKind::Network,
                            format!("{path}: connection dropped after {have} bytes: {e}"),
                        );
                        retry(&mut attempt, err)?;
                        continue 'request;
                    }
                };
                if n == 0 {
                    sink.push(&buf[..fill])?;
                    let err = Error::new(
                        ErrorKind::Network,
                        format!("{path}: body ended early after {have} bytes"),
                    );
                    retry(&mut attempt, err)?;
                    continue 'request;
                }
                fill += n;
                have += n as u64;
                // Hand over 128 KiB at a time (or what a slow link gave in 100 ms): few
                // wake-ups and progress calls, yet a killed process keeps its bytes.
                if fill >= FLUSH_AT
                    || end.is_some_and(|e| have >= e)
                    || flushed_at.elapsed() >= std::time::Duration::from_millis(100)
                {
                    sink.push(&buf[..fill])?;
                    fill = 0;
                    flushed_at = std::time::Instant::now();
                    if !progress(path, have, total.max(have)) {
                        sink.finish()?;
                        return Err(cancelled(path, &inc));
                    }
                }
            }
        }
        let (file, hasher) = sink.finish()?;
        let actual = sha256_hex(hasher);
        let bad_size = size.is_some_and(|s| s != have);
        let bad_sha = expected
            .as_deref()
            .is_some_and(|e| !e.eq_ignore_ascii_case(&actual));
        if bad_size || bad_sha {
            drop(file);
            let _ = fs::remove_file(&inc);
            return Err(Error::new(
                ErrorKind::Checksum,
                format!(
                    "{path}: downloaded {have} bytes with sha256 {actual}, expected {} bytes with sha256 {}; discarded",
                    size.map_or("?".to_string(), |s| s.to_string()),
                    expected.as_deref().unwrap_or("?")
                ),
            ));
        }
        if self.durable {
            file.sync_all().map_err(|e| Error::io("fsync", &inc, e))?;
        }
        drop(file);
        let blob_path = blobs.join(blob);
        fs::rename(&inc, &blob_path).map_err(|e| Error::io("rename", &blob_path, e))?;
        if self.durable {
            layout::sync_dir(blobs);
        }
        log(
            LogLevel::Info,
            &format!(
                "{}/{path}: {have} bytes, sha256 {actual} verified{}",
                ctx.repo,
                if self.durable { ", fsynced" } else { "" }
            ),
        );
        Ok(())
    }
}

/// Create `base/a/b/…` one level at a time, refusing any existing level that is not a
/// real directory (a planted symlink would send the folders outside the cache).
fn create_dirs_nofollow(base: &Path, parts: &[&str]) -> Result<()> {
    let mut p = base.to_path_buf();
    for part in parts {
        p.push(part);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "{} is not a directory (a symlink?); refusing to write through it",
                        p.display()
                    ),
                ))
            }
            Err(_) => match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(Error::io("create directory", &p, e)),
            },
        }
    }
    Ok(())
}

/// A cached file whose length differs from the hub's is damaged. Only the length is
/// checked: it is free, whereas re-hashing is `Cache::verify`'s job.
fn check_size(p: &Path, expected: Option<u64>) -> Result<()> {
    let Some(want) = expected else {
        return Ok(());
    };
    let len = fs::metadata(p).map_err(|e| Error::io("stat", p, e))?.len();
    if len == want {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Checksum,
        format!(
            "{}: cached file is {len} bytes but the hub's is {want}; it is damaged and is fetched again when online",
            p.display()
        ),
    ))
}

fn cancelled(path: &str, inc: &Path) -> Error {
    Error::cancelled(format!(
        "download of {path} cancelled; partial data kept in {} for resume",
        inc.display()
    ))
}

struct Job<'a> {
    url: &'a str,
    ctx: &'a Ctx<'a>,
    path: &'a str,
    blobs: &'a Path,
    blob: &'a str,
    expected: Option<String>,
    size: Option<u64>,
}

const WRITEBACK_AT: u64 = 8 << 20;

/// Ask the kernel to start writing a range back to disk now (no waiting), so the
/// final fsync is short instead of flushing the whole file at once.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Bytes gathered from the socket before they go to the writer thread.
const FLUSH_AT: usize = 128 * 1024;

enum SinkMsg {
    Data(Vec<u8>),
    Reset,
}

/// Writes and hashes downloaded bytes on a worker thread, in order.
struct Sink {
    tx: Option<std::sync::mpsc::SyncSender<SinkMsg>>,
    worker: Option<std::thread::JoinHandle<(File, Sha256, Option<Error>)>>,
}

impl Sink {
    /// `writeback`: start disk writes as data arrives (durable mode), so the final
    /// fsync is short. Without it the page cache absorbs the file at memory speed.
    fn new(file: File, hasher: Sha256, inc: PathBuf, writeback: bool) -> Sink {
        let (tx, rx) = std::sync::mpsc::sync_channel::<SinkMsg>(8);
        let worker = std::thread::spawn(move || {
            let (mut file, mut hasher) = (file, hasher);
            // Where unsynced data starts: writeback is started every WRITEBACK_AT
            // bytes so the fsync before the rename has little left to do.
            let mut pos = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut synced = pos;
            for msg in rx {
                let r = match msg {
                    SinkMsg::Data(d) => {
                        hasher.update(&d);
                        let r = file.write_all(&d).map_err(|e| Error::io("write", &inc, e));
                        pos += d.len() as u64;
                        if writeback && pos - synced >= WRITEBACK_AT {
                            start_writeback(&file, synced, pos - synced);
                            synced = pos;
                        }
                        r
                    }
                    SinkMsg::Reset => {
                        hasher = Sha256::new();
                        pos = 0;
                        synced = 0;
                        file.set_len(0).map_err(|e| Error::io("truncate", &inc, e))
                    }
                };
                if let Err(e) = r {
                    // Dropping the receiver makes the next push fail fast.
                    return (file, hasher, Some(e));
                }
            }
            (file, hasher, None)
        });
        Sink {
            tx: Some(tx),
            worker: Some(worker),
        }
    }

    fn send(&mut self, msg: SinkMsg) -> Result<()> {
        let ok = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if ok {
            Ok(())
        } else {
            // The worker stopped on an I/O error: report it.
            self.finish().map(|_| ())
        }
    }

    fn push(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.send(SinkMsg::Data(data.to_vec()))
    }

    fn reset(&mut self) -> Result<()> {
        self.send(SinkMsg::Reset)
    }

    /// Wait for everything queued to be written and hashed.
    fn finish(&mut self) -> Result<(File, Sha256)> {
        self.tx = None;
        let worker = self
            .worker
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Io, "download writer already finished"))?;
        let (file, hasher, err) = worker
            .join()
            .map_err(|_| Error::new(ErrorKind::Panic, "download writer thread panicked"))?;
        match err {
            Some(e) => Err(e),
            None => Ok((file, hasher)),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
