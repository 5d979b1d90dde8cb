//! `tabagent serve`: OpenAI- and Ollama-compatible HTTP endpoints over the library.
//!
//! Every loaded chat model has one context with `--parallel` sequences. A request
//! waits (a bounded queue, 503 when full) for a semaphore permit, takes a free
//! sequence and generates on a blocking thread; pieces go over a channel into the
//! SSE / NDJSON body. A body that is dropped (client gone) cancels the generation
//! through the sequence's `AbortHandle`, and the channel's closing stops the
//! callback as well; the permit and sequence return when the call has ended.

use crate::common::{self, err, CliResult};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tabagent::engine::embed::{EmbedParams, Pooling};
use tabagent::engine::{
    AbortHandle, ChatMessage, Context, ContextParams, GenParams, GenResult, Model, Sequence,
    Sequences, StopReason, SEED_DEFAULT,
};
use tabagent::ErrorKind;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Settings of `serve` after flags, environment and defaults.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    pub models: Vec<String>,
    pub embed_models: Vec<String>,
    pub parallel: u32,
    pub ctx_size: u32,
    pub queue: usize,
    pub threads: i32,
    pub cors_origins: Vec<String>,
    pub max_body: usize,
    pub verbose: bool,
}

struct ChatPool {
    seqs: Sequences,
    _ctx: Mutex<Context>,
    free: Mutex<Vec<Sequence>>,
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_max: usize,
    n_ctx_seq: u32,
}

struct Entry {
    name: String,
    path: PathBuf,
    model: Arc<Model>,
    chat: Option<Arc<ChatPool>>,
    embed: Mutex<Option<Context>>,
    created: u64,
}

struct App {
    entries: Vec<Arc<Entry>>,
    api_key: Option<String>,
    verbose: bool,
    threads: i32,
}

type AppState = Arc<App>;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 time in UTC (Ollama's `created_at`).
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{prefix}-{:x}{n:04x}", t & 0xffff_ffff_ffff)
}

// ---------------------------------------------------------------------------
// Errors

/// Which dialect an error body speaks.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Ollama,
}

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
    fn param(message: impl Into<String>, param: &str) -> Self {
        let mut e = ApiError::bad(message);
        e.param = Some(param.to_string());
        e
    }
    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    fn not_found_model(name: &str) -> Self {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("The model `{name}` does not exist or is not loaded by this server"),
        )
        .code("model_not_found");
        e.param = Some("model".into());
        e
    }
    fn overloaded() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is busy: every sequence is in use and the queue is full; retry later",
        )
        .code("server_overloaded")
    }
    fn from_lib(e: tabagent::Error) -> Self {
        let (status, kind) = match e.kind() {
            ErrorKind::InvalidArg | ErrorKind::ContextFull | ErrorKind::NullArg => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "invalid_request_error"),
            ErrorKind::Unsupported => (StatusCode::BAD_REQUEST, "invalid_request_error"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        };
        let code = if e.kind() == ErrorKind::ContextFull {
            Some("context_length_exceeded")
        } else {
            None
        };
        ApiError {
            status,
            message: e.message().to_string(),
            kind,
            param: None,
            code,
        }
    }
    fn body_rejection(r: BytesRejection) -> Self {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "invalid_request_error"
        } else {
            "server_error"
        };
        ApiError::new(status, kind, r.body_text())
    }
    fn into_response(self, api: Api) -> Response {
        let body = match api {
            Api::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }}),
            Api::Ollama => json!({ "error": self.message }),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn reply(api: Api, r: ApiResult<Response>) -> Response {
    match r {
        Ok(r) => r,
        Err(e) => e.into_response(api),
    }
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> ApiResult<Map<String, Value>> {
    let body = body.map_err(ApiError::body_rejection)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad("the request body must be a JSON object")),
    }
}

// ---------------------------------------------------------------------------
// Field readers with OpenAI-style validation errors

fn opt_f32(
    m: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<f32>,
) -> ApiResult<Option<f32>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let x = v
                .as_f64()
                .ok_or_else(|| ApiError::param(format!("`{key}` must be a number, got {v}"), key))?
                as f32;
            if !x.is_finite() || !range.contains(&x) {
                return Err(ApiError::param(
                    format!(
                        "`{key}` must be between {} and {}, got {x}",
                        range.start(),
                        range.end()
                    ),
                    key,
                ));
            }
            Ok(Some(x))
        }
    }
}

fn opt_i64(m: &Map<String, Value>, key: &str) -> ApiResult<Option<i64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_u64().map(|u| u as i64))
            .map(Some)
            .ok_or_else(|| ApiError::param(format!("`{key}` must be an integer, got {v}"), key)),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> ApiResult<Option<bool>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::param(
            format!("`{key}` must be a boolean, got {v}"),
            key,
        )),
    }
}

fn opt_str<'a>(m: &'a Map<String, Value>, key: &str) -> ApiResult<Option<&'a str>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(ApiError::param(
            format!("`{key}` must be a string, got {v}"),
            key,
        )),
    }
}

fn stops(m: &Map<String, Value>, key: &str) -> ApiResult<Vec<String>> {
    let bad = || {
        ApiError::param(
            format!("`{key}` must be a non-empty string or an array of non-empty strings"),
            key,
        )
    };
    let list = match m.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<ApiResult<Vec<_>>>()?,
        Some(_) => return Err(bad()),
    };
    if list.iter().any(String::is_empty) || list.len() > 16 {
        return Err(bad());
    }
    Ok(list)
}

fn seed_of(s: i64) -> u32 {
    let s = (s as u64 & 0xffff_ffff) as u32;
    if s == SEED_DEFAULT {
        s - 1
    } else {
        s
    }
}

/// Sampling from an OpenAI request (extensions: top_k, min_p, repeat_penalty).
fn openai_params(m: &Map<String, Value>) -> ApiResult<GenParams> {
    let mut p = GenParams {
        max_tokens: 0,
        ..GenParams::default()
    };
    if let Some(t) = opt_f32(m, "temperature", 0.0..=2.0)? {
        p.temperature = t;
    }
    if let Some(t) = opt_f32(m, "top_p", 0.0..=1.0)? {
        if t == 0.0 {
            p.temperature = 0.0;
        } else {
            p.top_p = t;
        }
    }
    if let Some(k) = opt_i64(m, "top_k")? {
        p.top_k = i32::try_from(k.max(0)).unwrap_or(i32::MAX);
    }
    if let Some(x) = opt_f32(m, "min_p", 0.0..=1.0)? {
        p.min_p = x;
    }
    if let Some(x) = opt_f32(m, "presence_penalty", -2.0..=2.0)? {
        p.presence_penalty = x;
    }
    if let Some(x) = opt_f32(m, "frequency_penalty", -2.0..=2.0)? {
        p.frequency_penalty = x;
    }
    if let Some(x) = opt_f32(m, "repeat_penalty", 0.01..=10.0)? {
        p.repeat_penalty = x;
    }
    for key in ["max_completion_tokens", "max_tokens"] {
        if let Some(n) = opt_i64(m, key)? {
            if n < 1 {
                return Err(ApiError::param(format!("`{key}` must be >= 1"), key));
            }
            p.max_tokens = i32::try_from(n).unwrap_or(i32::MAX);
            break;
        }
    }
    if let Some(s) = opt_i64(m, "seed")? {
        p.seed = seed_of(s);
    }
    if let Some(n) = opt_i64(m, "n")? {
        if n != 1 {
            return Err(ApiError::param("only `n` = 1 is supported", "n"));
        }
    }
    p.stop = stops(m, "stop")?;
    Ok(p)
}

/// Sampling from an Ollama request's `options`.
fn ollama_params(m: &Map<String, Value>) -> ApiResult<GenParams> {
    let mut p = GenParams {
        max_tokens: 0,
        ..GenParams::default()
    };
    let empty = Map::new();
    let o = match m.get("options") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::bad("`options` must be an object")),
    };
    if let Some(t) = opt_f32(o, "temperature", 0.0..=100.0)? {
        p.temperature = t;
    }
    if let Some(t) = opt_f32(o, "top_p", 0.0..=1.0)? {
        if t == 0.0 {
            p.temperature = 0.0;
        } else {
            p.top_p = t;
        }
    }
    if let Some(k) = opt_i64(o, "top_k")? {
        p.top_k = i32::try_from(k.max(0)).unwrap_or(i32::MAX);
    }
    if let Some(x) = opt_f32(o, "min_p", 0.0..=1.0)? {
        p.min_p = x;
    }
    if let Some(x) = opt_f32(o, "repeat_penalty", 0.01..=10.0)? {
        p.repeat_penalty = x;
    }
    if let Some(x) = opt_f32(o, "presence_penalty", -100.0..=100.0)? {
        p.presence_penalty = x;
    }
    if let Some(x) = opt_f32(o, "frequency_penalty", -100.0..=100.0)? {
        p.frequency_penalty = x;
    }
    if let Some(n) = opt_i64(o, "repeat_last_n")? {
        p.penalty_last_n = i32::try_from(n.clamp(-1, i32::MAX as i64)).unwrap_or(64);
    }
    if let Some(n) = opt_i64(o, "num_predict")? {
        // Ollama: -1 = until done, -2 = until the context is full.
        p.max_tokens = if n < 0 {
            0
        } else {
            i32::try_from(n).unwrap_or(i32::MAX)
        };
        if n == 0 {
            p.max_tokens = 1;
        }
    }
    if let Some(s) = opt_i64(o, "seed")? {
        if s >= 0 {
            p.seed = seed_of(s);
        }
    }
    p.stop = stops(o, "stop")?;
    Ok(p)
}

/// Text of an OpenAI content value: a string, null, or an array of parts.
fn content_text(v: Option<&Value>, i: usize) -> ApiResult<String> {
    let param = format!("messages[{i}].content");
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = String::new();
            for p in parts {
                match (
                    p.get("type").and_then(Value::as_str),
                    p.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (Some(other), _) if other != "text" => {
                        return Err(ApiError::param(
                            format!(
                                "content parts of type `{other}` are not supported (text only)"
                            ),
                            &param,
                        ))
                    }
                    _ => {
                        return Err(ApiError::param(
                            "each content part must be {\"type\": \"text\", \"text\": \"...\"}",
                            &param,
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(ApiError::param(
            "content must be a string or an array of text parts",
            &param,
        )),
    }
}

fn messages(m: &Map<String, Value>) -> ApiResult<Vec<ChatMessage>> {
    let arr = match m.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::param("`messages` must not be empty", "messages"))
        }
        None | Some(Value::Null) => {
            return Err(ApiError::param("`messages` is required", "messages"))
        }
        Some(_) => return Err(ApiError::param("`messages` must be an array", "messages")),
    };
    let mut out = Vec::with_capacity(arr.len());
    for (i, v) in arr.iter().enumerate() {
        let o = v.as_object().ok_or_else(|| {
            ApiError::param("each message must be an object", &format!("messages[{i}]"))
        })?;
        let role = match o.get("role").and_then(Value::as_str) {
            Some("developer") => "system",
            Some(r @ ("system" | "user" | "assistant" | "tool" | "function")) => r,
            Some(r) => {
                return Err(ApiError::param(
                    format!("unknown role `{r}` (system, developer, user, assistant or tool)"),
                    &format!("messages[{i}].role"),
                ))
            }
            None => {
                return Err(ApiError::param(
                    "`role` is required and must be a string",
                    &format!("messages[{i}].role"),
                ))
            }
        };
        let mut msg = ChatMessage::new(role, content_text(o.get("content"), i)?);
        msg.name = o.get("name").and_then(Value::as_str).map(str::to_string);
        msg.tool_call_id = o
            .get("tool_call_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(tc) = o.get("tool_calls").filter(|v| v.is_array()) {
            msg.tool_calls = Some(tc.to_string());
        }
        for k in ["reasoning_content", "thinking"] {
            if let Some(r) = o.get(k).and_then(Value::as_str) {
                msg.reasoning_content = Some(r.to_string());
            }
        }
        out.push(msg);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Models and generation

impl App {
    fn find(&self, name: Option<&str>) -> ApiResult<Arc<Entry>> {
        match name {
            None | Some("") => self
                .entries
                .first()
                .cloned()
                .ok_or_else(|| ApiError::not_found_model("")),
            Some(n) => self
                .entries
                .iter()
                .find(|e| e.name == n || e.name.strip_suffix(":latest") == Some(n))
                .or_else(|| {
                    let n = n.strip_suffix(":latest").unwrap_or(n);
                    self.entries.iter().find(|e| e.name == n)
                })
                .cloned()
                .ok_or_else(|| ApiError::not_found_model(n)),
        }
    }

    fn find_chat(&self, name: Option<&str>) -> ApiResult<(Arc<Entry>, Arc<ChatPool>)> {
        let name = match name {
            None | Some("") => self
                .entries
                .iter()
                .find(|e| e.chat.is_some())
                .map(|e| e.name.clone()),
            Some(n) => Some(n.to_string()),
        };
        let e = self.find(name.as_deref())?;
        let pool = e.chat.clone().ok_or_else(|| {
            ApiError::param(
                format!(
                    "the model `{}` is an embedding model; it cannot generate text",
                    e.name
                ),
                "model",
            )
        })?;
        Ok((e, pool))
    }
}

/// What one generation call is asked to do.
enum Prompt {
    Chat(Vec<ChatMessage>),
    Raw(String),
}

enum Ev {
    Text(String),
    End(Result<GenResult, tabagent::Error>),
}

/// Cancels the generation when dropped while armed (the client went away).
struct CancelGuard {
    abort: AbortHandle,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.abort.cancel();
        }
    }
}

/// Counts a request waiting for a sequence for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn acquire(pool: &Arc<ChatPool>) -> ApiResult<OwnedSemaphorePermit> {
    if let Ok(p) = pool.sem.clone().try_acquire_owned() {
        return Ok(p);
    }
    if pool.waiting.fetch_add(1, Ordering::AcqRel) >= pool.queue_max {
        pool.waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::overloaded());
    }
    let _w = Waiting(&pool.waiting);
    pool.sem.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting down",
        )
    })
}

/// A running generation: its events and the guard that cancels it when dropped.
struct Running {
    rx: mpsc::UnboundedReceiver<Ev>,
    guard: CancelGuard,
    first: Option<Ev>,
}

/// Start a generation and wait for its first event, so an error before any text
/// (a template that raises, a prompt too long) is answered with its own status.
async fn start(pool: Arc<ChatPool>, prompt: Prompt, params: GenParams) -> ApiResult<Running> {
    let permit = acquire(&pool).await?;
    let seq = {
        let popped = pool.free.lock().ok().and_then(|mut f| f.pop());
        match popped {
            Some(s) => s,
            None => pool.seqs.new_sequence().map_err(ApiError::from_lib)?,
        }
    };
    let abort = seq.abort_handle();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pool2 = pool.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut seq = seq;
        if !tx.is_closed() {
            let mut cb = |t: &str| tx.send(Ev::Text(t.to_string())).is_ok();
            let r = match &prompt {
                Prompt::Chat(m) => seq.chat(m, &params, &mut cb),
                Prompt::Raw(p) => seq.generate(p, &params, &mut cb),
            };
            let _ = tx.send(Ev::End(r));
        }
        if let Ok(mut f) = pool2.free.lock() {
            f.push(seq);
        }
    });
    let mut guard = CancelGuard { abort, armed: true };
    let first = rx.recv().await;
    match first {
        Some(Ev::End(Err(e))) => {
            guard.armed = false;
            Err(ApiError::from_lib(e))
        }
        None => {
            guard.armed = false;
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the generation ended without a result",
            ))
        }
        Some(ev) => Ok(Running {
            rx,
            guard,
            first: Some(ev),
        }),
    }
}

impl Running {
    async fn next(&mut self) -> Option<Ev> {
        if let Some(e) = self.first.take() {
            return Some(e);
        }
        let ev = self.rx.recv().await;
        if matches!(ev, Some(Ev::End(_)) | None) {
            self.guard.armed = false;
        }
        ev
    }

    /// The whole text and the result (non-streaming answers).
    async fn collect(mut self) -> ApiResult<(String, GenResult)> {
        let mut text = String::new();
        loop {
            match self.next().await {
                Some(Ev::Text(t)) => text.push_str(&t),
                Some(Ev::End(Ok(r))) => return Ok((text, r)),
                Some(Ev::End(Err(e))) => return Err(ApiError::from_lib(e)),
                None => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        "the generation ended without a result",
                    ))
                }
            }
        }
    }
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

fn usage(r: &GenResult) -> Value {
    json!({
        "prompt_tokens": r.n_prompt,
        "completion_tokens": r.n_generated,
        "total_tokens": r.n_prompt + r.n_generated,
    })
}

/// A streaming body: each event becomes zero or more chunks; `end` formats the
/// result (and an error that arrives after the headers were sent).
fn stream_body<F>(run: Running, content_type: &'static str, mut f: F) -> Response
where
    F: FnMut(Ev) -> Vec<Bytes> + Send + 'static,
{
    let s = futures_util::stream::unfold((run, false), move |(mut run, done)| {
        let out = async move {
            if done {
                return None;
            }
            let ev = run.next().await;
            let end = !matches!(ev, Some(Ev::Text(_)));
            Some((ev, (run, end)))
        };
        out
    });
    use futures_util::StreamExt;
    let s = s.map(move |ev| {
        let chunks = match ev {
            Some(ev) => f(ev),
            None => f(Ev::End(Err(tabagent::Error::backend(
                "the generation ended without a result",
            )))),
        };
        let mut buf = Vec::new();
        for c in chunks {
            buf.extend_from_slice(&c);
        }
        Ok::<Bytes, std::convert::Infallible>(Bytes::from(buf))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn ndjson(v: &Value) -> Bytes {
    Bytes::from(format!("{v}\n"))
}

// ---------------------------------------------------------------------------
// OpenAI endpoints

async fn v1_chat(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    reply(Api::OpenAi, v1_chat_inner(app, body).await)
}

async fn v1_chat_inner(app: AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let model = opt_str(&m, "model")?;
    let (entry, pool) = app.find_chat(model)?;
    let msgs = messages(&m)?;
    let mut params = openai_params(&m)?;
    if let Some(t) = m.get("tools").filter(|t| !t.is_null()) {
        if !t.is_array() {
            return Err(ApiError::param("`tools` must be an array", "tools"));
        }
        params.chat_tools = Some(t.to_string());
    }
    if let Some(v) = m.get("chat_template_kwargs").filter(|t| t.is_object()) {
        params.chat_vars = Some(v.to_string());
    }
    let stream = opt_bool(&m, "stream")?.unwrap_or(false);
    let include_usage = m
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let t0 = Instant::now();
    let run = start(pool, Prompt::Chat(msgs), params).await?;
    let id = new_id("chatcmpl");
    let created = now_secs();
    let name = entry.name.clone();
    if !stream {
        let (text, r) = run.collect().await?;
        log_done(&app, "/v1/chat/completions", &r, t0);
        return Ok(axum::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": name,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason(r.stop_reason),
            }],
            "usage": usage(&r),
        }))
        .into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut first = true;
    let app2 = app.clone();
    Ok(stream_body(run, "text/event-stream", move |ev| match ev {
        Ev::Text(t) => {
            let delta = if first {
                first = false;
                json!({"role": "assistant", "content": t})
            } else {
                json!({"content": t})
            };
            vec![sse(&chunk(delta, None))]
        }
        Ev::End(Ok(r)) => {
            log_done(&app2, "/v1/chat/completions (stream)", &r, t0);
            let delta = if first {
                json!({"role": "assistant", "content": ""})
            } else {
                json!({})
            };
            let mut out = vec![sse(&chunk(delta, Some(finish_reason(r.stop_reason))))];
            if include_usage {
                let mut u = chunk(json!({}), None);
                u["choices"] = json!([]);
                u["usage"] = usage(&r);
                out.push(sse(&u));
            }
            out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            out
        }
        Ev::End(Err(e)) => vec![
            sse(
                &json!({"error": {"message": e.message(), "type": "server_error", "param": null, "code": null}}),
            ),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
    }))
}

async fn v1_completions(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    reply(Api::OpenAi, v1_completions_inner(app, body).await)
}

async fn v1_completions_inner(
    app: AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let (entry, pool) = app.find_chat(opt_str(&m, "model")?)?;
    let prompt = match m.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_string()
        }
        Some(Value::Array(_)) => {
            return Err(ApiError::param(
                "`prompt` must be one string (batches of prompts are not supported)",
                "prompt",
            ))
        }
        _ => {
            return Err(ApiError::param(
                "`prompt` is required and must be a string",
                "prompt",
            ))
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::param("`prompt` must not be empty", "prompt"));
    }
    let mut params = openai_params(&m)?;
    if m.get("max_tokens").is_none() {
        params.max_tokens = 16; // OpenAI's default for completions
    }
    let echo = opt_bool(&m, "echo")?.unwrap_or(false);
    let stream = opt_bool(&m, "stream")?.unwrap_or(false);
    let t0 = Instant::now();
    let run = start(pool, Prompt::Raw(prompt.clone()), params).await?;
    let id = new_id("cmpl");
    let created = now_secs();
    let name = entry.name.clone();
    if !stream {
        let (text, r) = run.collect().await?;
        log_done(&app, "/v1/completions", &r, t0);
        let text = if echo { prompt + &text } else { text };
        return Ok(axum::Json(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": name,
            "choices": [{
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_reason(r.stop_reason),
            }],
            "usage": usage(&r),
        }))
        .into_response());
    }
    let chunk = move |text: &str, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": name,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut echoed = !echo;
    let app2 = app.clone();
    Ok(stream_body(run, "text/event-stream", move |ev| {
        let mut out = Vec::new();
        if !echoed {
            echoed = true;
            out.push(sse(&chunk(&prompt, None)));
        }
        match ev {
            Ev::Text(t) => out.push(sse(&chunk(&t, None))),
            Ev::End(Ok(r)) => {
                log_done(&app2, "/v1/completions (stream)", &r, t0);
                out.push(sse(&chunk("", Some(finish_reason(r.stop_reason)))));
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Ev::End(Err(e)) => {
                out.push(sse(&json!({"error": {"message": e.message(), "type": "server_error", "param": null, "code": null}})));
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
        }
        out
    }))
}

/// Texts of an embedding request's input: a string or an array of strings.
fn embed_inputs(v: Option<&Value>, key: &str) -> ApiResult<Vec<String>> {
    let bad = || {
        ApiError::param(
            format!("`{key}` must be a non-empty string or a non-empty array of strings"),
            key,
        )
    };
    let list = match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<ApiResult<Vec<_>>>()?,
        _ => return Err(bad()),
    };
    if list.len() > 2048 {
        return Err(ApiError::param(
            format!("`{key}` has {} texts; at most 2048 per request", list.len()),
            key,
        ));
    }
    Ok(list)
}

/// Embed on the entry's embedding context (created on first use) on a blocking thread.
async fn embed(
    app: &App,
    entry: Arc<Entry>,
    texts: Vec<String>,
    truncate: bool,
) -> ApiResult<tabagent::engine::embed::Embeddings> {
    let threads = app.threads;
    tokio::task::spawn_blocking(move || {
        let mut slot = entry.embed.lock().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "embedding context poisoned",
            )
        })?;
        if slot.is_none() {
            *slot = Some(embed_context(&entry.model, threads).map_err(ApiError::from_lib)?);
        }
        let ctx = slot.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "no embedding context",
            )
        })?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        ctx.embed(
            &refs,
            &EmbedParams {
                normalize: true,
                truncate,
            },
        )
        .map_err(ApiError::from_lib)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?
}

/// An embedding context: the model's own pooling, or mean pooling for a model
/// whose file asks for none (a chat model); at most 2048 tokens per text.
pub fn embed_context(model: &Arc<Model>, threads: i32) -> tabagent::Result<Context> {
    let n_train = model.info().n_ctx_train.max(0) as u32;
    let mut cp = ContextParams {
        embeddings: true,
        n_ctx: n_train.min(2048),
        n_threads: threads,
        ..ContextParams::default()
    };
    match Context::new(model.clone(), &cp) {
        Ok(c) if c.pooling() != Some(Pooling::None) => Ok(c),
        _ => {
            cp.pooling = Pooling::Mean;
            Context::new(model.clone(), &cp)
        }
    }
}

async fn v1_embeddings(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    reply(Api::OpenAi, v1_embeddings_inner(app, body).await)
}

async fn v1_embeddings_inner(
    app: AppState,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let entry = app.find(opt_str(&m, "model")?)?;
    let texts = embed_inputs(m.get("input"), "input")?;
    let base64 = match opt_str(&m, "encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::param(
                format!("`encoding_format` must be float or base64, got {f}"),
                "encoding_format",
            ))
        }
    };
    if m.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(ApiError::param(
            "`dimensions` is not supported",
            "dimensions",
        ));
    }
    let name = entry.name.clone();
    let e = embed(&app, entry, texts, false).await?;
    let n_tokens: u32 = e.n_tokens.iter().sum();
    let data: Vec<Value> = (0..e.len())
        .map(|i| {
            let v = e.get(i);
            let emb = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": emb})
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }))
    .into_response())
}

async fn v1_models(State(app): State<AppState>) -> Response {
    let data: Vec<Value> = app
        .entries
        .iter()
        .map(|e| json!({"id": e.name, "object": "model", "created": e.created, "owned_by": "tabagent"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

// ---------------------------------------------------------------------------
// Ollama endpoints

fn details(e: &Entry) -> Value {
    let i = e.model.info();
    let p = i.n_params as f64;
    let size = if p >= 1e9 {
        format!("{:.1}B", p / 1e9)
    } else {
        format!("{:.0}M", p / 1e6)
    };
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": i.architecture,
        "families": [i.architecture],
        "parameter_size": size,
        "quantization_level": i.quantization,
    })
}

fn file_mtime(e: &Entry) -> String {
    let t = std::fs::metadata(&e.path)
        .and_then(|m| m.modified())
        .unwrap_or(UNIX_EPOCH + std::time::Duration::from_secs(e.created));
    rfc3339(t)
}

async fn api_tags(State(app): State<AppState>) -> Response {
    let models: Vec<Value> = app
        .entries
        .iter()
        .map(|e| {
            let digest = e
                .model
                .fingerprint()
                .map(|f| f.iter().map(|b| format!("{b:02x}")).collect::<String>())
                .unwrap_or_default();
            json!({
                "name": e.name,
                "model": e.name,
                "modified_at": file_mtime(e),
                "size": e.model.info().file_size,
                "digest": digest,
                "details": details(e),
            })
        })
        .collect();
    axum::Json(json!({ "models": models })).into_response()
}

async fn api_show(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    reply(Api::Ollama, api_show_inner(app, body))
}

fn api_show_inner(app: AppState, body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let name = opt_str(&m, "model")?.or(opt_str(&m, "name")?);
    let e = app.find(name)?;
    let i = e.model.info();
    let arch = i.architecture.clone();
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(arch));
    info.insert("general.name".into(), json!(i.name));
    info.insert("general.parameter_count".into(), json!(i.n_params));
    info.insert(format!("{arch}.context_length"), json!(i.n_ctx_train));
    info.insert(format!("{arch}.embedding_length"), json!(i.n_embd));
    info.insert(format!("{arch}.block_count"), json!(i.n_layer));
    info.insert(format!("{arch}.attention.head_count"), json!(i.n_head));
    info.insert(
        format!("{arch}.attention.head_count_kv"),
        json!(i.n_head_kv),
    );
    info.insert("tokenizer.ggml.vocab_size".into(), json!(i.n_vocab));
    let caps: Vec<&str> = if e.chat.is_some() {
        vec!["completion", "embedding"]
    } else {
        vec!["embedding"]
    };
    Ok(axum::Json(json!({
        "modelfile": format!("FROM {}\n", e.path.display()),
        "parameters": "",
        "template": i.chat_template.clone().unwrap_or_default(),
        "details": details(&e),
        "model_info": info,
        "capabilities": caps,
        "modified_at": file_mtime(&e),
    }))
    .into_response())
}

fn ollama_done(name: &str, r: &GenResult, t0: Instant) -> Value {
    let total = t0.elapsed().as_nanos() as u64;
    json!({
        "model": name,
        "created_at": rfc3339(SystemTime::now()),
        "done": true,
        "done_reason": finish_reason(r.stop_reason),
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": r.n_prompt,
        "prompt_eval_duration": (r.prompt_ms * 1e6) as u64,
        "eval_count": r.n_generated,
        "eval_duration": (r.gen_ms * 1e6) as u64,
    })
}

async fn api_chat(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    reply(Api::Ollama, ollama_gen(app, body, true).await)
}

async fn api_generate(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    reply(Api::Ollama, ollama_gen(app, body, false).await)
}

async fn ollama_gen(
    app: AppState,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let (entry, pool) = app.find_chat(opt_str(&m, "model")?)?;
    let mut params = ollama_params(&m)?;
    let stream = opt_bool(&m, "stream")?.unwrap_or(true);
    let name = entry.name.clone();
    let prompt = if chat {
        if let Some(t) = m.get("tools").filter(|t| t.is_array()) {
            params.chat_tools = Some(t.to_string());
        }
        Prompt::Chat(messages(&m)?)
    } else {
        let prompt = opt_str(&m, "prompt")?.unwrap_or("").to_string();
        if prompt.is_empty() {
            // Ollama: an empty prompt loads the model and answers done.
            return Ok(axum::Json(json!({
                "model": name, "created_at": rfc3339(SystemTime::now()),
                "response": "", "done": true, "done_reason": "load",
            }))
            .into_response());
        }
        if opt_bool(&m, "raw")?.unwrap_or(false) {
            Prompt::Raw(prompt)
        } else {
            let mut msgs = Vec::new();
            if let Some(s) = opt_str(&m, "system")? {
                msgs.push(ChatMessage::new("system", s));
            }
            msgs.push(ChatMessage::new("user", prompt));
            Prompt::Chat(msgs)
        }
    };
    if let Some(t) = opt_str(&m, "template")? {
        params.chat_template = Some(t.to_string());
    }
    let t0 = Instant::now();
    let run = start(pool, prompt, params).await?;
    let piece = move |name: &str, t: &str| {
        let mut v = json!({"model": name, "created_at": rfc3339(SystemTime::now()), "done": false});
        if chat {
            v["message"] = json!({"role": "assistant", "content": t});
        } else {
            v["response"] = json!(t);
        }
        v
    };
    let path = if chat { "/api/chat" } else { "/api/generate" };
    if !stream {
        let (text, r) = run.collect().await?;
        log_done(&app, path, &r, t0);
        let mut v = ollama_done(&name, &r, t0);
        if chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        return Ok(axum::Json(v).into_response());
    }
    let app2 = app.clone();
    Ok(stream_body(
        run,
        "application/x-ndjson",
        move |ev| match ev {
            Ev::Text(t) => vec![ndjson(&piece(&name, &t))],
            Ev::End(Ok(r)) => {
                log_done(&app2, path, &r, t0);
                let mut v = ollama_done(&name, &r, t0);
                if chat {
                    v["message"] = json!({"role": "assistant", "content": ""});
                } else {
                    v["response"] = json!("");
                }
                vec![ndjson(&v)]
            }
            Ev::End(Err(e)) => vec![ndjson(&json!({"error": e.message()}))],
        },
    ))
}

async fn api_embed(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    reply(Api::Ollama, api_embed_inner(app, body, false).await)
}

async fn api_embeddings(
    State(app): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    reply(Api::Ollama, api_embed_inner(app, body, true).await)
}

async fn api_embed_inner(
    app: AppState,
    body: Result<Bytes, BytesRejection>,
    legacy: bool,
) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let entry = app.find(opt_str(&m, "model")?)?;
    let name = entry.name.clone();
    let t0 = Instant::now();
    if legacy {
        let text = opt_str(&m, "prompt")?.unwrap_or("").to_string();
        if text.is_empty() {
            return Ok(axum::Json(json!({"embedding": []})).into_response());
        }
        let e = embed(&app, entry, vec![text], true).await?;
        return Ok(axum::Json(json!({"embedding": e.get(0)})).into_response());
    }
    let texts = embed_inputs(m.get("input"), "input")?;
    let truncate = opt_bool(&m, "truncate")?.unwrap_or(true);
    let e = embed(&app, entry, texts, truncate).await?;
    let vecs: Vec<&[f32]> = (0..e.len()).map(|i| e.get(i)).collect();
    Ok(axum::Json(json!({
        "model": name,
        "embeddings": vecs,
        "total_duration": t0.elapsed().as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": e.n_tokens.iter().sum::<u32>(),
    }))
    .into_response())
}

/// `/api/pull`: download into the cache, streaming progress lines.
async fn api_pull(State(_app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    reply(Api::Ollama, api_pull_inner(body).await)
}

async fn api_pull_inner(body: Result<Bytes, BytesRejection>) -> ApiResult<Response> {
    let m = parse_body(body)?;
    let spec = opt_str(&m, "model")?
        .or(opt_str(&m, "name")?)
        .ok_or_else(|| ApiError::bad("`model` is required (org/name[:VARIANT])"))?
        .to_string();
    let stream = opt_bool(&m, "stream")?.unwrap_or(true);
    let (repo, _, _) = common::parse_ref(&spec);
    if !repo.contains('/') || tabagent::cache::validate_repo_id(&repo).is_err() {
        return Err(ApiError::bad(format!(
            "`{spec}` is not a hub repo (org/name[:VARIANT])"
        )));
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let _ = tx.send(json!({"status": "pulling manifest"}));
    tokio::task::spawn_blocking(move || {
        let tx2 = tx.clone();
        let mut last = (String::new(), 0u64, Instant::now());
        let mut progress = |file: &str, done: u64, total: u64| {
            // At most ~10 lines a second per file, and always the last one.
            if file != last.0 || done == total || last.2.elapsed().as_millis() >= 100 {
                last = (file.to_string(), done, Instant::now());
                return tx2
                    .send(json!({"status": format!("pulling {file}"), "digest": file, "total": total, "completed": done}))
                    .is_ok();
            }
            !tx2.is_closed()
        };
        let r: CliResult<PathBuf> = common::resolve_model(&spec, &mut progress);
        let _ = match r {
            Ok(p) => {
                let _ = tx.send(json!({"status": "verifying sha256 digest"}));
                let _ = tx.send(json!({"status": format!("stored at {}", p.display())}));
                tx.send(json!({"status": "success"}))
            }
            Err(e) => tx.send(json!({ "error": e })),
        };
    });
    if !stream {
        let mut last = json!({});
        while let Some(v) = rx.recv().await {
            last = v;
        }
        if let Some(e) = last.get("error").and_then(Value::as_str) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e,
            ));
        }
        return Ok(axum::Json(json!({"status": "success"})).into_response());
    }
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(ndjson(&v)), rx))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn health(State(app): State<AppState>) -> Response {
    let seqs: Value = app
        .entries
        .iter()
        .filter_map(|e| {
            let p = e.chat.as_ref()?;
            Some(json!({
                "model": e.name,
                "free": p.sem.available_permits(),
                "waiting": p.waiting.load(Ordering::Acquire),
                "n_ctx_seq": p.n_ctx_seq,
            }))
        })
        .collect();
    axum::Json(json!({"status": "ok", "slots": seqs})).into_response()
}

async fn not_found(req: Request) -> Response {
    let api = if req.uri().path().starts_with("/api/") {
        Api::Ollama
    } else {
        Api::OpenAi
    };
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
    .into_response(api)
}

/// Bearer-token check on everything but `/health` (and CORS preflights).
async fn auth(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = app.api_key.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|g| constant_eq(g.as_bytes(), key.as_bytes())) {
        return next.run(req).await;
    }
    let api = if req.uri().path().starts_with("/api/") {
        Api::Ollama
    } else {
        Api::OpenAi
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        if given.is_some() {
            "Incorrect API key provided"
        } else {
            "Missing API key: send `Authorization: Bearer <key>`"
        },
    )
    .code("invalid_api_key")
    .into_response(api)
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn log_done(app: &App, path: &str, r: &GenResult, t0: Instant) {
    if app.verbose {
        eprintln!(
            "tabagent: {path}: {} prompt ({} reused) + {} generated tokens, {:?}; prompt {:.0} ms, generation {:.0} ms, request {:.0} ms",
            r.n_prompt,
            r.n_reused,
            r.n_generated,
            r.stop_reason,
            r.prompt_ms,
            r.gen_ms,
            t0.elapsed().as_secs_f64() * 1000.0
        );
    }
}

async fn log_requests(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !app.verbose {
        return next.run(req).await;
    }
    let (m, p) = (req.method().clone(), req.uri().path().to_string());
    let r = next.run(req).await;
    eprintln!("tabagent: {m} {p} -> {}", r.status().as_u16());
    r
}

fn load_entry(spec: &str, cfg: &ServeConfig, chat: bool) -> CliResult<Entry> {
    let mut progress = |_: &str, _: u64, _: u64| true;
    let path = common::resolve_model(spec, &mut progress)?;
    let model = common::load_model(&path)?;
    let chat_pool = if chat {
        let n_ctx = if cfg.ctx_size > 0 {
            cfg.ctx_size
        } else {
            let train = model.info().n_ctx_train.max(512) as u32;
            train.min(2048) * cfg.parallel
        };
        let cp = ContextParams {
            n_ctx,
            n_seq_max: cfg.parallel,
            n_threads: cfg.threads,
            ..ContextParams::default()
        };
        let ctx = Context::new(model.clone(), &cp).map_err(err)?;
        let n_ctx_seq = ctx.n_ctx_seq();
        Some(Arc::new(ChatPool {
            seqs: ctx.sequences(),
            _ctx: Mutex::new(ctx),
            free: Mutex::new(Vec::new()),
            sem: Arc::new(Semaphore::new(cfg.parallel as usize)),
            waiting: AtomicUsize::new(0),
            queue_max: cfg.queue,
            n_ctx_seq,
        }))
    } else {
        None
    };
    Ok(Entry {
        name: common::model_name(spec),
        path,
        model,
        chat: chat_pool,
        embed: Mutex::new(None),
        created: now_secs(),
    })
}

pub fn serve(cfg: ServeConfig) -> CliResult<()> {
    if cfg.models.is_empty() && cfg.embed_models.is_empty() {
        return Err("serve needs --model (or TABAGENT_MODEL) or --embed-model".into());
    }
    if !(1..=256).contains(&cfg.parallel) {
        return Err("--parallel must be in 1..=256".into());
    }
    let mut entries = Vec::new();
    for s in &cfg.models {
        entries.push(Arc::new(load_entry(s, &cfg, true)?));
    }
    for s in &cfg.embed_models {
        entries.push(Arc::new(load_entry(s, &cfg, false)?));
    }
    let app = Arc::new(App {
        entries,
        api_key: cfg.api_key.clone().filter(|k| !k.is_empty()),
        verbose: cfg.verbose,
        threads: cfg.threads,
    });
    let mut router = Router::new()
        .route("/v1/chat/completions", post(v1_chat))
        .route("/v1/completions", post(v1_completions))
        .route("/v1/embeddings", post(v1_embeddings))
        .route("/v1/models", get(v1_models))
        .route("/api/chat", post(api_chat))
        .route("/api/generate", post(api_generate))
        .route("/api/embed", post(api_embed))
        .route("/api/embeddings", post(api_embeddings))
        .route("/api/tags", get(api_tags))
        .route("/api/show", post(api_show))
        .route("/api/pull", post(api_pull))
        .route(
            "/api/version",
            get(|| async { axum::Json(json!({"version": tabagent::VERSION})) }),
        )
        .route("/health", get(health))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), auth))
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .layer(middleware::from_fn_with_state(app.clone(), log_requests))
        .with_state(app.clone());
    if !cfg.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let origin = if cfg.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let list = cfg
                .cors_origins
                .iter()
                .map(|o| HeaderValue::from_str(o).map_err(|_| format!("bad CORS origin {o:?}")))
                .collect::<CliResult<Vec<_>>>()?;
            AllowOrigin::list(list)
        };
        router = router.layer(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers(Any),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(cfg.parallel as usize + 64)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let names: Vec<&str> = app.entries.iter().map(|e| e.name.as_str()).collect();
        eprintln!(
            "tabagent: serving {} on http://{local} (OpenAI /v1, Ollama /api; {} sequences)",
            names.join(", "),
            cfg.parallel
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| format!("server: {e}"))
    })
}

/// Ctrl-C or (Unix) SIGTERM: stop accepting, let running answers end.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.000000000Z");
    }

    #[test]
    fn stop_accepts_string_or_list() {
        let m: Map<String, Value> = serde_json::from_str(r#"{"stop": "x"}"#).unwrap_or_default();
        assert_eq!(
            stops(&m, "stop").map_err(|e| e.message).ok(),
            Some(vec!["x".to_string()])
        );
        let m: Map<String, Value> = serde_json::from_str(r#"{"stop": [1]}"#).unwrap_or_default();
        assert!(stops(&m, "stop").is_err());
    }
}
