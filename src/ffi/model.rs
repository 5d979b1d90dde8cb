//! `ta_model`: load, metadata, tokenizer, chat template.

use super::*;
use crate::engine::check::{check_model, CheckLimits};
use crate::engine::{ChatMessage, ChatOptions, Model, ModelParams};
use std::sync::Arc;

/// Load progress: `progress` goes from 0.0 to 1.0. Return true to continue, false to
/// cancel the load (which then fails with `TA_ERR_CANCELLED`). Called on the loading
/// thread.
pub type ta_progress_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, progress: f32) -> bool>;

/// How to load a model. Get defaults from `ta_model_default_params()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ta_model_params {
    /// Layers to offload to a GPU; -1 = all (default), 0 = none. No effect in CPU builds.
    pub n_gpu_layers: i32,
    /// Memory-map the file (default true) rather than reading it into the heap.
    pub use_mmap: bool,
    /// Lock the weights in RAM (default false).
    pub use_mlock: bool,
    /// Load only the vocabulary: tokenizer calls work, contexts cannot be created.
    pub vocab_only: bool,
    /// Optional load-progress callback (NULL = none).
    pub progress_callback: ta_progress_callback,
    /// Passed to `progress_callback` unchanged; borrowed for the load.
    pub progress_user_data: *mut c_void,
    /// For untrusted files (default false): before loading, run `ta_model_check`
    /// with the two limits below, so a file that would crash llama.cpp fails with
    /// `TA_ERR_BAD_MODEL` instead of taking the process down. Costs one extra load
    /// in a child process.
    pub check_in_child: bool,
    /// Wall-clock limit of that check in milliseconds; 0 = 60 s plus 2 s per GiB.
    pub check_timeout_ms: u32,
    /// Address-space limit of the child in bytes; 0 = 3 GiB plus twice the file size.
    pub check_memory_limit: u64,
}

/// What a passed `ta_model_check` measured.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ta_check_report {
    /// Wall-clock time of the child process, start to exit.
    pub elapsed_ms: f64,
    /// The child's peak resident memory.
    pub peak_rss_bytes: u64,
}

/// A loaded model, opaque. Free with `ta_model_free`. Safe to use from many threads
/// at once. Contexts keep the model alive: freeing it while contexts exist only
/// drops the caller's reference.
pub struct ta_model {
    pub(crate) inner: Arc<Model>,
    strings: InfoStrings,
}

struct InfoStrings {
    architecture: CString,
    name: CString,
    description: CString,
    quantization: CString,
    chat_template: Option<CString>,
}

/// Headline metadata. The `const char *` fields are borrowed from the model: valid
/// until `ta_model_free`, never NULL except `chat_template` (NULL when the model has
/// none). Token ids are -1 when the vocabulary lacks that token.
#[repr(C)]
pub struct ta_model_info {
    pub architecture: *const c_char,
    pub name: *const c_char,
    pub description: *const c_char,
    /// Quantisation label: "Q4_K_M", "Q8_0", "F16", …
    pub quantization: *const c_char,
    pub chat_template: *const c_char,
    pub n_vocab: i32,
    pub n_ctx_train: i32,
    pub n_embd: i32,
    pub n_layer: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub n_params: u64,
    /// Bytes of tensor data.
    pub size_bytes: u64,
    /// Bytes on disk (all shards).
    pub file_size: u64,
    pub bos_token: i32,
    pub eos_token: i32,
    pub eot_token: i32,
    pub nl_token: i32,
}

/// A chat message: every string borrowed, NUL-terminated UTF-8, valid for the call.
/// `role` and `content` are required; the others are optional (NULL = absent) and
/// reach the template as keys of the message only when set.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ta_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
    /// The author's name (e.g. the tool's name on a tool result).
    pub name: *const c_char,
    /// On a tool result: the id of the call it answers.
    pub tool_call_id: *const c_char,
    /// On an assistant turn: a JSON array of OpenAI-style tool calls
    /// (`[{"id":…,"type":"function","function":{"name":…,"arguments":{…}}}]`).
    pub tool_calls: *const c_char,
    /// On an assistant turn: its reasoning (templates read it as
    /// `reasoning_content` or `thinking`).
    pub reasoning_content: *const c_char,
}

impl ta_model {
    fn wrap(m: Model) -> ta_model {
        let c = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
        let i = m.info();
        let strings = InfoStrings {
            architecture: c(&i.architecture),
            name: c(&i.name),
            description: c(&i.description),
            quantization: c(&i.quantization),
            chat_template: i.chat_template.as_deref().map(c),
        };
        ta_model {
            inner: Arc::new(m),
            strings,
        }
    }
}

pub(crate) fn model_params(p: *const ta_model_params) -> ModelParams {
    // SAFETY: NULL means defaults; otherwise a valid struct for the call.
    match unsafe { p.as_ref() } {
        None => ModelParams::default(),
        Some(p) => ModelParams {
            n_gpu_layers: p.n_gpu_layers,
            use_mmap: p.use_mmap,
            use_mlock: p.use_mlock,
            vocab_only: p.vocab_only,
            check: p.check_in_child.then(|| check_limits(p)),
        },
    }
}

fn check_limits(p: &ta_model_params) -> CheckLimits {
    CheckLimits {
        timeout_ms: p.check_timeout_ms.into(),
        memory_bytes: p.check_memory_limit,
        probe: None,
    }
}

fn load_with(
    p: *const ta_model_params,
    out_model: *mut *mut ta_model,
    load: impl FnOnce(&ModelParams, Option<&mut dyn FnMut(f32) -> bool>) -> Result<Model>,
) -> Result<()> {
    let out_model = out(out_model, "out_model")?;
    let params = model_params(p);
    // SAFETY: as in model_params.
    let cb = unsafe { p.as_ref() }
        .and_then(|p| p.progress_callback.map(|cb| (cb, p.progress_user_data)));
    let model = match cb {
        Some((cb, ud)) => {
            // SAFETY: the caller's callback with its own user_data.
            let mut f = |x: f32| unsafe { cb(ud, x) };
            load(&params, Some(&mut f))?
        }
        None => load(&params, None)?,
    };
    *out_model = Box::into_raw(Box::new(ta_model::wrap(model)));
    Ok(())
}

/// Default load parameters: all GPU layers, mmap on, mlock off, full model, no callback.
#[no_mangle]
pub extern "C" fn ta_model_default_params() -> ta_model_params {
    boundary_value(
        "ta_model_default_params",
        ta_model_params {
            n_gpu_layers: -1,
            use_mmap: true,
            use_mlock: false,
            vocab_only: false,
            progress_callback: None,
            progress_user_data: std::ptr::null_mut(),
            check_in_child: false,
            check_timeout_ms: 0,
            check_memory_limit: 0,
        },
        || {
            let d = ModelParams::default();
            Ok(ta_model_params {
                n_gpu_layers: d.n_gpu_layers,
                use_mmap: d.use_mmap,
                use_mlock: d.use_mlock,
                vocab_only: d.vocab_only,
                progress_callback: None,
                progress_user_data: std::ptr::null_mut(),
                check_in_child: d.check.is_some(),
                check_timeout_ms: 0,
                check_memory_limit: 0,
            })
        },
    )
}

/// Check an untrusted model file without risking this process: the file is
/// validated here, then a child process (the `tabagent-probe` executable shipped
/// beside the library; `TABAGENT_PROBE` overrides where it is looked for) loads it
/// with llama.cpp and decodes one token, under the time and memory limits in
/// `params` (`check_timeout_ms`, `check_memory_limit`; NULL = defaults).
///
/// Returns `TA_OK` when the child loaded the file and decoded;
/// `TA_ERR_BAD_MODEL` when the file is refused, or the child crashed (the message
/// names the signal and the child's last log lines) or hung;
/// `TA_ERR_OUT_OF_MEMORY` when the child could not get the memory it needed under
/// the limit; `TA_ERR_NOT_FOUND` when the file or the probe executable is missing;
/// `TA_ERR_UNSUPPORTED` on systems other than Unix. Every message names the file.
/// `params.n_gpu_layers` is passed to the child, so GPU backends are checked too.
/// Blocks until the child ends (the progress callback is not called). Does not
/// take ownership of its arguments. On success `*out_report` (optional, may be NULL)
/// receives the child's time and peak memory.
///
/// # Safety
/// Pointers must be NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn ta_model_check(
    path: *const c_char,
    params: *const ta_model_params,
    out_report: *mut ta_check_report,
) -> ta_status {
    boundary("ta_model_check", || {
        let path = str_arg(path, "path")?;
        let mp = model_params(params);
        // SAFETY: NULL means defaults; otherwise a valid struct for the call.
        let limits = unsafe { params.as_ref() }
            .map(check_limits)
            .unwrap_or_default();
        let r = check_model(std::path::Path::new(path), &mp, &limits)?;
        // SAFETY: NULL or a valid out-parameter.
        if let Some(o) = unsafe { out_report.as_mut() } {
            *o = ta_check_report {
                elapsed_ms: r.elapsed_ms,
                peak_rss_bytes: r.peak_rss_bytes,
            };
        }
        Ok(())
    })
}

/// Load a GGUF model from `path` (UTF-8). For a split model pass the first shard
/// (`name-00001-of-0000N.gguf`); the others are found next to it. The file is checked
/// (header, metadata, tensor table) before llama.cpp reads it: a damaged file gives
/// `TA_ERR_BAD_MODEL` naming the file and the problem, a missing one
/// `TA_ERR_NOT_FOUND`. `params` NULL = defaults. On success `*out_model` receives an
/// owned model (free with `ta_model_free`).
///
/// # Safety
/// Pointers must be NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn ta_model_load(
    path: *const c_char,
    params: *const ta_model_params,
    out_model: *mut *mut ta_model,
) -> ta_status {
    boundary("ta_model_load", || {
        let path = str_arg(path, "path")?;
        load_with(params, out_model, |p, cb| {
            Model::load_with_progress(std::path::Path::new(path), p, cb)
        })
    })
}

/// Load from a path (used by the cache too).
pub(crate) fn load_path(
    path: &std::path::Path,
    params: *const ta_model_params,
    out_model: *mut *mut ta_model,
) -> Result<()> {
    load_with(params, out_model, |p, cb| {
        Model::load_with_progress(path, p, cb)
    })
}

/// Load a model from `size` bytes at `data` without writing a file to disk (Linux:
/// an anonymous memfd; elsewhere `TA_ERR_UNSUPPORTED`). The bytes are copied: the
/// caller may free `data` once this returns.
///
/// # Safety
/// `data` must point to `size` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ta_model_load_from_buffer(
    data: *const u8,
    size: usize,
    params: *const ta_model_params,
    out_model: *mut *mut ta_model,
) -> ta_status {
    boundary("ta_model_load_from_buffer", || {
        if data.is_null() {
            return Err(Error::null_arg("data"));
        }
        let bytes = slice_arg(data, size, "data")?;
        load_with(params, out_model, |p, cb| {
            Model::load_from_buffer(bytes, p, cb)
        })
    })
}

/// Release the caller's reference. The model's memory goes when its last context
/// is freed too. NULL is a no-op.
///
/// # Safety
/// `model` must come from `ta_model_load*` and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn ta_model_free(model: *mut ta_model) {
    boundary_value("ta_model_free", (), || {
        if !model.is_null() {
            // SAFETY: allocated by Box::into_raw in load_with.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    })
}

/// Fill `*out_info` with the model's headline metadata (strings borrowed from the
/// model, see `ta_model_info`).
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_model_get_info(
    model: *const ta_model,
    out_info: *mut ta_model_info,
) -> ta_status {
    boundary("ta_model_get_info", || {
        let m = arg(model, "model")?;
        let o = out(out_info, "out_info")?;
        let i = m.inner.info();
        let s = &m.strings;
        *o = ta_model_info {
            architecture: s.architecture.as_ptr(),
            name: s.name.as_ptr(),
            description: s.description.as_ptr(),
            quantization: s.quantization.as_ptr(),
            chat_template: s
                .chat_template
                .as_ref()
                .map_or(std::ptr::null(), |c| c.as_ptr()),
            n_vocab: i.n_vocab,
            n_ctx_train: i.n_ctx_train,
            n_embd: i.n_embd,
            n_layer: i.n_layer,
            n_head: i.n_head,
            n_head_kv: i.n_head_kv,
            n_params: i.n_params,
            size_bytes: i.size_bytes,
            file_size: i.file_size,
            bos_token: i.bos,
            eos_token: i.eos,
            eot_token: i.eot,
            nl_token: i.nl,
        };
        Ok(())
    })
}

/// Any GGUF metadata value by key (e.g. "general.name", "llama.context_length"),
/// rendered as text; long arrays are summarised ("[array of 49152 string]").
/// `*out_value` receives an owned string (free with `ta_string_free`);
/// `TA_ERR_NOT_FOUND` when the key is absent.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_model_meta(
    model: *const ta_model,
    key: *const c_char,
    out_value: *mut *mut c_char,
) -> ta_status {
    boundary("ta_model_meta", || {
        let m = arg(model, "model")?;
        let key = str_arg(key, "key")?;
        let o = out(out_value, "out_value")?;
        let v = m.inner.meta(key).ok_or_else(|| {
            Error::not_found(format!(
                "metadata key '{key}' is not in {}",
                m.inner.source()
            ))
        })?;
        *o = owned_cstring(v);
        Ok(())
    })
}

/// All metadata as one JSON document (headline fields plus every GGUF key).
/// `*out_json` is owned: free with `ta_string_free`.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_model_json(
    model: *const ta_model,
    out_json: *mut *mut c_char,
) -> ta_status {
    boundary("ta_model_json", || {
        let m = arg(model, "model")?;
        let o = out(out_json, "out_json")?;
        *o = owned_cstring(m.inner.to_json().to_string());
        Ok(())
    })
}

// Mirrors the C signature it serves.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tokenize_into(
    m: &Model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    parse_special: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> Result<()> {
    let text = bytes_str_arg(text, text_len, "text")?;
    let n_out = out(n_tokens, "n_tokens")?;
    let toks = m.tokenize(text, add_special, parse_special)?;
    fill_buffer(&toks, tokens, capacity, n_out, false, "the token list")
}

/// Tokenize `text_len` bytes of UTF-8 at `text` (not necessarily NUL-terminated).
/// `add_special` adds BOS/EOS as the model wants; `parse_special` turns text such as
/// "<|im_start|>" into control tokens. Writes up to `capacity` tokens to `tokens`
/// and the count to `*n_tokens`. When `capacity` is too small (0 with `tokens` NULL
/// asks for the size), returns `TA_ERR_BUFFER_TOO_SMALL` with the required count in
/// `*n_tokens`.
///
/// # Safety
/// `text` must hold `text_len` bytes; `tokens` `capacity` elements.
#[no_mangle]
pub unsafe extern "C" fn ta_model_tokenize(
    model: *const ta_model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    parse_special: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> ta_status {
    boundary("ta_model_tokenize", || {
        let m = arg(model, "model")?;
        tokenize_into(
            &m.inner,
            text,
            text_len,
            add_special,
            parse_special,
            tokens,
            capacity,
            n_tokens,
        )
    })
}

// Mirrors the C signature it serves.
#[allow(clippy::too_many_arguments)]
pub(crate) fn detokenize_into(
    m: &Model,
    tokens: *const i32,
    n: usize,
    remove_special: bool,
    unparse_special: bool,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> Result<()> {
    let toks = slice_arg(tokens, n, "tokens")?;
    let len = out(len, "len")?;
    let bytes = m.detokenize(toks, remove_special, unparse_special)?;
    fill_buffer(&bytes, buf as *mut u8, capacity, len, true, "the text")
}

/// Tokens back to text. Writes the bytes and a terminating NUL into `buf`
/// (`capacity` bytes) and the length without the NUL to `*len`; when too small,
/// `TA_ERR_BUFFER_TOO_SMALL` with the length in `*len` (allocate `*len + 1`). The
/// bytes may end in a partial UTF-8 character if the tokens split one.
///
/// # Safety
/// `tokens` must hold `n_tokens` elements; `buf` `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn ta_model_detokenize(
    model: *const ta_model,
    tokens: *const i32,
    n_tokens: usize,
    remove_special: bool,
    unparse_special: bool,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ta_status {
    boundary("ta_model_detokenize", || {
        let m = arg(model, "model")?;
        detokenize_into(
            &m.inner,
            tokens,
            n_tokens,
            remove_special,
            unparse_special,
            buf,
            capacity,
            len,
        )
    })
}

pub(crate) fn piece_into(
    m: &Model,
    token: i32,
    special: bool,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> Result<()> {
    let len = out(len, "len")?;
    let bytes = m.token_to_piece(token, special)?;
    fill_buffer(&bytes, buf as *mut u8, capacity, len, true, "the piece")
}

/// One token's text (`special`: render control tokens). Buffer convention as in
/// `ta_model_detokenize`; the piece may be part of a UTF-8 character.
///
/// # Safety
/// `buf` must hold `capacity` bytes.
#[no_mangle]
pub unsafe extern "C" fn ta_model_token_to_piece(
    model: *const ta_model,
    token: i32,
    special: bool,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ta_status {
    boundary("ta_model_token_to_piece", || {
        let m = arg(model, "model")?;
        piece_into(&m.inner, token, special, buf, capacity, len)
    })
}

pub(crate) fn messages_arg(msgs: *const ta_chat_message, n: usize) -> Result<Vec<ChatMessage>> {
    let msgs = slice_arg(msgs, n, "messages")?;
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            let opt = |p, what: &str| -> Result<Option<String>> {
                Ok(opt_str_arg(p, &format!("messages[{i}].{what}"))?.map(str::to_owned))
            };
            Ok(ChatMessage {
                name: opt(m.name, "name")?,
                tool_call_id: opt(m.tool_call_id, "tool_call_id")?,
                tool_calls: opt(m.tool_calls, "tool_calls")?,
                reasoning_content: opt(m.reasoning_content, "reasoning_content")?,
                ..ChatMessage::new(
                    str_arg(m.role, &format!("messages[{i}].role"))?,
                    str_arg(m.content, &format!("messages[{i}].content"))?,
                )
            })
        })
        .collect()
}

/// Format `n_messages` messages with the model's chat template (`template` NULL),
/// a template text, or a llama.cpp built-in format's name ("chatml", "llama3", …).
/// Templates are rendered by a Jinja engine as Hugging Face transformers renders
/// them; `tools` (NULL or a JSON array) and `vars` (NULL or a JSON object of extra
/// variables such as `{"enable_thinking": false}`) reach the template. With
/// `add_assistant` the prompt ends where the assistant's reply begins. `*out_prompt`
/// is owned: free with `ta_string_free`.
///
/// `TA_ERR_INVALID_ARG` when the template raises (its own message is in
/// `ta_last_error`), exceeds its work/memory budget, or `tools`/`vars` are not
/// valid JSON; `TA_ERR_UNSUPPORTED` when the model has no template, or the engine
/// cannot run it and llama.cpp's built-in formats do not recognise it either.
///
/// # Safety
/// `messages` must hold `n_messages` elements.
#[no_mangle]
pub unsafe extern "C" fn ta_model_apply_chat_template(
    model: *const ta_model,
    messages: *const ta_chat_message,
    n_messages: usize,
    add_assistant: bool,
    template_: *const c_char,
    tools: *const c_char,
    vars: *const c_char,
    out_prompt: *mut *mut c_char,
) -> ta_status {
    boundary("ta_model_apply_chat_template", || {
        let m = arg(model, "model")?;
        let msgs = messages_arg(messages, n_messages)?;
        let opts = ChatOptions {
            template: opt_str_arg(template_, "template")?,
            tools: opt_str_arg(tools, "tools")?,
            vars: opt_str_arg(vars, "vars")?,
        };
        let o = out(out_prompt, "out_prompt")?;
        let s = m.inner.apply_chat_template(&msgs, add_assistant, &opts)?;
        *o = owned_cstring(s);
        Ok(())
    })
}
