//! The native-messaging host: JSON requests from a browser extension (or any
//! program) answered with the engine, the cache and the hardware report. This
//! module is the dispatcher; `crates/tabagent-host` frames it on stdio, and
//! `ta_host_*` exposes it to C.
//!
//! Every request is an object with an `id` (string or number) and an `action`.
//! Every message sent back carries that `id` and a `type`: `progress`, `token`,
//! `result` or `error` (`code`, `message`); each request gets exactly one final
//! `result` or `error`. A message longer than [`MAX_MESSAGE`] is sent as `chunk`
//! messages whose `data` concatenate to it. The extension is not trusted: model
//! paths stay inside the cache and the configured folders, sizes and counts are
//! bounded, and bad input of any kind is an `error`, never a crash.

mod actions;
pub mod framing;

use crate::cache::{Cache, CacheOptions};
use crate::engine::{AbortHandle, Context, Model, Sequences};
use crate::error::{Error, ErrorKind, Result};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Browsers refuse a message from a native host of 1 MiB or more.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Raw bytes of the serialised message per `chunk` (escaped again as a JSON string,
/// at most 6x, plus the id: under `MAX_MESSAGE`).
const CHUNK_RAW: usize = 128 << 10;
/// Longest string `id` accepted: every message repeats it.
const MAX_ID: usize = 256;

/// How the host is set up. `HostConfig::default()` serves the default cache, no
/// extra model folders, and conservative bounds.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub cache: CacheOptions,
    /// Folders (besides the cache) from which LOAD_MODEL may open a `path`.
    pub model_dirs: Vec<PathBuf>,
    /// Largest request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Requests running at once (generations, downloads, loads); more get BUSY.
    pub max_running: usize,
    /// Models loaded at once.
    pub max_models: usize,
    /// Context of each loaded model: window of one conversation.
    pub n_ctx: u32,
    /// Conversations one loaded model serves at once (sequences of its context).
    pub n_seq_max: u32,
    /// Threads per context; 0 = physical cores.
    pub n_threads: i32,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            cache: CacheOptions::default(),
            model_dirs: Vec::new(),
            max_request_bytes: 4 << 20,
            max_running: 8,
            max_models: 4,
            n_ctx: 4096,
            n_seq_max: 4,
            n_threads: 0,
        }
    }
}

impl HostConfig {
    /// Read the JSON form: `{"cache_dir", "endpoint", "offline", "model_dirs": [...],
    /// "max_request_bytes", "max_running", "max_models", "n_ctx", "n_seq_max",
    /// "n_threads"}`, every key optional.
    pub fn from_json(text: &str) -> Result<HostConfig> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::invalid_arg(format!("host config is not valid JSON: {e}")))?;
        let o = v
            .as_object()
            .ok_or_else(|| Error::invalid_arg("host config must be a JSON object"))?;
        let mut c = HostConfig::default();
        let num = |k: &str, max: u64| -> Result<Option<u64>> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().filter(|n| *n <= max).map(Some).ok_or_else(|| {
                    Error::invalid_arg(format!("host config: {k} must be 0..={max}"))
                }),
            }
        };
        let s = |k: &str| -> Result<Option<String>> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(x)) => Ok(Some(x.clone())),
                _ => Err(Error::invalid_arg(format!(
                    "host config: {k} must be a string"
                ))),
            }
        };
        c.cache.root = s("cache_dir")?.map(PathBuf::from);
        c.cache.endpoint = s("endpoint")?;
        c.cache.offline = match o.get("offline") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            _ => return Err(Error::invalid_arg("host config: offline must be a boolean")),
        };
        if let Some(d) = o.get("model_dirs") {
            let a = d
                .as_array()
                .ok_or_else(|| Error::invalid_arg("host config: model_dirs must be a list"))?;
            for x in a {
                let p = x.as_str().ok_or_else(|| {
                    Error::invalid_arg("host config: model_dirs must hold strings")
                })?;
                c.model_dirs.push(PathBuf::from(p));
            }
        }
        if let Some(n) = num("max_request_bytes", framing::ABSURD as u64)? {
            c.max_request_bytes = n as usize;
        }
        if let Some(n) = num("max_running", 256)? {
            c.max_running = n.max(1) as usize;
        }
        if let Some(n) = num("max_models", 64)? {
            c.max_models = n.max(1) as usize;
        }
        if let Some(n) = num("n_ctx", 1 << 20)? {
            c.n_ctx = n as u32;
        }
        if let Some(n) = num("n_seq_max", crate::engine::MAX_SEQ as u64)? {
            c.n_seq_max = n.max(1) as u32;
        }
        if let Some(n) = num("n_threads", 1024)? {
            c.n_threads = n as i32;
        }
        Ok(c)
    }
}

/// Receives every message the host sends, one serialised JSON object per call
/// (never more than [`MAX_MESSAGE`] bytes); called from several threads, one at a
/// time.
pub type Sink = Box<dyn Fn(&str) + Send + Sync>;

/// The dispatcher. Dropping it cancels running requests and waits for them.
pub struct Host {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: HostConfig,
    sink: Mutex<Sink>,
    cache: std::result::Result<Arc<Cache>, Error>,
    models: Mutex<BTreeMap<String, Arc<Loaded>>>,
    /// Held through a whole LOAD_MODEL: loads one at a time, so the model limit
    /// and the key check cannot be raced past.
    loading: Mutex<()>,
    running: Mutex<HashMap<String, Arc<Running>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    shutdown: AtomicBool,
}

/// A loaded model and the context its conversations share.
struct Loaded {
    key: String,
    model: Arc<Model>,
    source: String,
    /// Kept alive for its sequences; `seqs` makes them from any thread.
    _ctx: Context,
    seqs: Sequences,
    embed: Mutex<Option<Arc<Mutex<Context>>>>,
}

/// A request in progress: CANCEL sets the flag and aborts what runs.
#[derive(Default)]
struct Running {
    cancelled: AtomicBool,
    abort: Mutex<Option<AbortHandle>>,
}

impl Running {
    fn cancel(self: &Arc<Self>) {
        self.cancelled.store(true, Ordering::Release);
        let Some(a) = self.abort.lock().clone() else {
            return; // not started: the request checks the flag before it runs
        };
        a.cancel();
        if a.took() {
            return;
        }
        // The sequence is between the flag check and its decode (templating,
        // tokenizing): an abort only takes while it runs, so keep trying briefly.
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("tabagent-host-cancel".into())
            .spawn(move || {
                let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while std::time::Instant::now() < until {
                    match me.abort.lock().clone() {
                        Some(a) => {
                            a.cancel();
                            if a.took() {
                                return;
                            }
                        }
                        None => return, // the request ended
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            });
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }
}

impl Host {
    pub fn new(cfg: HostConfig, sink: Sink) -> Host {
        let cache = Cache::open(cfg.cache.clone()).map(Arc::new);
        Host {
            inner: Arc::new(Inner {
                cfg,
                sink: Mutex::new(sink),
                cache,
                models: Mutex::new(BTreeMap::new()),
                loading: Mutex::new(()),
                running: Mutex::new(HashMap::new()),
                threads: Mutex::new(Vec::new()),
                shutdown: AtomicBool::new(false),
            }),
        }
    }

    /// Handle one request (the bytes of one message). Quick actions answer before
    /// this returns; long ones (generation, downloads, loads) run on their own
    /// thread and answer through the sink.
    pub fn post(&self, request: &[u8]) {
        let inner = &self.inner;
        if request.len() > inner.cfg.max_request_bytes {
            self.refuse_too_long(request.len());
            return;
        }
        let req: Value = match serde_json::from_slice(request) {
            Ok(v) => v,
            Err(e) => {
                inner.error(
                    &Value::Null,
                    "INVALID_REQUEST",
                    &format!("not valid JSON: {e}"),
                );
                return;
            }
        };
        let id = match req.get("id") {
            Some(Value::String(s)) if s.len() <= MAX_ID => Value::String(s.clone()),
            Some(v @ Value::Number(_)) => v.clone(),
            Some(Value::String(_)) => {
                inner.error(
                    &Value::Null,
                    "INVALID_REQUEST",
                    &format!("\"id\" is longer than {MAX_ID} bytes"),
                );
                return;
            }
            _ => {
                inner.error(
                    &Value::Null,
                    "INVALID_REQUEST",
                    "a request is an object with an \"id\" (string or number) and an \"action\"",
                );
                return;
            }
        };
        let Some(action) = req.get("action").and_then(Value::as_str) else {
            inner.error(&id, "INVALID_REQUEST", "\"action\" (a string) is missing");
            return;
        };
        let action = action.to_ascii_uppercase();
        if !actions::is_known(&action) {
            inner.error(
                &id,
                "INVALID_REQUEST",
                &format!(
                    "unknown action {action:?}; known: {}",
                    actions::NAMES.join(", ")
                ),
            );
            return;
        }
        if !actions::is_long(&action) {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                actions::quick(inner, &id, &action, &req)
            }));
            inner.finish(&id, r);
            return;
        }
        let key = id.to_string();
        let run = Arc::new(Running::default());
        let refused = {
            let mut running = inner.running.lock();
            if running.contains_key(&key) {
                Some((
                    "INVALID_REQUEST",
                    format!("a request with id {key} is already running"),
                ))
            } else if running.len() >= inner.cfg.max_running {
                Some((
                    ErrorKind::Busy.name(),
                    format!(
                        "{} requests are running (the limit); wait for one or cancel one",
                        running.len()
                    ),
                ))
            } else {
                running.insert(key.clone(), run.clone());
                None
            }
        };
        // Sent after the lock is released: the sink may take its time.
        if let Some((code, msg)) = refused {
            inner.error(&id, code, &msg);
            return;
        }
        let worker = inner.clone();
        let mine = run.clone();
        let id_for_failure = id.clone();
        let spawned = std::thread::Builder::new()
            .name("tabagent-host-req".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    actions::long(&worker, &id, &action, &req, &mine)
                }));
                worker.running.lock().remove(&key);
                worker.finish(&id, r);
            });
        match spawned {
            Ok(h) => {
                let mut t = inner.threads.lock();
                t.retain(|h| !h.is_finished());
                t.push(h);
            }
            Err(e) => {
                inner.running.lock().retain(|_, r| !Arc::ptr_eq(r, &run));
                inner.error(
                    &id_for_failure,
                    "BACKEND",
                    &format!("cannot start a thread: {e}"),
                );
            }
        }
    }

    /// Answer a request of `len` bytes, over `max_request_bytes`, that was not read
    /// (a framing layer skipped it): an `INVALID_REQUEST` error with `id` null.
    pub fn refuse_too_long(&self, len: usize) {
        self.inner.error(
            &Value::Null,
            "INVALID_REQUEST",
            &format!(
                "request of {len} bytes is over the limit of {}",
                self.inner.cfg.max_request_bytes
            ),
        );
    }

    /// Cancel every running request and wait for them to answer.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::Release);
        for r in self.inner.running.lock().values() {
            r.cancel();
        }
        let threads: Vec<_> = self.inner.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Inner {
    /// Send one message, split into `chunk` messages when too long for a browser.
    fn send(&self, msg: &Value) {
        let text = msg.to_string();
        let sink = self.sink.lock();
        if text.len() < MAX_MESSAGE {
            sink(&text);
            return;
        }
        let id = msg.get("id").cloned().unwrap_or(Value::Null);
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(CHUNK_RAW);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            parts.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        let count = parts.len();
        for (index, data) in parts.into_iter().enumerate() {
            sink(
                &json!({"id": id, "type": "chunk", "index": index, "count": count, "data": data})
                    .to_string(),
            );
        }
    }

    fn error(&self, id: &Value, code: &str, message: &str) {
        self.send(&json!({"id": id, "type": "error", "code": code, "message": message}));
    }

    fn finish(&self, id: &Value, r: std::thread::Result<std::result::Result<Value, Reply>>) {
        match r {
            Ok(Ok(v)) => self.send(&json!({"id": id, "type": "result", "result": v})),
            Ok(Err(Reply { code, message })) => self.error(id, &code, &message),
            Err(_) => self.error(id, "PANIC", "internal error while handling the request"),
        }
    }

    fn cache(&self) -> std::result::Result<&Arc<Cache>, Reply> {
        self.cache.as_ref().map_err(|e| Reply::from(e.clone()))
    }
}

/// An error reply: a status name (or INVALID_REQUEST) and a message.
#[derive(Debug)]
struct Reply {
    code: String,
    message: String,
}

impl Reply {
    fn bad(message: impl Into<String>) -> Reply {
        Reply {
            code: "INVALID_REQUEST".into(),
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> Reply {
        Reply {
            code: "FORBIDDEN".into(),
            message: message.into(),
        }
    }
}

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        Reply {
            code: e.kind().name().into(),
            message: e.message().to_owned(),
        }
    }
}
