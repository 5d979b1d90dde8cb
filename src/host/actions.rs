//! The host's actions. Quick ones answer on the caller's thread; long ones
//! (downloads, loads, generation, embeddings) on their own.

use super::{Inner, Loaded, Reply, Running};
use crate::engine::embed::{EmbedParams, Pooling};
use crate::engine::{
    ChatMessage, Context, ContextParams, GenParams, Model, ModelParams, StopReason,
};
use crate::error::ErrorKind;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) const NAMES: &[&str] = &[
    "PING",
    "HARDWARE",
    "LIST_MODELS",
    "SCAN_REPO",
    "PULL_MODEL",
    "DELETE_MODEL",
    "LOAD_MODEL",
    "UNLOAD_MODEL",
    "GET_MODEL_STATE",
    "GENERATE",
    "EMBED",
    "CANCEL",
];

/// Actions run on a thread of their own: everything that may take more than a
/// moment (disk, network, inference), so the reader stays free for CANCEL.
const LONG: &[&str] = &[
    "HARDWARE",
    "LIST_MODELS",
    "DELETE_MODEL",
    "SCAN_REPO",
    "PULL_MODEL",
    "LOAD_MODEL",
    "GENERATE",
    "EMBED",
];

/// Progress messages of one download are at most this frequent.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Texts one EMBED request may carry.
const MAX_EMBED_TEXTS: usize = 1024;
/// Texts embedded between two checks for CANCEL.
const EMBED_GROUP: usize = 64;

pub(super) fn is_known(a: &str) -> bool {
    NAMES.contains(&a)
}

pub(super) fn is_long(a: &str) -> bool {
    LONG.contains(&a)
}

type Out = std::result::Result<Value, Reply>;

pub(super) fn quick(h: &Inner, _id: &Value, action: &str, req: &Value) -> Out {
    match action {
        "PING" => Ok(json!({"pong": true, "version": crate::VERSION, "abi": crate::ABI_VERSION})),
        "HARDWARE" => hardware(h, req),
        "LIST_MODELS" => list_models(h),
        "DELETE_MODEL" => delete_model(h, req),
        "UNLOAD_MODEL" => {
            let key = str_field(req, "model")?;
            match h.models.lock().remove(key) {
                Some(_) => Ok(json!({"unloaded": key})),
                None => Err(not_loaded(key)),
            }
        }
        "GET_MODEL_STATE" => Ok(model_state(h, opt_str(req, "model")?)),
        "CANCEL" => {
            let target = req
                .get("target")
                .filter(|v| v.is_string() || v.is_number())
                .ok_or_else(|| {
                    Reply::bad("CANCEL needs \"target\": the id of a running request")
                })?;
            let found = h.running.lock().get(&target.to_string()).cloned();
            if let Some(r) = &found {
                r.cancel();
            }
            Ok(json!({"cancelled": found.is_some()}))
        }
        _ => Err(Reply::bad(format!("{action} is not a quick action"))),
    }
}

pub(super) fn long(h: &Inner, id: &Value, action: &str, req: &Value, run: &Running) -> Out {
    match action {
        "SCAN_REPO" => {
            let repo = str_field(req, "repo")?;
            let rev = opt_str(req, "revision")?.unwrap_or("main");
            let m = h.cache()?.scan(repo, rev)?;
            Ok(serde_json::from_str(&m.to_json()).unwrap_or(Value::Null))
        }
        "PULL_MODEL" => pull(h, id, req, run).map(|paths| json!({ "paths": paths })),
        "LOAD_MODEL" => load(h, id, req, run),
        "GENERATE" => generate(h, id, req, run),
        "EMBED" => embed(h, req, run),
        "HARDWARE" | "LIST_MODELS" | "DELETE_MODEL" => quick(h, id, action, req),
        _ => Err(Reply::bad(format!("{action} is not a long action"))),
    }
}

// ----------------------------------------------------------------------------- fields

fn str_field<'a>(req: &'a Value, k: &str) -> std::result::Result<&'a str, Reply> {
    match req.get(k) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(Reply::bad(format!("\"{k}\" is missing"))),
        Some(_) => Err(Reply::bad(format!("\"{k}\" must be a string"))),
    }
}

fn opt_str<'a>(req: &'a Value, k: &str) -> std::result::Result<Option<&'a str>, Reply> {
    match req.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reply::bad(format!("\"{k}\" must be a string"))),
    }
}

fn opt_bool(req: &Value, k: &str) -> std::result::Result<Option<bool>, Reply> {
    match req.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Reply::bad(format!("\"{k}\" must be true or false"))),
    }
}

fn opt_num(req: &Value, k: &str, min: f64, max: f64) -> std::result::Result<Option<f64>, Reply> {
    match req.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(Reply::bad(format!("\"{k}\" must be in {min}..={max}"))),
        },
        Some(_) => Err(Reply::bad(format!("\"{k}\" must be a number"))),
    }
}

fn not_loaded(key: &str) -> Reply {
    Reply {
        code: ErrorKind::NotFound.name().into(),
        message: format!("no model is loaded under {key:?} (LOAD_MODEL first)"),
    }
}

fn loaded(h: &Inner, req: &Value) -> std::result::Result<Arc<Loaded>, Reply> {
    let key = str_field(req, "model")?;
    h.models
        .lock()
        .get(key)
        .cloned()
        .ok_or_else(|| not_loaded(key))
}

// ----------------------------------------------------------------------------- actions

fn hardware(h: &Inner, req: &Value) -> Out {
    let hw = crate::hardware::detect(&crate::engine::system_info());
    let mut out = json!({ "hardware": hw.to_json() });
    // A fit estimate for a loaded model, a cached repo + variant, or an allowed path
    // (read from the file's header, without loading it).
    let gguf = match (
        opt_str(req, "model")?,
        opt_str(req, "repo")?,
        opt_str(req, "path")?,
    ) {
        (Some(key), None, None) => {
            let l = h
                .models
                .lock()
                .get(key)
                .cloned()
                .ok_or_else(|| not_loaded(key))?;
            Some(l.model.gguf().clone())
        }
        (None, Some(repo), None) => {
            let variant = str_field(req, "variant")?;
            let rev = opt_str(req, "revision")?.unwrap_or("main");
            let cache = h.cache()?;
            let v = cache.manifest(repo, rev)?.variant(variant)?.clone();
            let first = v
                .files
                .first()
                .ok_or_else(|| Reply::bad("the variant has no files"))?;
            Some(crate::gguf::open_model(
                &cache.snapshot_path(repo, rev, first)?,
            )?)
        }
        (None, None, Some(p)) => Some(crate::gguf::open_model(&allowed_path(h, p)?)?),
        (None, None, None) => None,
        _ => {
            return Err(Reply::bad(
                "HARDWARE takes one of \"model\", \"repo\" + \"variant\" or \"path\"",
            ))
        }
    };
    if let Some(g) = gguf {
        let n_ctx = opt_num(req, "n_ctx", 0.0, (1u64 << 24) as f64)?.unwrap_or(4096.0) as u64;
        let shape = crate::hardware::fit::ModelShape::from_gguf(&g)?;
        let fit = crate::hardware::fit::estimate(
            &shape,
            &crate::hardware::fit::FitParams {
                n_ctx,
                ..Default::default()
            },
            &hw,
        );
        out["fit"] = fit.to_json();
    }
    Ok(out)
}

fn list_models(h: &Inner) -> Out {
    let cached = match h.cache() {
        Ok(c) => c
            .list_repos()?
            .into_iter()
            .map(|r| {
                // The variants of its main branch, from the cache alone.
                let variants = c
                    .manifest(&r.repo_id, "main")
                    .ok()
                    .and_then(|m| serde_json::from_str::<Value>(&m.to_json()).ok())
                    .and_then(|m| m.get("variants").cloned())
                    .unwrap_or(Value::Null);
                json!({"repo": r.repo_id, "size_on_disk": r.size_on_disk, "n_files": r.n_files,
                       "revisions": r.revisions, "refs": r.refs, "variants": variants})
            })
            .collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    let loaded: Vec<Value> = h.models.lock().values().map(|l| loaded_json(l)).collect();
    Ok(json!({"cached": cached, "loaded": loaded}))
}

fn loaded_json(l: &Loaded) -> Value {
    let i = l.model.info();
    json!({"model": l.key, "source": l.source, "architecture": i.architecture, "name": i.name,
           "quantization": i.quantization, "n_ctx_train": i.n_ctx_train, "n_params": i.n_params,
           "size_bytes": i.size_bytes})
}

fn model_state(h: &Inner, key: Option<&str>) -> Value {
    let models = h.models.lock();
    let pick: Vec<Value> = models
        .values()
        .filter(|l| key.is_none_or(|k| k == l.key))
        .map(|l| {
            let mut v = loaded_json(l);
            v["n_ctx_seq"] = json!(l._ctx.n_ctx_seq());
            v["n_seq_max"] = json!(l._ctx.n_seq_max());
            v
        })
        .collect();
    json!({"loaded": pick, "running": h.running.lock().len(), "max_models": h.cfg.max_models})
}

fn delete_model(h: &Inner, req: &Value) -> Out {
    let repo = str_field(req, "repo")?;
    let cache = h.cache()?;
    match opt_str(req, "revision")? {
        Some(rev) => cache.delete_revision(repo, rev)?,
        None => cache.delete_repo(repo)?,
    }
    Ok(json!({"deleted": repo}))
}

/// A progress callback sending `progress` messages (throttled) and stopping when
/// the request is cancelled or the host shuts down.
fn progress<'a>(
    h: &'a Inner,
    id: &'a Value,
    run: &'a Running,
) -> impl FnMut(&str, u64, u64) -> bool + 'a {
    let mut last = Instant::now() - PROGRESS_EVERY;
    move |file: &str, done: u64, total: u64| {
        if last.elapsed() >= PROGRESS_EVERY || done == total {
            last = Instant::now();
            h.send(
                &json!({"id": id, "type": "progress", "stage": "download", "file": file, "done": done, "total": total}),
            );
        }
        !run.is_cancelled() && !h.shutdown.load(Ordering::Acquire)
    }
}

/// Bytes a load reads: the file, or every shard of a split model (`-00001-of-0000N`).
fn model_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    match name.as_deref().and_then(crate::gguf::parse_split_name) {
        Some((prefix, 1, n)) => (1..=n)
            .map(|k| size(&path.with_file_name(format!("{prefix}-{k:05}-of-{n:05}.gguf"))))
            .sum(),
        _ => size(path),
    }
}

/// The progress of one load: `step` is llama.cpp's callback (a fraction), sending a
/// `progress` message (`stage: "load"`, in bytes of `model_bytes`) at most once per
/// percent, and stopping the load when the request is cancelled or the host shuts
/// down; `complete` sends the final `done == total` message if no step did.
struct LoadProgress<'a> {
    h: &'a Inner,
    id: &'a Value,
    run: &'a Running,
    file: String,
    total: u64,
    /// Last percent and bytes sent (-1: none yet).
    pct: i64,
    done: u64,
}

impl<'a> LoadProgress<'a> {
    fn new(h: &'a Inner, id: &'a Value, run: &'a Running, path: &Path) -> Self {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        LoadProgress {
            h,
            id,
            run,
            file,
            total: model_bytes(path),
            pct: -1,
            done: 0,
        }
    }

    fn send(&self) {
        self.h
            .send(&json!({"id": self.id, "type": "progress", "stage": "load",
            "file": self.file, "done": self.done, "total": self.total}));
    }

    fn step(&mut self, fraction: f32) -> bool {
        let f = if fraction.is_finite() {
            f64::from(fraction).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let pct = (f * 100.0).floor() as i64;
        if pct > self.pct {
            self.pct = pct;
            self.done = ((f * self.total as f64) as u64).clamp(self.done, self.total);
            self.send();
        }
        !self.run.is_cancelled() && !self.h.shutdown.load(Ordering::Acquire)
    }

    fn complete(&mut self) {
        if self.pct < 100 || self.done < self.total {
            self.pct = 100;
            self.done = self.total;
            self.send();
        }
    }
}

fn pull(
    h: &Inner,
    id: &Value,
    req: &Value,
    run: &Running,
) -> std::result::Result<Vec<String>, Reply> {
    let repo = str_field(req, "repo")?;
    let rev = opt_str(req, "revision")?.unwrap_or("main");
    let cache = h.cache()?;
    let mut cb = progress(h, id, run);
    let paths = match (opt_str(req, "variant")?, opt_str(req, "file")?) {
        (Some(v), None) => cache.download_variant(repo, rev, v, &mut cb)?,
        (None, Some(f)) => vec![cache.download_file(repo, rev, f, &mut cb)?],
        _ => {
            return Err(Reply::bad(
                "PULL_MODEL needs \"repo\" and one of \"variant\" or \"file\"",
            ))
        }
    };
    Ok(paths.iter().map(|p| p.display().to_string()).collect())
}

/// A `path` the extension asks to load: it must exist and, resolved (symlinks
/// included), lie inside the cache or a configured model folder.
fn allowed_path(h: &Inner, p: &str) -> std::result::Result<PathBuf, Reply> {
    // A path that does not resolve gets the same answer as one outside: the
    // extension learns nothing about files it may not read.
    let outside = || {
        Reply::forbidden(format!(
            "{p} is not a file inside the model cache or the folders this host was configured to read"
        ))
    };
    let real = std::fs::canonicalize(p).map_err(|_| outside())?;
    let mut roots: Vec<PathBuf> = h.cfg.model_dirs.clone();
    if let Ok(c) = h.cache() {
        roots.push(c.root().to_path_buf());
    }
    let inside = roots.iter().any(|r| {
        std::fs::canonicalize(r)
            .map(|r| real.starts_with(r))
            .unwrap_or(false)
    });
    if inside && real.is_file() {
        Ok(real)
    } else {
        Err(outside())
    }
}

fn load(h: &Inner, id: &Value, req: &Value, run: &Running) -> Out {
    let (path, default_key) = match (opt_str(req, "path")?, opt_str(req, "repo")?) {
        (Some(p), None) => {
            let real = allowed_path(h, p)?;
            let key = real
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.to_owned());
            (real, key)
        }
        (None, Some(repo)) => {
            let variant = str_field(req, "variant")?;
            let rev = opt_str(req, "revision")?.unwrap_or("main");
            let cache = h.cache()?;
            let paths = if opt_bool(req, "pull")?.unwrap_or(false) {
                let mut cb = progress(h, id, run);
                cache.download_variant(repo, rev, variant, &mut cb)?
            } else {
                let m = cache.manifest(repo, rev)?;
                let v = m.variant(variant)?;
                let first = v
                    .files
                    .first()
                    .ok_or_else(|| Reply::bad("the variant has no files"))?;
                if !cache.has_file(repo, rev, first) {
                    return Err(Reply {
                        code: ErrorKind::NotFound.name().into(),
                        message: format!(
                            "{repo} {variant} is not in the cache: PULL_MODEL it, or LOAD_MODEL with \"pull\": true"
                        ),
                    });
                }
                vec![cache.snapshot_path(repo, rev, first)?]
            };
            let first = paths
                .into_iter()
                .next()
                .ok_or_else(|| Reply::bad("nothing to load"))?;
            (first, format!("{repo}:{variant}"))
        }
        _ => {
            return Err(Reply::bad(
                "LOAD_MODEL needs either \"path\" or \"repo\" and \"variant\"",
            ))
        }
    };
    let key = opt_str(req, "key")?
        .map(str::to_owned)
        .unwrap_or(default_key);
    if key.is_empty() || key.len() > 256 {
        return Err(Reply::bad("\"key\" must be 1 to 256 characters"));
    }
    let _one_load_at_a_time = h.loading.lock();
    if let Some(l) = h.models.lock().get(&key) {
        return Ok(json!({"model": key, "already_loaded": true, "info": loaded_json(l)}));
    }
    if h.models.lock().len() >= h.cfg.max_models {
        return Err(Reply {
            code: ErrorKind::Busy.name().into(),
            message: format!(
                "{} models are loaded (the limit); UNLOAD_MODEL one first",
                h.cfg.max_models
            ),
        });
    }
    let mut lp = LoadProgress::new(h, id, run, &path);
    let model = Arc::new(Model::load_with_progress(
        &path,
        &ModelParams::default(),
        Some(&mut |f: f32| lp.step(f)),
    )?);
    lp.complete();
    let n_ctx = opt_num(req, "n_ctx", 16.0, h.cfg.n_ctx as f64)?.map_or(h.cfg.n_ctx, |n| n as u32);
    let n_seq_max = h.cfg.n_seq_max;
    let ctx = Context::new(
        model.clone(),
        &ContextParams {
            // n_ctx is per conversation: the cache holds one window per sequence.
            n_ctx: n_ctx.saturating_mul(n_seq_max),
            n_seq_max,
            n_threads: h.cfg.n_threads,
            ..Default::default()
        },
    )?;
    let l = Arc::new(Loaded {
        key: key.clone(),
        source: path.display().to_string(),
        seqs: ctx.sequences(),
        _ctx: ctx,
        model,
        embed: parking_lot::Mutex::new(None),
    });
    let info = loaded_json(&l);
    // The key and the limit were checked under `loading`, which is still held: no
    // other load can have added a model since.
    h.models.lock().insert(key.clone(), l);
    Ok(json!({"model": key, "info": info}))
}

fn gen_params(req: &Value) -> std::result::Result<GenParams, Reply> {
    let mut p = GenParams::default();
    let o = match req.get("params") {
        None | Some(Value::Null) => return Ok(p),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(Reply::bad("\"params\" must be an object")),
    };
    let v = Value::Object(o.clone());
    if let Some(x) = opt_num(&v, "temperature", 0.0, 100.0)? {
        p.temperature = x as f32;
    }
    if let Some(x) = opt_num(&v, "top_p", 0.0, 1.0)? {
        p.top_p = x as f32;
    }
    if let Some(x) = opt_num(&v, "min_p", 0.0, 1.0)? {
        p.min_p = x as f32;
    }
    if let Some(x) = opt_num(&v, "top_k", 0.0, 1e6)? {
        p.top_k = x as i32;
    }
    if let Some(x) = opt_num(&v, "repeat_penalty", 0.0, 100.0)? {
        p.repeat_penalty = x as f32;
    }
    if let Some(x) = opt_num(&v, "frequency_penalty", -100.0, 100.0)? {
        p.frequency_penalty = x as f32;
    }
    if let Some(x) = opt_num(&v, "presence_penalty", -100.0, 100.0)? {
        p.presence_penalty = x as f32;
    }
    if let Some(x) = opt_num(&v, "seed", 0.0, u32::MAX as f64)? {
        p.seed = x as u32;
    }
    if let Some(x) = opt_num(&v, "max_tokens", 0.0, 1e7)? {
        p.max_tokens = x as i32;
    }
    if let Some(s) = v.get("stop") {
        p.stop = match s {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) if a.len() <= 16 => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| Reply::bad("\"stop\" must hold strings"))?,
            Value::Null => Vec::new(),
            _ => {
                return Err(Reply::bad(
                    "\"stop\" must be a string or a list of up to 16 strings",
                ))
            }
        };
    }
    p.grammar = opt_str(&v, "grammar")?.map(str::to_owned);
    p.chat_template = opt_str(&v, "chat_template")?.map(str::to_owned);
    p.chat_tools = match v.get("tools") {
        None | Some(Value::Null) => None,
        Some(t @ Value::Array(_)) => Some(t.to_string()),
        Some(_) => return Err(Reply::bad("\"tools\" must be a list")),
    };
    p.chat_vars = match v.get("template_vars") {
        None | Some(Value::Null) => None,
        Some(t @ Value::Object(_)) => Some(t.to_string()),
        Some(_) => return Err(Reply::bad("\"template_vars\" must be an object")),
    };
    Ok(p)
}

fn messages(v: &Value) -> std::result::Result<Vec<ChatMessage>, Reply> {
    let a = v
        .as_array()
        .ok_or_else(|| Reply::bad("\"messages\" must be a list of {role, content}"))?;
    let mut out = Vec::with_capacity(a.len());
    for (i, m) in a.iter().enumerate() {
        let s = |k: &str| -> std::result::Result<Option<String>, Reply> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Reply::bad(format!("messages[{i}].{k} must be a string"))),
            }
        };
        let role =
            s("role")?.ok_or_else(|| Reply::bad(format!("messages[{i}].role is missing")))?;
        out.push(ChatMessage {
            role,
            content: s("content")?.unwrap_or_default(),
            name: s("name")?,
            tool_call_id: s("tool_call_id")?,
            tool_calls: match m.get("tool_calls") {
                None | Some(Value::Null) => None,
                Some(t @ Value::Array(_)) => Some(t.to_string()),
                Some(_) => {
                    return Err(Reply::bad(format!(
                        "messages[{i}].tool_calls must be a list"
                    )))
                }
            },
            reasoning_content: s("reasoning_content")?,
        });
    }
    Ok(out)
}

fn stop_name(s: StopReason) -> &'static str {
    match s {
        StopReason::Eog => "eog",
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopString => "stop",
        StopReason::Cancelled => "cancelled",
        StopReason::ContextFull => "context_full",
    }
}

fn generate(h: &Inner, id: &Value, req: &Value, run: &Running) -> Out {
    let l = loaded(h, req)?;
    let params = gen_params(req)?;
    let input = match (req.get("messages"), opt_str(req, "prompt")?) {
        (Some(m), None) => Ok(messages(m)?),
        (None, Some(p)) => Err(p.to_owned()),
        _ => {
            return Err(Reply::bad(
                "GENERATE needs one of \"messages\" or \"prompt\"",
            ))
        }
    };
    let mut seq = l.seqs.new_sequence()?;
    *run.abort.lock() = Some(seq.abort_handle());
    if run.is_cancelled() {
        return Ok(
            json!({"text": "", "stop_reason": "cancelled", "n_prompt_tokens": 0,
                         "n_reused_tokens": 0, "n_generated_tokens": 0, "prompt_ms": 0.0,
                         "gen_ms": 0.0}),
        );
    }
    let mut text = String::new();
    let mut on_text = |piece: &str| {
        text.push_str(piece);
        h.send(&json!({"id": id, "type": "token", "text": piece}));
        !run.is_cancelled() && !h.shutdown.load(Ordering::Acquire)
    };
    let r = match &input {
        Ok(msgs) => seq.chat(msgs, &params, &mut on_text),
        Err(prompt) => seq.generate(prompt, &params, &mut on_text),
    };
    *run.abort.lock() = None;
    match r {
        Ok(r) => Ok(
            json!({"text": text, "stop_reason": stop_name(r.stop_reason),
                           "n_prompt_tokens": r.n_prompt, "n_reused_tokens": r.n_reused,
                           "n_generated_tokens": r.n_generated, "prompt_ms": r.prompt_ms,
                           "gen_ms": r.gen_ms}),
        ),
        // Cancelled while reading the prompt: a result like any cancelled one.
        Err(e) if e.kind() == ErrorKind::Cancelled => Ok(json!({"text": text,
            "stop_reason": "cancelled", "n_prompt_tokens": 0, "n_reused_tokens": 0,
            "n_generated_tokens": 0, "prompt_ms": 0.0, "gen_ms": 0.0})),
        Err(e) => Err(e.into()),
    }
}

fn embed(h: &Inner, req: &Value, run: &Running) -> Out {
    let l = loaded(h, req)?;
    let texts: Vec<&str> = req
        .get("texts")
        .and_then(Value::as_array)
        .ok_or_else(|| Reply::bad("\"texts\" must be a list of strings"))?
        .iter()
        .map(Value::as_str)
        .collect::<Option<_>>()
        .ok_or_else(|| Reply::bad("\"texts\" must be a list of strings"))?;
    if texts.len() > MAX_EMBED_TEXTS {
        return Err(Reply::bad(format!(
            "at most {MAX_EMBED_TEXTS} texts per EMBED"
        )));
    }
    let p = EmbedParams {
        normalize: opt_bool(req, "normalize")?.unwrap_or(true),
        truncate: opt_bool(req, "truncate")?.unwrap_or(false),
    };
    let ctx = {
        let mut e = l.embed.lock();
        match &*e {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(parking_lot::Mutex::new(Context::new(
                    l.model.clone(),
                    &ContextParams {
                        embeddings: true,
                        pooling: Pooling::Model,
                        n_threads: h.cfg.n_threads,
                        ..Default::default()
                    },
                )?));
                *e = Some(c.clone());
                c
            }
        }
    };
    // In groups, so CANCEL and shutdown stop a long request between them.
    let (mut vectors, mut n_tokens, mut dim) = (Vec::with_capacity(texts.len()), Vec::new(), 0);
    for group in texts.chunks(EMBED_GROUP) {
        if run.is_cancelled() || h.shutdown.load(Ordering::Acquire) {
            return Err(Reply::from(crate::Error::cancelled("EMBED was cancelled")));
        }
        let e = ctx.lock().embed(group, &p)?;
        dim = e.dim;
        vectors.extend((0..e.len()).map(|i| json!(e.get(i))));
        n_tokens.extend(e.n_tokens);
    }
    Ok(json!({"dim": dim, "vectors": vectors, "n_tokens": n_tokens}))
}
