//! Model cache compatible with huggingface_hub's on-disk layout:
//!
//! ```text
//! <root>/models--{org}--{name}/
//!     blobs/<sha256 or git etag>            file contents (+ .incomplete / .lock while downloading)
//!     snapshots/<commit>/<path>             relative symlinks to ../../blobs/<blob>
//!     refs/<revision>                       commit hash, no newline
//! <root>/.locks/.tabagent/models--{org}--{name}/manifest-<rev>.json
//!                                           last scan, so status works offline
//! ```
//!
//! Only downloads write inside `models--*`, and in huggingface_hub's order (snapshot
//! folder and ref first, then the blob, then the link), so its `scan_cache_dir` never
//! sees a repo we left half made. Manifests live under `.locks/`, the one folder of the
//! root that tool skips.
//!
//! Downloads are verified against the LFS sha256, resumable (`Range`), locked per blob
//! across processes, and never leave a half blob or a dangling link under a final name.

mod download;
mod hub;
pub mod layout;
pub mod quant;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use layout::{sha256_bytes, sha256_file, validate_rel_path, validate_repo_id};
pub use quant::{quant_label, Manifest, ManifestFile, Variant, VariantStatus};

use crate::error::{Error, ErrorKind, Result};
use hub::{Ctx, Hub};
use layout::{is_commit_hash, is_sha256_hex, repo_folder, resolve_inside};

/// How to open a cache; `None` fields fall back to the huggingface_hub environment
/// variables (`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`).
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub root: Option<PathBuf>,
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub offline: Option<bool>,
    /// Retries after the first attempt for 5xx / 429 / connection errors / dropped bodies.
    pub retries: u32,
    /// First back-off delay; doubles per retry up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub user_agent: String,
    /// How long to wait for another process's download of the same blob before `Busy`.
    pub lock_timeout: Duration,
    /// fsync each downloaded file and its directory before it counts as cached, so a
    /// power failure cannot leave a damaged file under a verified name. Off by default,
    /// as in huggingface_hub and curl: it bounds downloads by the disk's write speed.
    pub durable: bool,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            root: None,
            endpoint: None,
            token: None,
            offline: None,
            retries: 5,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            user_agent: format!("tabagent/{}", env!("CARGO_PKG_VERSION")),
            lock_timeout: Duration::from_secs(3600),
            durable: false,
        }
    }
}

/// One cached repo, as `list_repos` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub repo_id: String,
    /// Bytes of complete blobs (shared between revisions, counted once).
    pub size_on_disk: u64,
    /// Number of complete blobs.
    pub n_files: usize,
    /// Commit hashes that have a snapshot directory, sorted.
    pub revisions: Vec<String>,
    /// Ref name → commit, from `refs/`.
    pub refs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub repos: usize,
    pub files: usize,
    pub bytes: u64,
}

/// A blob whose content no longer hashes to its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub path: PathBuf,
    pub expected: String,
    pub actual: String,
}

/// Progress callback: (file path in repo, bytes done, bytes total or 0) → keep going?
pub type Progress<'a> = dyn FnMut(&str, u64, u64) -> bool + 'a;

pub struct Cache {
    root: PathBuf,
    offline: bool,
    hub: Hub,
    lock_timeout: Duration,
    durable: bool,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl Cache {
    /// Open (and create) the cache, reading the environment for unset options.
    pub fn open(opts: CacheOptions) -> Result<Cache> {
        Cache::open_env(opts, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// `open` with an explicit environment lookup (tests, embedding hosts).
    pub fn open_env(opts: CacheOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Cache> {
        let hf_home = || {
            env("HF_HOME").map(PathBuf::from).or_else(|| {
                env("XDG_CACHE_HOME")
                    .map(|x| PathBuf::from(x).join("huggingface"))
                    .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface")))
            })
        };
        let root = match opts.root.clone() {
            Some(r) => r,
            None => match env("HF_HUB_CACHE").or_else(|| env("HUGGINGFACE_HUB_CACHE")) {
                Some(c) => PathBuf::from(c),
                None => hf_home()
                    .ok_or_else(|| Error::invalid_arg("no cache root: set HF_HOME or HOME"))?
                    .join("hub"),
            },
        };
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env("HF_ENDPOINT"))
            .unwrap_or_else(|| "https://huggingface.co".to_string());
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::invalid_arg(format!(
                "endpoint {endpoint:?} is not an http(s) URL"
            )));
        }
        let token = opts
            .token
            .clone()
            .or_else(|| env("HF_TOKEN"))
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                // huggingface-cli login stores it here.
                let p = env("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home().map(|h| h.join("token")))?;
                let t = fs::read_to_string(p).ok()?;
                Some(t.trim().to_string()).filter(|t| !t.is_empty())
            });
        let offline = opts
            .offline
            .unwrap_or_else(|| env("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)));
        fs::create_dir_all(&root).map_err(|e| Error::io("create cache directory", &root, e))?;
        let mut hub = Hub::new(
            &endpoint,
            token,
            &opts.user_agent,
            opts.connect_timeout,
            opts.read_timeout,
        );
        hub.retries = opts.retries;
        hub.retry_base = opts.retry_base;
        hub.retry_max = opts.retry_max;
        Ok(Cache {
            root,
            offline,
            hub,
            lock_timeout: opts.lock_timeout,
            durable: opts.durable,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn endpoint(&self) -> &str {
        &self.hub.endpoint
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    pub(crate) fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(repo_folder(repo))
    }

    /// Where this repo's saved manifests live (see the module doc for why not inside
    /// `models--*`).
    fn manifest_dir(&self, repo: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(".tabagent")
            .join(repo_folder(repo))
    }

    fn manifest_path(&self, repo: &str, rev: &str) -> PathBuf {
        let mut name = format!("manifest-{}.json", rev.replace('/', "%2F"));
        // A revision may be longer than a file name can be.
        if name.len() > layout::NAME_MAX {
            name = format!("manifest-sha256-{}.json", sha256_bytes(rev.as_bytes()));
        }
        self.manifest_dir(repo).join(name)
    }

    /// The commit `rev` points to, from the cache only.
    pub fn local_commit(&self, repo: &str, rev: &str) -> Option<String> {
        if is_commit_hash(rev) {
            return Some(rev.to_ascii_lowercase());
        }
        validate_rel_path(rev, "revision").ok()?;
        let c = fs::read_to_string(self.repo_dir(repo).join("refs").join(rev)).ok()?;
        let c = c.trim().to_string();
        layout::validate_token(&c, "commit").ok().map(|_| c)
    }

    fn check(repo: &str, rev: &str) -> Result<()> {
        validate_repo_id(repo)?;
        validate_rel_path(rev, "revision")
    }

    /// Fetch the file list of `repo@revision` from the hub (offline: the saved manifest),
    /// save it, and fill in each variant's status from the cache.
    pub fn scan(&self, repo: &str, revision: &str) -> Result<Manifest> {
        Cache::check(repo, revision)?;
        if self.offline {
            return self.manifest(repo, revision).map_err(|e| match e.kind() {
                ErrorKind::NotFound => Error::new(
                    ErrorKind::Offline,
                    format!(
                        "offline mode: cannot scan {repo}@{revision}: {}",
                        e.message()
                    ),
                ),
                _ => e,
            });
        }
        let mut m = self.fetch_manifest(repo, revision)?;
        self.save_manifest(&m)?;
        // No ref is written: like huggingface_hub's listing calls, a scan changes
        // nothing in `models--*`, so `main` keeps naming the commit whose files are
        // cached until a download moves it.
        self.fill_status(&mut m);
        Ok(m)
    }

    /// The manifest of `repo@revision` from the cache alone, statuses refreshed. A
    /// branch means the commit its cached ref names (what offline downloads resolve
    /// to), else its last scan. With no saved manifest, it is derived from the
    /// snapshot (files that huggingface_hub downloaded, say); `NotFound` (in every
    /// mode) when nothing of it is known.
    pub fn manifest(&self, repo: &str, revision: &str) -> Result<Manifest> {
        Cache::check(repo, revision)?;
        self.manifest_at(repo, revision, self.local_commit(repo, revision))
    }

    /// The commit a download of `rev` means: online, a branch's last scan when it is
    /// newer than the cached ref (a scan moves no ref, and huggingface_hub may have
    /// moved the ref since); otherwise the cached ref, as huggingface_hub resolves it
    /// offline.
    pub(crate) fn download_commit(&self, repo: &str, rev: &str) -> Option<String> {
        let cached = self.local_commit(repo, rev);
        if self.offline || is_commit_hash(rev) {
            return cached;
        }
        let scan_path = self.manifest_path(repo, rev);
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        let ref_time = mtime(&self.repo_dir(repo).join("refs").join(rev));
        if cached.is_some() && ref_time >= mtime(&scan_path) {
            return cached;
        }
        fs::read_to_string(&scan_path)
            .ok()
            .and_then(|t| Manifest::from_json(&t).ok())
            .map(|m| m.commit)
            .or(cached)
    }

    /// [`Cache::manifest`] for `revision` taken to mean `commit`.
    pub(crate) fn manifest_at(
        &self,
        repo: &str,
        revision: &str,
        commit: Option<String>,
    ) -> Result<Manifest> {
        let read = |name: &str| -> Result<Option<Manifest>> {
            let p = self.manifest_path(repo, name);
            match fs::read_to_string(&p) {
                Ok(text) => Manifest::from_json(&text)
                    .map(Some)
                    .map_err(|e| e.context(p.display())),
                Err(_) => Ok(None),
            }
        };
        let done = |mut m: Manifest| {
            m.revision = revision.to_string();
            self.fill_status(&mut m);
            Ok(m)
        };
        let by_name = read(revision)?;
        if let Some(c) = &commit {
            if let Some(m) = read(c)? {
                return done(m);
            }
            // The branch's last scan only if it names the same commit: the ref may
            // have moved since (huggingface_hub downloading a newer commit).
            if let Some(m) = by_name.clone().filter(|m| &m.commit == c) {
                return done(m);
            }
            if let Some(m) = self.manifest_from_snapshot(repo, revision, c) {
                return done(m);
            }
        }
        if let Some(m) = by_name {
            return done(m);
        }
        Err(Error::not_found(format!(
            "{repo}@{revision} was never scanned and nothing of it is cached: scan it while online first"
        )))
    }

    /// What `snapshots/<commit>` holds, as a manifest (`from_snapshot`). Shards missing
    /// from a split variant are listed too, so it shows as partial and names them.
    fn manifest_from_snapshot(&self, repo: &str, rev: &str, commit: &str) -> Option<Manifest> {
        let dir = self.repo_dir(repo);
        let snap = dir.join("snapshots").join(commit);
        if !snap.is_dir() {
            return None;
        }
        let mut files = Vec::new();
        walk_files(&snap, &mut |p| {
            let Some(rel) = p.strip_prefix(&snap).ok().and_then(Path::to_str) else {
                return;
            };
            // Our own temp links (`layout::temp_sibling`) are not files of the repo.
            let base = rel.rsplit('/').next().unwrap_or(rel);
            if (base.starts_with('.') && base.contains(".tmp-"))
                || validate_rel_path(rel, "cached file").is_err()
            {
                return;
            }
            let Some(real) = resolve_inside(p, &dir) else {
                return;
            };
            let blob = real
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string);
            let (sha256, blob_id) = match blob {
                Some(b) if is_sha256_hex(&b) => (Some(b.to_ascii_lowercase()), None),
                b => (None, b),
            };
            files.push(ManifestFile {
                path: rel.to_string(),
                size: fs::metadata(&real).ok().map(|m| m.len()),
                sha256,
                blob_id,
            });
        });
        if files.is_empty() {
            return None;
        }
        let mut missing = BTreeSet::new();
        for f in &files {
            if let Some((_, n)) = quant::strip_shard(&f.path).1 {
                // "-00001-of-00003.gguf" is 20 bytes.
                let (stem, ext) = (&f.path[..f.path.len() - 20], &f.path[f.path.len() - 5..]);
                for i in 1..=n.min(9999) {
                    let p = format!("{stem}-{i:05}-of-{n:05}{ext}");
                    if !files.iter().any(|g| g.path == p) {
                        missing.insert(p);
                    }
                }
            }
        }
        files.extend(missing.into_iter().map(|path| ManifestFile {
            path,
            size: None,
            sha256: None,
            blob_id: None,
        }));
        let mut m = Manifest::new(repo, rev, commit, files);
        m.from_snapshot = true;
        Some(m)
    }

    fn save_manifest(&self, m: &Manifest) -> Result<()> {
        let text = serde_json::to_string_pretty(&m.to_value()).unwrap_or_else(|_| m.to_json());
        self.write_file(
            &self.manifest_path(&m.repo_id, &m.revision),
            text.as_bytes(),
        )?;
        if m.revision != m.commit {
            self.write_file(&self.manifest_path(&m.repo_id, &m.commit), text.as_bytes())?;
        }
        Ok(())
    }

    fn write_ref(&self, repo: &str, rev: &str, commit: &str) -> Result<()> {
        let p = self.repo_dir(repo).join("refs").join(rev);
        if fs::read_to_string(&p).ok().as_deref() == Some(commit) {
            return Ok(());
        }
        self.write_file(&p, commit.as_bytes())
    }

    /// `write_atomic` under the cache root, its folders made without following
    /// symlinks: a link planted as `refs/` or `.tabagent/` must not send the write
    /// outside the cache.
    fn write_file(&self, p: &Path, data: &[u8]) -> Result<()> {
        if let Some(rel) = p.parent().and_then(|d| d.strip_prefix(&self.root).ok()) {
            layout::create_dirs_nofollow(&self.root, rel)?;
        }
        layout::write_atomic(p, data)
    }

    fn fetch_manifest(&self, repo: &str, rev: &str) -> Result<Manifest> {
        let ctx = Ctx {
            repo,
            rev,
            path: None,
        };
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.hub.endpoint,
            layout::url_encode(rev, false)
        );
        let (v, _) = self.hub.get_json(&url, &ctx)?;
        let commit = v["sha"]
            .as_str()
            .ok_or_else(|| Error::new(ErrorKind::Network, format!("{url}: no `sha` in reply")))?
            .to_string();
        layout::validate_token(&commit, "commit")?;
        let mut files = Vec::new();
        let mut refused = Vec::new();
        let mut need_tree = false;
        for s in v["siblings"].as_array().into_iter().flatten() {
            let Some(path) = s["rfilename"].as_str() else {
                continue;
            };
            // One hostile or unusable name costs only its own entry, not the repo.
            if let Err(e) = validate_rel_path(path, "file name from the hub") {
                refuse(&mut refused, repo, path, e);
                continue;
            }
            let sha256 = s["lfs"]["sha256"].as_str().map(str::to_ascii_lowercase);
            let size = s["size"].as_u64().or(s["lfs"]["size"].as_u64());
            need_tree |= size.is_none();
            files.push(ManifestFile {
                path: path.to_string(),
                size,
                sha256: sha256.filter(|h| is_sha256_hex(h)),
                blob_id: s["blobId"].as_str().map(str::to_string),
            });
        }
        if need_tree {
            self.fill_from_tree(repo, &commit, &mut files)?;
        }
        files.retain(|f| match &f.blob_id {
            Some(b) => match layout::validate_token(b, "blob id") {
                Ok(()) => true,
                Err(e) => {
                    refuse(&mut refused, repo, &f.path, e);
                    false
                }
            },
            None => true,
        });
        let mut m = Manifest::new(repo, rev, &commit, files);
        m.refused = refused;
        Ok(m)
    }

    /// Sizes and LFS hashes from the tree API (older hubs omit them in `siblings`);
    /// follows `Link: <…>; rel="next"` pagination.
    fn fill_from_tree(&self, repo: &str, commit: &str, files: &mut [ManifestFile]) -> Result<()> {
        let ctx = Ctx {
            repo,
            rev: commit,
            path: None,
        };
        let mut url = Some(format!(
            "{}/api/models/{repo}/tree/{commit}?recursive=true",
            self.hub.endpoint
        ));
        while let Some(u) = url.take() {
            let (v, link) = self.hub.get_json(&u, &ctx)?;
            for e in v.as_array().into_iter().flatten() {
                if e["type"].as_str() != Some("file") {
                    continue;
                }
                let Some(f) = files
                    .iter_mut()
                    .find(|f| Some(f.path.as_str()) == e["path"].as_str())
                else {
                    continue;
                };
                f.size = f.size.or(e["size"].as_u64());
                if f.sha256.is_none() {
                    f.sha256 = e["lfs"]["oid"]
                        .as_str()
                        .map(str::to_ascii_lowercase)
                        .filter(|h| is_sha256_hex(h));
                }
                if f.blob_id.is_none() {
                    f.blob_id = e["oid"].as_str().map(str::to_string);
                }
            }
            url = link.and_then(|l| {
                l.split(',')
                    .find(|p| p.contains("rel=\"next\""))
                    .and_then(|p| Some(p.split_once('<')?.1.split_once('>')?.0.to_string()))
            });
        }
        Ok(())
    }

    /// Cached file for `commit/path` if its link resolves inside the repo dir.
    fn cached_file(&self, repo: &str, commit: &str, path: &str) -> Option<PathBuf> {
        let dir = self.repo_dir(repo);
        let entry = dir.join("snapshots").join(commit).join(path);
        resolve_inside(&entry, &dir).map(|_| entry)
    }

    fn fill_status(&self, m: &mut Manifest) {
        let blobs = self.repo_dir(&m.repo_id).join("blobs");
        let files = m.files.clone();
        let commit = m.commit.clone();
        let state = |p: &str| -> (bool, bool) {
            let done = self.cached_file(&m.repo_id, &commit, p).is_some();
            let partial = files
                .iter()
                .find(|f| f.path == p)
                .and_then(|f| f.blob_name())
                .is_some_and(|b| {
                    // An empty `.incomplete` (a process killed before its first byte)
                    // holds nothing to resume: not "partial".
                    let started = fs::metadata(blobs.join(format!("{b}.incomplete")))
                        .is_ok_and(|m| m.len() > 0);
                    started || blobs.join(b).exists()
                });
            (done, partial)
        };
        for v in m.variants.iter_mut().chain(m.projectors.iter_mut()) {
            let st: Vec<(bool, bool)> = v.files.iter().map(|p| state(p)).collect();
            v.status = if st.iter().all(|s| s.0) {
                VariantStatus::Downloaded
            } else if st.iter().any(|s| s.0 || s.1) {
                VariantStatus::Partial
            } else {
                VariantStatus::Available
            };
        }
    }

    /// Is `path` of `repo@rev` in the cache (no network)?
    pub fn has_file(&self, repo: &str, rev: &str, path: &str) -> bool {
        self.snapshot_path(repo, rev, path).is_ok()
    }

    /// The snapshot path of a cached file; `NotFound` if it is not cached.
    pub fn snapshot_path(&self, repo: &str, rev: &str, path: &str) -> Result<PathBuf> {
        Cache::check(repo, rev)?;
        validate_rel_path(path, "file path")?;
        self.local_commit(repo, rev)
            .and_then(|c| self.cached_file(repo, &c, path))
            .ok_or_else(|| Error::not_found(format!("{path} of {repo}@{rev} is not in the cache")))
    }

    /// Every `models--*` repo in the cache.
    pub fn list_repos(&self) -> Result<Vec<RepoInfo>> {
        let rd = match fs::read_dir(&self.root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &self.root, e)),
        };
        let mut out = Vec::new();
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(repo_id) = name.to_str().and_then(layout::repo_id_from_folder) else {
                continue;
            };
            out.push(self.repo_info(&repo_id)?);
        }
        out.sort_by(|a, b| a.repo_id.cmp(&b.repo_id));
        Ok(out)
    }

    fn repo_info(&self, repo: &str) -> Result<RepoInfo> {
        let dir = self.repo_dir(repo);
        let (mut size, mut n) = (0, 0);
        for (_, meta) in complete_blobs(&dir.join("blobs"))? {
            size += meta.len();
            n += 1;
        }
        let mut revisions: Vec<String> = read_names(&dir.join("snapshots"))?;
        revisions.sort();
        let mut refs = BTreeMap::new();
        walk_files(&dir.join("refs"), &mut |p| {
            if let (Ok(rel), Ok(c)) = (p.strip_prefix(dir.join("refs")), fs::read_to_string(p)) {
                refs.insert(rel.to_string_lossy().into_owned(), c.trim().to_string());
            }
        });
        Ok(RepoInfo {
            repo_id: repo.to_string(),
            size_on_disk: size,
            n_files: n,
            revisions,
            refs,
        })
    }

    pub fn stats(&self) -> Result<CacheStats> {
        let repos = self.list_repos()?;
        Ok(CacheStats {
            repos: repos.len(),
            files: repos.iter().map(|r| r.n_files).sum(),
            bytes: repos.iter().map(|r| r.size_on_disk).sum(),
        })
    }

    /// Remove a whole repo from the cache, with its saved manifests.
    pub fn delete_repo(&self, repo: &str) -> Result<()> {
        validate_repo_id(repo)?;
        let dir = self.repo_dir(repo);
        let manifests = self.manifest_dir(repo);
        if !dir.exists() && !manifests.exists() {
            return Err(Error::not_found(format!("{repo} is not in the cache")));
        }
        for d in [dir, manifests] {
            match fs::remove_dir_all(&d) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io("remove", &d, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Remove one snapshot (by commit or ref name), the refs and saved manifests that
    /// point to it, and every blob no other snapshot links to.
    pub fn delete_revision(&self, repo: &str, revision: &str) -> Result<()> {
        Cache::check(repo, revision)?;
        let dir = self.repo_dir(repo);
        let commit = self
            .local_commit(repo, revision)
            .filter(|c| dir.join("snapshots").join(c).is_dir())
            .ok_or_else(|| Error::not_found(format!("{repo}@{revision} is not in the cache")))?;
        let snap = dir.join("snapshots").join(&commit);
        fs::remove_dir_all(&snap).map_err(|e| Error::io("remove", &snap, e))?;
        let refs_dir = dir.join("refs");
        walk_files(&refs_dir, &mut |p| {
            if fs::read_to_string(p).is_ok_and(|c| c.trim() == commit) {
                let _ = fs::remove_file(p);
                if let Ok(rel) = p.strip_prefix(&refs_dir) {
                    let _ = fs::remove_file(self.manifest_path(repo, &rel.to_string_lossy()));
                }
            }
        });
        let _ = fs::remove_file(self.manifest_path(repo, &commit));
        // Blobs still linked from any remaining snapshot are kept.
        let mut used = BTreeSet::new();
        walk_files(&dir.join("snapshots"), &mut |p| {
            if let Ok(t) = fs::read_link(p) {
                if let Some(n) = t.file_name() {
                    used.insert(n.to_string_lossy().into_owned());
                }
            }
        });
        for (p, _) in complete_blobs(&dir.join("blobs"))? {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| !used.contains(&n)) {
                fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
            }
        }
        Ok(())
    }

    /// Re-hash every blob (one repo, or all) and report those whose content does not
    /// match its name: sha256 for LFS files, git's blob SHA-1 for the 40-hex names of
    /// non-LFS files. Blobs named otherwise cannot be checked and are skipped.
    pub fn verify(&self, repo: Option<&str>) -> Result<Vec<Mismatch>> {
        let repos = match repo {
            Some(r) => {
                validate_repo_id(r)?;
                vec![r.to_string()]
            }
            None => self.list_repos()?.into_iter().map(|r| r.repo_id).collect(),
        };
        let mut out = Vec::new();
        for r in repos {
            for (p, _) in complete_blobs(&self.repo_dir(&r).join("blobs"))? {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let Some(expected) = name.filter(|n| is_sha256_hex(n) || is_commit_hash(n)) else {
                    continue;
                };
                let actual = if is_commit_hash(&expected) {
                    layout::git_blob_sha1_file(&p)?
                } else {
                    sha256_file(&p)?
                };
                if !actual.eq_ignore_ascii_case(&expected) {
                    out.push(Mismatch {
                        path: p,
                        expected,
                        actual,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Leave `path` out of a manifest, saying why in the log and in `Manifest::refused`.
fn refuse(refused: &mut Vec<(String, String)>, repo: &str, path: &str, e: Error) {
    crate::log::log(
        crate::log::LogLevel::Warn,
        &format!("{repo}: {e}; the other files are listed"),
    );
    refused.push((path.to_string(), e.message().to_string()));
}

/// Finished blobs: plain files in `blobs/` that are not `.incomplete`, `.lock` or temp.
fn complete_blobs(dir: &Path) -> Result<Vec<(PathBuf, fs::Metadata)>> {
    let rd = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".incomplete") || name.ends_with(".lock") {
            continue;
        }
        if let Ok(meta) = fs::symlink_metadata(ent.path()) {
            if meta.is_file() {
                out.push((ent.path(), meta));
            }
        }
    }
    Ok(out)
}

fn read_names(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(rd) => Ok(rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("list", dir, e)),
    }
}

/// Visit every non-directory entry under `dir` without following symlinks.
fn walk_files(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for ent in rd.flatten() {
        let p = ent.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk_files(&p, f),
            Ok(_) => f(&p),
            Err(_) => {}
        }
    }
}
