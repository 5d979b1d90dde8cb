//! The cache and inspection subcommands: pull, list, rm, show, verify, search,
//! hardware, embed.

use crate::common::{self, err, human_bytes, CliResult};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tabagent::engine::embed::EmbedParams;
use tabagent::engine::{Model, ModelParams};
use tabagent::hardware::{self, fit};

/// A progress bar per file, following the library's progress callback.
fn progress_bar() -> impl FnMut(&str, u64, u64) -> bool {
    let mut bar: Option<(String, ProgressBar)> = None;
    move |file: &str, done: u64, total: u64| {
        if bar.as_ref().map(|(f, _)| f.as_str()) != Some(file) {
            if let Some((_, b)) = bar.take() {
                b.finish();
            }
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(file.to_string());
            bar = Some((file.to_string(), b));
        }
        if let Some((_, b)) = &bar {
            if total > 0 {
                b.set_length(total);
            }
            b.set_position(done);
            if total > 0 && done >= total {
                b.finish();
            }
        }
        true
    }
}

pub fn pull(spec: &str) -> CliResult<()> {
    let (repo, variant, rev) = common::parse_ref(spec);
    tabagent::cache::validate_repo_id(&repo).map_err(err)?;
    let cache = common::open_cache()?;
    let variant = match variant {
        Some(v) => v,
        None => {
            let m = cache.scan(&repo, &rev).map_err(err)?;
            common::default_variant(&m, false)?
        }
    };
    let mut progress = progress_bar();
    let paths = cache
        .download_variant(&repo, &rev, &variant, &mut progress)
        .map_err(err)?;
    for p in paths {
        println!("{}", p.display());
    }
    Ok(())
}

pub fn list(variants: bool) -> CliResult<()> {
    let cache = common::open_cache()?;
    let repos = cache.list_repos().map_err(err)?;
    if repos.is_empty() {
        eprintln!("the cache at {} holds no models", cache.root().display());
        return Ok(());
    }
    println!("{:<50} {:>10} {:>6}", "REPO", "SIZE", "FILES");
    for r in repos {
        println!(
            "{:<50} {:>10} {:>6}",
            r.repo_id,
            human_bytes(r.size_on_disk),
            r.n_files
        );
        if variants {
            let rev = r
                .refs
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "main".into());
            if let Ok(m) = cache.manifest(&r.repo_id, &rev) {
                for v in &m.variants {
                    println!(
                        "  {:<48} {:>10} {}",
                        format!("{}:{}", r.repo_id, v.quant),
                        human_bytes(v.size),
                        v.status.as_str()
                    );
                }
            }
        }
    }
    Ok(())
}

pub fn rm(spec: &str) -> CliResult<()> {
    let cache = common::open_cache()?;
    let (repo, variant, rev) = common::parse_ref(spec);
    if variant.is_some() {
        return Err("rm removes a whole repo or revision (org/name[@REV]), not one variant".into());
    }
    if spec.contains('@') {
        cache.delete_revision(&repo, &rev).map_err(err)?;
        println!("removed {repo}@{rev}");
    } else {
        cache.delete_repo(&repo).map_err(err)?;
        println!("removed {repo}");
    }
    Ok(())
}

pub fn show(spec: &str, template_only: bool, as_json: bool) -> CliResult<()> {
    let mut progress = progress_bar();
    let path = common::resolve_model(spec, &mut progress)?;
    tabagent::engine::init();
    let model = Model::load(
        &path,
        &ModelParams {
            vocab_only: true,
            ..ModelParams::default()
        },
    )
    .map_err(err)?;
    let info = model.info();
    if template_only {
        println!("{}", info.chat_template.as_deref().unwrap_or(""));
        return Ok(());
    }
    let hw = hardware::detect(&tabagent::engine::system_info());
    let fit = fit::ModelShape::from_gguf(model.gguf())
        .map(|s| fit::estimate(&s, &fit::FitParams::default(), &hw));
    if as_json {
        let mut v = model.to_json();
        v["path"] = json!(path.display().to_string());
        v["fit"] = match &fit {
            Ok(f) => f.to_json(),
            Err(e) => json!({"error": e.message()}),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    println!("path          {}", path.display());
    println!("name          {}", info.name);
    println!("architecture  {}", info.architecture);
    println!("quantisation  {}", info.quantization);
    println!("parameters    {:.1} M", info.n_params as f64 / 1e6);
    println!("file size     {}", human_bytes(info.file_size));
    println!("context       {} (training)", info.n_ctx_train);
    println!(
        "layers        {}  embedding {}  heads {} (kv {})",
        info.n_layer, info.n_embd, info.n_head, info.n_head_kv
    );
    println!("vocabulary    {}", info.n_vocab);
    match &fit {
        Ok(f) => println!(
            "fit (n_ctx {}) {} needed: weights {} + KV {} + compute {}; {} in RAM{}; {} threads",
            f.n_ctx,
            human_bytes(f.total_bytes),
            human_bytes(f.weights_bytes),
            human_bytes(f.kv_bytes),
            human_bytes(f.compute_bytes),
            if f.fits_ram { "fits" } else { "does NOT fit" },
            if hw.gpus.is_empty() {
                String::new()
            } else {
                format!(
                    "; GPU: {} ({} layers)",
                    if f.fits_vram { "fits" } else { "partly" },
                    f.recommended_gpu_layers
                )
            },
            f.recommended_threads
        ),
        Err(e) => println!("fit           unknown: {}", e.message()),
    }
    match &info.chat_template {
        Some(t) => println!("chat template\n{t}"),
        None => println!("chat template (none)"),
    }
    Ok(())
}

pub fn verify(repo: Option<&str>) -> CliResult<()> {
    let cache = common::open_cache()?;
    let bad = cache.verify(repo).map_err(err)?;
    if bad.is_empty() {
        println!("all files intact");
        return Ok(());
    }
    for m in &bad {
        println!(
            "MISMATCH {}: expected {}, got {}",
            m.path.display(),
            m.expected,
            m.actual
        );
    }
    Err(format!("{} damaged file(s)", bad.len()))
}

/// The hub's model search (`GET {endpoint}/api/models?search=Q&filter=gguf`).
pub fn search(query: &str, limit: u32) -> CliResult<()> {
    let cache = common::open_cache()?;
    let endpoint = cache.endpoint().trim_end_matches('/').to_string();
    let mut req = ureq::get(&format!("{endpoint}/api/models"))
        .timeout(std::time::Duration::from_secs(30))
        .query("search", query)
        .query("filter", "gguf")
        .query("sort", "downloads")
        .query("direction", "-1")
        .query("limit", &limit.to_string());
    if let Ok(t) = std::env::var("HF_TOKEN") {
        if !t.is_empty() {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
    }
    let resp = req.call().map_err(|e| format!("search {endpoint}: {e}"))?;
    let body = resp
        .into_string()
        .map_err(|e| format!("search: reading the hub's answer: {e}"))?;
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| format!("search: the hub's answer is not JSON: {e}"))?;
    let list = v
        .as_array()
        .ok_or("search: the hub's answer is not a list")?;
    if list.is_empty() {
        eprintln!("no models match {query:?}");
    }
    for m in list {
        let id = m
            .get("id")
            .or_else(|| m.get("modelId"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        let dl = m.get("downloads").and_then(Value::as_u64).unwrap_or(0);
        let likes = m.get("likes").and_then(Value::as_u64).unwrap_or(0);
        println!("{id:<60} {dl:>10} downloads {likes:>6} likes");
    }
    Ok(())
}

pub fn hardware(as_json: bool) -> CliResult<()> {
    let hw = hardware::detect(&tabagent::engine::system_info());
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&hw.to_json()).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let c = &hw.cpu;
    println!("cpu      {} ({})", c.brand.trim(), c.uarch);
    println!(
        "cores    {} physical, {} logical, {} usable; {} threads recommended",
        c.physical_cores,
        c.logical_cores,
        c.affinity_cores,
        hw.recommended_threads()
    );
    println!(
        "memory   {} total, {} available",
        human_bytes(hw.memory.total_bytes),
        human_bytes(hw.memory.available_bytes)
    );
    for g in &hw.gpus {
        println!(
            "gpu      {} {} ({} free of {})",
            g.backend,
            g.name,
            g.free_bytes.map_or("?".into(), human_bytes),
            human_bytes(g.total_bytes)
        );
    }
    if hw.gpus.is_empty() {
        println!("gpu      none");
    }
    println!(
        "build    {} (best variant {})",
        hw.build_features.join(" "),
        hw.best_variant
    );
    if let Some(w) = &hw.build_warning {
        println!("warning  {w}");
    }
    Ok(())
}

pub fn embed(spec: &str, texts: &[String]) -> CliResult<()> {
    let mut progress = progress_bar();
    let path = common::resolve_model(spec, &mut progress)?;
    let model: Arc<Model> = common::load_model(Path::new(&path))?;
    let ctx = crate::server::embed_context(&model, 0).map_err(err)?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let e = ctx.embed(&refs, &EmbedParams::default()).map_err(err)?;
    for i in 0..e.len() {
        println!("{}", json!(e.get(i)));
    }
    Ok(())
}
