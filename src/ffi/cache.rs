//! `ta_cache`: a Hugging Face–compatible model store over the C ABI.

use super::model::{ta_model, ta_model_params};
use super::*;
use crate::cache::{Cache, CacheOptions};

/// How to open a cache. Get defaults from `ta_cache_default_options()`; NULL
/// strings mean "from the environment, like huggingface_hub".
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ta_cache_options {
    /// Cache root; NULL = `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    pub root: *const c_char,
    /// Hub URL; NULL = `HF_ENDPOINT`, else `https://huggingface.co`.
    pub endpoint: *const c_char,
    /// Access token; NULL = `HF_TOKEN`.
    pub token: *const c_char,
    /// -1 = from `HF_HUB_OFFLINE` (default), 0 = online, 1 = offline (cached files only).
    pub offline: i32,
    /// Retries for 5xx answers and dropped connections (default 5).
    pub retries: u32,
    pub connect_timeout_ms: u32,
    pub read_timeout_ms: u32,
    /// NULL = "tabagent/<version>".
    pub user_agent: *const c_char,
    /// true = fsync each downloaded file and its directory before it counts as cached,
    /// so even a power failure cannot leave a damaged file under a verified name; this
    /// bounds downloads by the disk's write speed. false (default, as huggingface_hub
    /// and curl) = the kernel writes the data back later. A killed process loses
    /// nothing either way, and a cached file whose length is wrong is fetched again.
    pub durable: bool,
}

/// Download progress for one file: `done` of `total` bytes. Return true to continue,
/// false to cancel (`TA_ERR_CANCELLED`; a later download resumes where it stopped).
pub type ta_download_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        file: *const c_char,
        done: u64,
        total: u64,
    ) -> bool,
>;

/// Totals over the cache.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ta_cache_stats {
    pub repos: u64,
    pub files: u64,
    pub bytes: u64,
}

/// An open cache, opaque. Safe to use from many threads at once; two processes
/// downloading the same file coordinate through a lock file.
pub struct ta_cache {
    inner: Cache,
}

fn cache_options(p: *const ta_cache_options) -> Result<CacheOptions> {
    let mut o = CacheOptions::default();
    // SAFETY: NULL = defaults, else valid for the call.
    let Some(p) = (unsafe { p.as_ref() }) else {
        return Ok(o);
    };
    o.root = opt_str_arg(p.root, "options.root")?.map(std::path::PathBuf::from);
    o.endpoint = opt_str_arg(p.endpoint, "options.endpoint")?.map(str::to_owned);
    o.token = opt_str_arg(p.token, "options.token")?.map(str::to_owned);
    o.offline = match p.offline {
        -1 => None,
        0 => Some(false),
        1 => Some(true),
        x => {
            return Err(Error::invalid_arg(format!(
                "options.offline must be -1, 0 or 1, got {x}"
            )))
        }
    };
    o.retries = p.retries;
    if p.connect_timeout_ms > 0 {
        o.connect_timeout = std::time::Duration::from_millis(p.connect_timeout_ms as u64);
    }
    if p.read_timeout_ms > 0 {
        o.read_timeout = std::time::Duration::from_millis(p.read_timeout_ms as u64);
    }
    if let Some(ua) = opt_str_arg(p.user_agent, "options.user_agent")? {
        o.user_agent = ua.to_owned();
    }
    o.durable = p.durable;
    Ok(o)
}

/// A revision argument: NULL means "main", as in huggingface_hub.
fn revision_arg<'a>(p: *const c_char) -> Result<&'a str> {
    Ok(opt_str_arg(p, "revision")?.unwrap_or("main"))
}

const DEFAULT_OPTIONS: ta_cache_options = ta_cache_options {
    root: std::ptr::null(),
    endpoint: std::ptr::null(),
    token: std::ptr::null(),
    offline: -1,
    retries: 5,
    connect_timeout_ms: 10_000,
    read_timeout_ms: 60_000,
    user_agent: std::ptr::null(),
    durable: false,
};

/// Default options: everything from the environment, 5 retries, 10 s connect and
/// 60 s read timeouts, not durable.
#[no_mangle]
pub extern "C" fn ta_cache_default_options() -> ta_cache_options {
    boundary_value("ta_cache_default_options", DEFAULT_OPTIONS, || {
        Ok(DEFAULT_OPTIONS)
    })
}

/// Open (creating if needed) a cache. `options` NULL = defaults. `*out_cache` is
/// owned: free with `ta_cache_free`.
///
/// # Safety
/// Pointers must be NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_open(
    options: *const ta_cache_options,
    out_cache: *mut *mut ta_cache,
) -> ta_status {
    boundary("ta_cache_open", || {
        let o = out(out_cache, "out_cache")?;
        let inner = Cache::open(cache_options(options)?)?;
        *o = Box::into_raw(Box::new(ta_cache { inner }));
        Ok(())
    })
}

/// Close a cache. NULL is a no-op.
///
/// # Safety
/// `cache` must come from `ta_cache_open` and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_free(cache: *mut ta_cache) {
    boundary_value("ta_cache_free", (), || {
        if !cache.is_null() {
            // SAFETY: allocated by Box::into_raw in ta_cache_open.
            drop(unsafe { Box::from_raw(cache) });
        }
        Ok(())
    })
}

fn c(cache: *const ta_cache) -> Result<&'static Cache> {
    // SAFETY: a live cache for the duration of the call (documented); the 'static
    // lifetime never escapes the call.
    unsafe { cache.as_ref() }
        .map(|c| &c.inner)
        .ok_or_else(|| Error::null_arg("cache"))
}

fn progress_fn(
    callback: ta_download_callback,
    user_data: *mut c_void,
) -> impl FnMut(&str, u64, u64) -> bool {
    move |file: &str, done: u64, total: u64| match callback {
        Some(f) => {
            let name = CString::new(file.replace('\0', "")).unwrap_or_default();
            // SAFETY: the caller's callback and user_data; `name` lives for the call.
            unsafe { f(user_data, name.as_ptr(), done, total) }
        }
        None => true,
    }
}

/// Download a variant and return its first shard (what `ta_model_load` takes).
fn first_shard(
    cache: &Cache,
    repo: &str,
    rev: &str,
    quant: &str,
    progress: &mut dyn FnMut(&str, u64, u64) -> bool,
) -> Result<std::path::PathBuf> {
    cache
        .download_variant(repo, rev, quant, progress)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("variant {quant} of {repo} has no files")))
}

fn path_string(p: &std::path::Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_arg(format!("path {} is not valid UTF-8", p.display())))
}

/// The cache's root directory. `*out_path` is owned: free with `ta_string_free`.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_root(
    cache: *const ta_cache,
    out_path: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_root", || {
        let cache = c(cache)?;
        let o = out(out_path, "out_path")?;
        *o = owned_cstring(path_string(cache.root())?);
        Ok(())
    })
}

/// List a repo's files through the hub API, resolve `revision` (NULL = "main") to a
/// commit, and group GGUF files by quantisation (split shards as one variant,
/// projector files apart), each variant with its total size and status
/// ("available" / "partial" / "downloaded"). Files whose names cannot be used
/// safely (`..`, a part over 255 bytes, …) are left out and listed in `refused`
/// (`{path, reason}`, also logged as warnings); the others stay usable. The manifest
/// is saved under `<root>/.locks/.tabagent/` (see `ta_cache_manifest`); a scan
/// writes nothing into the repo's `models--*` folder, and moves no ref.
/// `*out_json` is owned: free with `ta_string_free`.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_scan(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    out_json: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_scan", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let o = out(out_json, "out_json")?;
        *o = owned_cstring(cache.scan(repo, rev)?.to_json());
        Ok(())
    })
}

/// The manifest of `repo` at `revision` with statuses as they are now, without the
/// network (works offline). A branch means the commit its cached ref names, else its
/// last scan. Never scanned but files cached (e.g. by huggingface_hub): derived from
/// the snapshot, with `"source": "snapshot"` (only cached files and missing shards of
/// split variants are listed) instead of `"hub"`. `TA_ERR_NOT_FOUND`, online and
/// offline alike, when it was never scanned and nothing of it is cached.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_manifest(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    out_json: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_manifest", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let o = out(out_json, "out_json")?;
        *o = owned_cstring(cache.manifest(repo, rev)?.to_json());
        Ok(())
    })
}

/// Download one file of `repo` at `revision` (NULL = "main") unless it is already
/// cached, and return its snapshot path in `*out_path` (owned: `ta_string_free`).
/// Bytes stream into `blobs/<sha256>.incomplete`, hashed on the fly; an interrupted
/// download (also by a killed process) resumes with a Range request; 5xx and
/// dropped connections are retried with back-off; the file is moved into place only
/// when its sha256 matches the hub's (`TA_ERR_CHECKSUM` otherwise, leaving nothing).
/// Errors: `TA_ERR_UNAUTHORIZED` (gated/private repo: set a token),
/// `TA_ERR_NOT_FOUND` (repo, revision or file), `TA_ERR_OFFLINE`, `TA_ERR_NETWORK`,
/// `TA_ERR_IO` (naming the path), `TA_ERR_CANCELLED` (progress returned false),
/// `TA_ERR_INVALID_ARG` (bad repo id or file name). `progress` may be NULL.
///
/// # Safety
/// Pointers must be NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_download_file(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    path: *const c_char,
    progress: ta_download_callback,
    user_data: *mut c_void,
    out_path: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_download_file", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let file = str_arg(path, "path")?;
        let o = out(out_path, "out_path")?;
        let mut cb = progress_fn(progress, user_data);
        let p = cache.download_file(repo, rev, file, &mut cb)?;
        *o = owned_cstring(path_string(&p)?);
        Ok(())
    })
}

/// Download every file of the `quant` variant ("Q4_K_M", "Q8_0", …; all shards of a
/// split model) as `ta_cache_download_file` does. `*out_path` receives the first
/// shard's snapshot path, ready for `ta_model_load` (owned: `ta_string_free`).
///
/// # Safety
/// Pointers must be NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_download_variant(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    quant: *const c_char,
    progress: ta_download_callback,
    user_data: *mut c_void,
    out_path: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_download_variant", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let quant = str_arg(quant, "quant")?;
        let o = out(out_path, "out_path")?;
        let mut cb = progress_fn(progress, user_data);
        let first = first_shard(cache, repo, rev, quant, &mut cb)?;
        *o = owned_cstring(path_string(&first)?);
        Ok(())
    })
}

/// Whether `path` of `repo` at `revision` is in the cache (no network).
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_has_file(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    path: *const c_char,
    out_has: *mut bool,
) -> ta_status {
    boundary("ta_cache_has_file", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let file = str_arg(path, "path")?;
        let o = out(out_has, "out_has")?;
        crate::cache::validate_repo_id(repo)?;
        crate::cache::validate_rel_path(file, "path")?;
        *o = cache.has_file(repo, rev, file);
        Ok(())
    })
}

/// The snapshot path of a cached file (no network); `TA_ERR_NOT_FOUND` when it is not
/// cached. `*out_path` is owned: free with `ta_string_free`.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_snapshot_path(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    path: *const c_char,
    out_path: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_snapshot_path", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let file = str_arg(path, "path")?;
        let o = out(out_path, "out_path")?;
        let p = cache.snapshot_path(repo, rev, file)?;
        *o = owned_cstring(path_string(&p)?);
        Ok(())
    })
}

/// The cached repos as a JSON array of `{repo_id, size_on_disk, n_files, revisions,
/// refs}`. `*out_json` is owned: free with `ta_string_free`.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_list_repos(
    cache: *const ta_cache,
    out_json: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_list_repos", || {
        let cache = c(cache)?;
        let o = out(out_json, "out_json")?;
        let repos: Vec<serde_json::Value> = cache
            .list_repos()?
            .iter()
            .map(|r| {
                serde_json::json!({
                    "repo_id": r.repo_id,
                    "size_on_disk": r.size_on_disk,
                    "n_files": r.n_files,
                    "revisions": r.revisions,
                    "refs": r.refs,
                })
            })
            .collect();
        *o = owned_cstring(serde_json::Value::Array(repos).to_string());
        Ok(())
    })
}

/// Delete a repo from the cache (all revisions and blobs).
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_delete_repo(
    cache: *const ta_cache,
    repo: *const c_char,
) -> ta_status {
    boundary("ta_cache_delete_repo", || {
        let cache = c(cache)?;
        cache.delete_repo(str_arg(repo, "repo")?)
    })
}

/// Delete one revision (commit hash or ref name) of a repo, and the blobs no other
/// revision uses.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_delete_revision(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
) -> ta_status {
    boundary("ta_cache_delete_revision", || {
        let cache = c(cache)?;
        cache.delete_revision(str_arg(repo, "repo")?, str_arg(revision, "revision")?)
    })
}

/// Repos, files and bytes in the cache.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_get_stats(
    cache: *const ta_cache,
    out_stats: *mut ta_cache_stats,
) -> ta_status {
    boundary("ta_cache_get_stats", || {
        let cache = c(cache)?;
        let o = out(out_stats, "out_stats")?;
        let s = cache.stats()?;
        *o = ta_cache_stats {
            repos: s.repos as u64,
            files: s.files as u64,
            bytes: s.bytes,
        };
        Ok(())
    })
}

/// Re-hash the blobs of `repo` (NULL = every repo) — sha256 for LFS files, git's blob
/// SHA-1 for plain git files — and report mismatches as a JSON array of
/// `{path, expected, actual}` (`[]` when all are intact). `*out_json` is
/// owned: free with `ta_string_free`.
///
/// # Safety
/// Pointers must be NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn ta_cache_verify(
    cache: *const ta_cache,
    repo: *const c_char,
    out_json: *mut *mut c_char,
) -> ta_status {
    boundary("ta_cache_verify", || {
        let cache = c(cache)?;
        let repo = opt_str_arg(repo, "repo")?;
        let o = out(out_json, "out_json")?;
        let bad: Vec<serde_json::Value> = cache
            .verify(repo)?
            .iter()
            .map(|m| serde_json::json!({"path": m.path.display().to_string(), "expected": m.expected, "actual": m.actual}))
            .collect();
        *o = owned_cstring(serde_json::Value::Array(bad).to_string());
        Ok(())
    })
}

/// Download `quant` of `repo` at `revision` if needed (see
/// `ta_cache_download_variant`), then load it with `params` (NULL = defaults).
///
/// # Safety
/// Pointers must be NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn ta_model_load_from_cache(
    cache: *const ta_cache,
    repo: *const c_char,
    revision: *const c_char,
    quant: *const c_char,
    params: *const ta_model_params,
    progress: ta_download_callback,
    user_data: *mut c_void,
    out_model: *mut *mut ta_model,
) -> ta_status {
    boundary("ta_model_load_from_cache", || {
        let cache = c(cache)?;
        let repo = str_arg(repo, "repo")?;
        let rev = revision_arg(revision)?;
        let quant = str_arg(quant, "quant")?;
        out(out_model, "out_model")?;
        let mut cb = progress_fn(progress, user_data);
        let first = first_shard(cache, repo, rev, quant, &mut cb)?;
        super::model::load_path(&first, params, out_model)
    })
}
