//! What the subcommands share: finding a model (a file, or a repo in the cache),
//! opening the cache, and the library's errors as text.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tabagent::cache::{Cache, CacheOptions, Manifest, VariantStatus};
use tabagent::engine::{Model, ModelParams};

pub type CliResult<T> = std::result::Result<T, String>;

pub fn err(e: tabagent::Error) -> String {
    format!("{} ({})", e.message(), e.kind().name())
}

pub fn open_cache() -> CliResult<Cache> {
    Cache::open(CacheOptions::default()).map_err(err)
}

/// `org/name[:VARIANT][@REV]` → (repo, variant, revision).
pub fn parse_ref(s: &str) -> (String, Option<String>, String) {
    let (s, rev) = match s.split_once('@') {
        Some((a, r)) => (a, r.to_string()),
        None => (s, "main".to_string()),
    };
    match s.split_once(':') {
        Some((repo, v)) if !v.is_empty() => (repo.to_string(), Some(v.to_string()), rev),
        Some((repo, _)) => (repo.to_string(), None, rev),
        None => (s.to_string(), None, rev),
    }
}

/// The variant to use when none is named: Q4_K_M, then another 4-bit one, then
/// the smallest; with `prefer_cached`, a downloaded one wins over one that is not.
pub fn default_variant(m: &Manifest, prefer_cached: bool) -> CliResult<String> {
    let pick = |only_cached: bool| {
        let vs: Vec<_> = m
            .variants
            .iter()
            .filter(|v| !only_cached || v.status == VariantStatus::Downloaded)
            .collect();
        vs.iter()
            .find(|v| v.quant.eq_ignore_ascii_case("Q4_K_M"))
            .or_else(|| {
                vs.iter()
                    .find(|v| v.quant.to_ascii_uppercase().starts_with("Q4"))
            })
            .or_else(|| vs.iter().min_by_key(|v| v.size))
            .map(|v| v.name.clone())
    };
    prefer_cached
        .then(|| pick(true))
        .flatten()
        .or_else(|| pick(false))
        .ok_or_else(|| format!("{} has no GGUF model files", m.repo_id))
}

/// A display name for a model reference: a file's stem, or the reference as given.
pub fn model_name(spec: &str) -> String {
    let p = Path::new(spec);
    if p.exists() {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string())
    } else {
        spec.to_string()
    }
}

/// A path that exists, or a repo reference resolved through the cache (downloaded
/// when missing, with `progress`).
pub fn resolve_model(
    spec: &str,
    progress: &mut dyn FnMut(&str, u64, u64) -> bool,
) -> CliResult<PathBuf> {
    let p = Path::new(spec);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if spec.starts_with('/') || spec.starts_with('.') || spec.ends_with(".gguf") {
        return Err(format!("{spec}: no such file"));
    }
    let (repo, variant, rev) = parse_ref(spec);
    if !repo.contains('/') {
        return Err(format!(
            "{spec}: neither a file nor a hub repo (org/name[:VARIANT])"
        ));
    }
    let cache = open_cache()?;
    let variant = match variant {
        Some(v) => v,
        None => {
            let m = cache
                .manifest(&repo, &rev)
                .or_else(|_| cache.scan(&repo, &rev))
                .map_err(err)?;
            default_variant(&m, true)?
        }
    };
    let paths = cache
        .download_variant(&repo, &rev, &variant, progress)
        .map_err(err)?;
    paths
        .into_iter()
        .next()
        .ok_or_else(|| format!("{spec}: the variant has no files"))
}

pub fn load_model(path: &Path) -> CliResult<Arc<Model>> {
    tabagent::engine::init();
    Model::load(path, &ModelParams::default())
        .map(Arc::new)
        .map_err(err)
}

pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}
