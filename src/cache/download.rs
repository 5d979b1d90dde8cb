//! Verified, resumable, cross-process-locked downloads into the cache.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha1::Sha1;
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
        // failed download leaves a repo its `scan_cache_dir` accepts. Every folder is
        // made without following symlinks: a planted link would send writes to its
        // target.
        let repo_rel = PathBuf::from(layout::repo_folder(repo));
        layout::create_dirs_nofollow(&self.root, &repo_rel.join("snapshots").join(&m.commit))?;
        if !is_commit_hash(&m.revision) {
            self.write_ref(repo, &m.revision, &m.commit)?;
        }
        let blobs = layout::create_dirs_nofollow(&self.root, &repo_rel.join("blobs"))?;
        let blob_path = blobs.join(&blob);
        let lock_path = blobs.join(format!("{blob}.lock"));
        let inc_path = blobs.join(format!("{blob}.incomplete"));
        let total = size.unwrap_or(0);
        // Another thread or process may be fetching the same blob: wait, then reuse it,
        // reporting how far its `.incomplete` has grown meanwhile.
        let _lock = BlobLock::acquire(&lock_path, self.lock_timeout, &mut || {
            let done = fs::symlink_metadata(&inc_path)
                .ok()
                .filter(|m| m.is_file())
                .map_or(0, |m| m.len());
            progress(path, done, total.max(done))
        })?;
        // A symlink at the blob's name is not a blob: drop the link, never its target.
        if fs::symlink_metadata(&blob_path).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&blob_path).map_err(|e| Error::io("remove", &blob_path, e))?;
        }
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
            if let Err(e) = self.stream(job, progress) {
                // A failed first attempt must not leave an empty `.incomplete` that
                // makes the variant look partially downloaded.
                if fs::symlink_metadata(&inc_path).is_ok_and(|m| m.is_file() && m.len() == 0) {
                    let _ = fs::remove_file(&inc_path);
                }
                return Err(e);
            }
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
        // Folder by folder without following symlinks, so a link planted as a folder of
        // the snapshot cannot make us create folders outside the cache.
        let rel = parent.strip_prefix(&self.root).unwrap_or(parent);
        layout::create_dirs_nofollow(&self.root, rel)?;
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
        // No-follow: a symlink planted here would have us append to its target.
        let file = layout::open_nofollow(&inc, true)?;
        // Non-LFS files have no sha256 but are named by their git blob id, which is
        // hashed as the bytes arrive too (its header needs the length up front).
        let git_id = (expected.is_none() && is_commit_hash(blob)).then_some(blob);
        let mut hasher = Hashes::new(git_id.and(size));
        let mut have = file
            .metadata()
            .map_err(|e| Error::io("stat", &inc, e))?
            .len();
        if have > 0 && size.is_some_and(|s| have > s) {
            file.set_len(0)
                .map_err(|e| Error::io("truncate", &inc, e))?;
            have = 0;
        } else if have > 0 {
            // The same descriptor: reads start at 0, appends still go to the end.
            have = hash_reader(&mut &file, &mut |b| hasher.update(b), have)
                .map_err(|e| Error::io("read", &inc, e))?;
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
                    // Short of the Content-Length, or of the hub's size for the file
                    // (a close-delimited body just ends): resume, do not discard.
                    Ok(0) if end.is_some_and(|e| have < e) || size.is_some_and(|s| have < s) => 0,
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
        let git_got = hasher.git.map(|h| layout::hex(&h.finalize()));
        let actual = sha256_hex(hasher.sha256);
        let bad_size = size.is_some_and(|s| s != have);
        let bad_sha = expected
            .as_deref()
            .is_some_and(|e| !e.eq_ignore_ascii_case(&actual));
        // Checked only while no sha256 is known (a linked ETag may have brought one).
        let bad_git = match git_id {
            Some(id) if !bad_size && expected.is_none() => {
                let got = match git_got {
                    Some(g) => g,
                    // Length unknown at the start: hash the (small) file once now.
                    None => layout::git_blob_sha1_file(&inc)?,
                };
                (!got.eq_ignore_ascii_case(id)).then_some(got)
            }
            _ => None,
        };
        if let Some(got) = bad_git {
            drop(file);
            let _ = fs::remove_file(&inc);
            return Err(Error::new(
                ErrorKind::Checksum,
                format!("{path}: downloaded {have} bytes with git blob id {got}, expected {blob}; discarded"),
            ));
        }
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

/// The running hashes of a download: sha256 always, git's blob SHA-1 when the file is
/// named by its git blob id and its length is known.
struct Hashes {
    sha256: Sha256,
    git: Option<Sha1>,
    /// The git hasher with only its header, for a restart from zero.
    git_start: Option<Sha1>,
}

impl Hashes {
    fn new(git_len: Option<u64>) -> Hashes {
        let git_start = git_len.map(layout::git_blob_hasher);
        Hashes {
            sha256: Sha256::new(),
            git: git_start.clone(),
            git_start,
        }
    }

    fn update(&mut self, d: &[u8]) {
        self.sha256.update(d);
        if let Some(g) = &mut self.git {
            g.update(d);
        }
    }

    fn reset(&mut self) {
        self.sha256 = Sha256::new();
        self.git = self.git_start.clone();
    }
}

/// Writes and hashes downloaded bytes on a worker thread, in order.
struct Sink {
    tx: Option<std::sync::mpsc::SyncSender<SinkMsg>>,
    worker: Option<std::thread::JoinHandle<(File, Hashes, Option<Error>)>>,
}

impl Sink {
    /// `writeback`: start disk writes as data arrives (durable mode), so the final
    /// fsync is short. Without it the page cache absorbs the file at memory speed.
    fn new(file: File, hasher: Hashes, inc: PathBuf, writeback: bool) -> Sink {
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
                        hasher.reset();
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
    fn finish(&mut self) -> Result<(File, Hashes)> {
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
