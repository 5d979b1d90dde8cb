//! `ta_context`: create, generate, chat, cancel, tokenizer forwarders.

use super::model::{
    detokenize_into, messages_arg, piece_into, ta_chat_message, ta_model, tokenize_into,
};
use super::*;
use crate::engine::embed::Pooling;
use crate::engine::{
    AbortHandle, Context, ContextParams, FlashAttn, GenParams, GenResult, StopReason,
};
use parking_lot::Mutex;

/// Flash-attention modes for `ta_context_params.flash_attn`.
pub const TA_FLASH_ATTN_AUTO: i32 = -1;
pub const TA_FLASH_ATTN_DISABLED: i32 = 0;
pub const TA_FLASH_ATTN_ENABLED: i32 = 1;

/// Seed value: "random" in `ta_context_params`, "the context's seed" in `ta_gen_params`.
pub const TA_SEED_DEFAULT: u32 = 0xFFFF_FFFF;

/// Why generation stopped (`ta_gen_result.stop_reason`).
pub const TA_STOP_EOG: i32 = 0;
pub const TA_STOP_MAX_TOKENS: i32 = 1;
pub const TA_STOP_STRING: i32 = 2;
pub const TA_STOP_CANCELLED: i32 = 3;
pub const TA_STOP_CONTEXT_FULL: i32 = 4;

/// How to create a context. Get defaults from `ta_context_default_params()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ta_context_params {
    /// Context window in tokens (default 4096); 0 = the model's training context.
    /// llama.cpp rounds it up to a multiple of 256: `ta_context_n_ctx` gives the
    /// size in use. A value above the model's training context is allowed (and
    /// logged as a warning): quality past it depends on the model's RoPE scaling.
    pub n_ctx: u32,
    /// Largest prompt chunk per decode (default 512).
    pub n_batch: u32,
    /// Physical micro-batch (default 512).
    pub n_ubatch: u32,
    /// Generation threads; 0 = physical cores (default).
    pub n_threads: i32,
    /// Prompt-processing threads; 0 = same as `n_threads` (default).
    pub n_threads_batch: i32,
    /// `TA_FLASH_ATTN_AUTO` (default), `_DISABLED` or `_ENABLED`.
    pub flash_attn: i32,
    /// Default sampling seed; `TA_SEED_DEFAULT` = random per call.
    pub seed: u32,
    /// Sequences (conversations) the context serves at once, 1..=256 (default 1).
    /// Sequences come from `ta_sequence_new`; the context's own calls use one too.
    pub n_seq_max: u32,
    /// false (default): each sequence gets its own KV stream of n_ctx / n_seq_max
    /// cells (`ta_context_n_ctx_seq`), and attends only over those — the faster
    /// layout when sequences decode together. true: one KV cache of n_ctx cells
    /// shared by all sequences, so a long conversation may use what short ones
    /// leave, at the cost of every sequence attending over every cell.
    pub kv_unified: bool,
    /// false (default): a context for generation. true: a context for
    /// `ta_context_embed` only (generation on it fails with `TA_ERR_INVALID_ARG`);
    /// n_batch and n_ubatch become n_ctx, capped at the model's training context,
    /// and texts are batched up to 64 at a time (`n_seq_max`, when above 1, lowers that).
    pub embeddings: bool,
    /// Embedding contexts: `TA_POOLING_MODEL` (default: what the model's file
    /// says), `_NONE`, `_MEAN`, `_CLS`, `_LAST` or `_RANK` (a reranker's
    /// classification head: a model without one is refused, `TA_ERR_UNSUPPORTED`).
    pub pooling: i32,
}

/// Sampling and stopping for one call. Get defaults from `ta_gen_default_params()`.
/// Pointers are borrowed for the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ta_gen_params {
    /// 0 = greedy (deterministic); negative values are refused, like every other
    /// out-of-range field (`TA_ERR_INVALID_ARG` naming it). Default 0.8.
    pub temperature: f32,
    /// 0 = off. Default 40.
    pub top_k: i32,
    /// 1.0 = off. Default 0.95.
    pub top_p: f32,
    /// 0.0 = off. Default 0.05.
    pub min_p: f32,
    /// 1.0 = off (default).
    pub repeat_penalty: f32,
    /// 0.0 = off (default).
    pub frequency_penalty: f32,
    /// 0.0 = off (default).
    pub presence_penalty: f32,
    /// Window of recent tokens the penalties see; -1 = whole context, 0 = off. Default 64.
    pub penalty_last_n: i32,
    /// `TA_SEED_DEFAULT` (default) = the context's seed. Same seed, params and
    /// prompt give the same text.
    pub seed: u32,
    /// Maximum tokens to generate; <= 0 = until the context is full. Default 256.
    pub max_tokens: i32,
    /// `n_stop` NUL-terminated UTF-8 stop strings (may be NULL when `n_stop` is 0).
    /// Generation ends when one appears; it is not emitted. An empty string is
    /// refused (`TA_ERR_INVALID_ARG`): it would match everywhere.
    pub stop: *const *const c_char,
    pub n_stop: usize,
    /// Optional GBNF grammar with a `root` rule; NULL or a text of only whitespace
    /// = no grammar.
    pub grammar: *const c_char,
    /// Chat only: the template to format the messages with, a built-in name
    /// ("chatml", "llama3", "gemma", … as `llama_chat_apply_template` knows them) or a
    /// template text; NULL (default) = the model's own `tokenizer.chat_template`.
    /// Needed for models whose file carries no template. Borrowed for the call.
    pub chat_template: *const c_char,
    /// Chat only: NULL, or a JSON array of tool definitions (OpenAI style), given
    /// to the template as `tools`. Borrowed for the call.
    pub chat_tools: *const c_char,
    /// Chat only: NULL, or a JSON object of extra template variables (e.g.
    /// `{"enable_thinking": false}`). Borrowed for the call.
    pub chat_vars: *const c_char,
    /// false (default): generation that fills the sequence's window stops with
    /// `TA_STOP_CONTEXT_FULL`. true: the oldest tokens after the first `n_keep`
    /// are dropped (half of them each time) and generation goes on; the result
    /// counts the shifts. Models whose memory cannot shift stop as with false.
    pub context_shift: bool,
    /// Tokens at the start of the window a context shift never drops (e.g. the
    /// system prompt). Default 0.
    pub n_keep: u32,
}

/// What a generation call did. Written on `TA_OK` and also on `TA_ERR_CANCELLED`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ta_gen_result {
    /// `TA_STOP_*`.
    pub stop_reason: i32,
    /// Tokens in the (formatted) prompt.
    pub n_prompt_tokens: u32,
    /// Prompt tokens found in the KV cache and not evaluated again.
    pub n_reused_tokens: u32,
    pub n_generated_tokens: u32,
    pub prompt_ms: f64,
    pub gen_ms: f64,
    /// Context shifts during the call (`ta_gen_params.context_shift`).
    pub n_shifts: u32,
    /// Tokens the shifts dropped from the window.
    pub n_shifted_tokens: u32,
}

/// Receives generated text: `len` bytes at `text`, always whole UTF-8 characters,
/// not NUL-terminated, borrowed for the call. Return true to continue, false to stop
/// (the call then returns `TA_ERR_CANCELLED`). Called on the generating thread.
pub type ta_text_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, text: *const c_char, len: usize) -> bool>;

/// A context (KV cache for up to `n_seq_max` sequences, and the batch scheduler
/// that decodes them together), opaque. Free with `ta_context_free`. Its own calls
/// (`ta_context_generate`, `_chat`, `_reset`, `_state_*`) act on one sequence of its
/// own, claimed on first use, and serve one thread at a time: a concurrent call
/// gets `TA_ERR_BUSY`. Safe from any thread at any time: `ta_context_cancel`,
/// `ta_context_n_*`, `ta_context_tokenize` (which only reads the model) and
/// `ta_sequence_new`.
pub struct ta_context {
    pub(super) inner: Mutex<Context>,
    abort: AbortHandle,
    pub(super) model: std::sync::Arc<crate::engine::Model>,
    n_ctx: u32,
    n_ctx_seq: u32,
    n_seq_max: u32,
    pub(super) sequences: crate::engine::Sequences,
}

/// Default context parameters.
#[no_mangle]
pub extern "C" fn ta_context_default_params() -> ta_context_params {
    boundary_value("ta_context_default_params", FALLBACK_CTX_PARAMS, || {
        let d = ContextParams::default();
        Ok(ta_context_params {
            n_ctx: d.n_ctx,
            n_batch: d.n_batch,
            n_ubatch: d.n_ubatch,
            n_threads: d.n_threads,
            n_threads_batch: d.n_threads_batch,
            flash_attn: TA_FLASH_ATTN_AUTO,
            seed: d.seed,
            n_seq_max: d.n_seq_max,
            kv_unified: d.kv_unified,
            embeddings: d.embeddings,
            pooling: d.pooling.code(),
        })
    })
}

// Only returned if building the defaults panicked (it cannot, but the boundary needs
// a value).
const FALLBACK_CTX_PARAMS: ta_context_params = ta_context_params {
    n_ctx: 4096,
    n_batch: 512,
    n_ubatch: 512,
    n_threads: 0,
    n_threads_batch: 0,
    flash_attn: TA_FLASH_ATTN_AUTO,
    seed: TA_SEED_DEFAULT,
    n_seq_max: 1,
    kv_unified: false,
    embeddings: false,
    pooling: -1,
};

const FALLBACK_GEN_PARAMS: ta_gen_params = ta_gen_params {
    temperature: 0.0,
    top_k: 0,
    top_p: 1.0,
    min_p: 0.0,
    repeat_penalty: 1.0,
    frequency_penalty: 0.0,
    presence_penalty: 0.0,
    penalty_last_n: 0,
    seed: TA_SEED_DEFAULT,
    max_tokens: 256,
    stop: std::ptr::null(),
    n_stop: 0,
    grammar: std::ptr::null(),
    chat_template: std::ptr::null(),
    chat_tools: std::ptr::null(),
    chat_vars: std::ptr::null(),
    context_shift: false,
    n_keep: 0,
};

/// Default sampling parameters.
#[no_mangle]
pub extern "C" fn ta_gen_default_params() -> ta_gen_params {
    boundary_value("ta_gen_default_params", FALLBACK_GEN_PARAMS, || {
        let d = GenParams::default();
        Ok(ta_gen_params {
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            frequency_penalty: d.frequency_penalty,
            presence_penalty: d.presence_penalty,
            penalty_last_n: d.penalty_last_n,
            seed: d.seed,
            max_tokens: d.max_tokens,
            stop: std::ptr::null(),
            n_stop: 0,
            grammar: std::ptr::null(),
            chat_template: std::ptr::null(),
            chat_tools: std::ptr::null(),
            chat_vars: std::ptr::null(),
            context_shift: d.context_shift,
            n_keep: d.n_keep,
        })
    })
}

fn context_params(p: *const ta_context_params) -> Result<ContextParams> {
    // SAFETY: NULL = defaults, else valid for the call.
    let Some(p) = (unsafe { p.as_ref() }) else {
        return Ok(ContextParams::default());
    };
    let flash_attn = match p.flash_attn {
        TA_FLASH_ATTN_AUTO => FlashAttn::Auto,
        TA_FLASH_ATTN_DISABLED => FlashAttn::Disabled,
        TA_FLASH_ATTN_ENABLED => FlashAttn::Enabled,
        x => {
            return Err(Error::invalid_arg(format!(
                "flash_attn must be -1, 0 or 1, got {x}"
            )))
        }
    };
    Ok(ContextParams {
        n_ctx: p.n_ctx,
        n_batch: p.n_batch,
        n_ubatch: p.n_ubatch,
        n_threads: p.n_threads,
        n_threads_batch: p.n_threads_batch,
        flash_attn,
        seed: p.seed,
        n_seq_max: p.n_seq_max,
        kv_unified: p.kv_unified,
        embeddings: p.embeddings,
        pooling: Pooling::from_code(p.pooling).ok_or_else(|| {
            Error::invalid_arg(format!("pooling must be -1..=4, got {}", p.pooling))
        })?,
    })
}

pub(super) fn gen_params(p: *const ta_gen_params) -> Result<GenParams> {
    // SAFETY: NULL = defaults, else valid for the call.
    let Some(p) = (unsafe { p.as_ref() }) else {
        return Ok(GenParams::default());
    };
    let stops = str_array_arg(p.stop, p.n_stop, "params.stop")?;
    Ok(GenParams {
        temperature: p.temperature,
        top_k: p.top_k,
        top_p: p.top_p,
        min_p: p.min_p,
        repeat_penalty: p.repeat_penalty,
        frequency_penalty: p.frequency_penalty,
        presence_penalty: p.presence_penalty,
        penalty_last_n: p.penalty_last_n,
        seed: p.seed,
        max_tokens: p.max_tokens,
        stop: stops,
        grammar: opt_str_arg(p.grammar, "params.grammar")?.map(str::to_owned),
        chat_template: opt_str_arg(p.chat_template, "params.chat_template")?.map(str::to_owned),
        chat_tools: opt_str_arg(p.chat_tools, "params.chat_tools")?.map(str::to_owned),
        chat_vars: opt_str_arg(p.chat_vars, "params.chat_vars")?.map(str::to_owned),
        context_shift: p.context_shift,
        n_keep: p.n_keep,
    })
}

/// Create a context on `model` (`params` NULL = defaults). The context holds its own
/// reference to the model. `*out_ctx` receives an owned context (free with
/// `ta_context_free`).
///
/// # Safety
/// Pointers must be NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn ta_context_new(
    model: *const ta_model,
    params: *const ta_context_params,
    out_ctx: *mut *mut ta_context,
) -> ta_status {
    boundary("ta_context_new", || {
        let m = arg(model, "model")?;
        let o = out(out_ctx, "out_ctx")?;
        let p = context_params(params)?;
        let ctx = Context::new(m.inner.clone(), &p)?;
        *o = Box::into_raw(Box::new(ta_context {
            abort: ctx.abort_handle(),
            model: m.inner.clone(),
            n_ctx: ctx.n_ctx(),
            n_ctx_seq: ctx.n_ctx_seq(),
            n_seq_max: ctx.n_seq_max(),
            sequences: ctx.sequences(),
            inner: Mutex::new(ctx),
        }));
        Ok(())
    })
}

/// Free a context (and the model, if this was its last reference and the caller
/// already freed it). NULL is a no-op. Must not race with a call on the same context.
///
/// # Safety
/// `ctx` must come from `ta_context_new` and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn ta_context_free(ctx: *mut ta_context) {
    boundary_value("ta_context_free", (), || {
        if !ctx.is_null() {
            // SAFETY: allocated by Box::into_raw in ta_context_new.
            drop(unsafe { Box::from_raw(ctx) });
        }
        Ok(())
    })
}

fn lock(c: &ta_context) -> Result<parking_lot::MutexGuard<'_, Context>> {
    try_lock(
        &c.inner,
        "the context is in use by another thread (a ta_context serves one call at a time)",
    )
}

pub(super) fn try_lock<'a, T>(
    m: &'a Mutex<T>,
    busy: &str,
) -> Result<parking_lot::MutexGuard<'a, T>> {
    m.try_lock()
        .ok_or_else(|| Error::new(crate::error::ErrorKind::Busy, busy))
}

/// The one place text crosses into a caller's callback.
#[inline]
pub(super) fn c_emit(
    callback: ta_text_callback,
    user_data: *mut c_void,
) -> impl FnMut(&str) -> bool {
    move |s: &str| match callback {
        // SAFETY: the caller's callback and user_data; text borrowed for the call.
        Some(f) => unsafe { f(user_data, s.as_ptr() as *const c_char, s.len()) },
        None => true,
    }
}

fn stream(
    ctx: *mut ta_context,
    params: *const ta_gen_params,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_result: *mut ta_gen_result,
    run: impl FnOnce(&mut Context, &GenParams, &mut dyn FnMut(&str) -> bool) -> Result<GenResult>,
) -> Result<()> {
    let c = arg(ctx as *const ta_context, "ctx")?;
    let gp = gen_params(params)?;
    let mut guard = lock(c)?;
    stream_on(&mut *guard, &gp, callback, user_data, out_result, run)
}

/// Run a generation call on `target` and write its result: the part shared by
/// contexts and sequences.
pub(super) fn stream_on<T>(
    target: &mut T,
    gp: &GenParams,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_result: *mut ta_gen_result,
    run: impl FnOnce(&mut T, &GenParams, &mut dyn FnMut(&str) -> bool) -> Result<GenResult>,
) -> Result<()> {
    let mut cb = c_emit(callback, user_data);
    let r = run(target, gp, &mut cb)?;
    // SAFETY: NULL = the caller does not want the result; else writable.
    if let Some(o) = unsafe { out_result.as_mut() } {
        *o = ta_gen_result {
            stop_reason: r.stop_reason as i32,
            n_prompt_tokens: r.n_prompt,
            n_reused_tokens: r.n_reused,
            n_generated_tokens: r.n_generated,
            prompt_ms: r.prompt_ms,
            gen_ms: r.gen_ms,
            n_shifts: r.n_shifts,
            n_shifted_tokens: r.n_shifted,
        };
    }
    if r.stop_reason == StopReason::Cancelled {
        return Err(Error::cancelled(format!(
            "generation cancelled by the callback or ta_context_cancel after {} generated tokens",
            r.n_generated
        )));
    }
    Ok(())
}

/// Continue `prompt` (NUL-terminated UTF-8; special-token text such as
/// "<|im_start|>" is parsed) and stream the reply to `callback` (may be NULL).
/// BOS: the model's BOS token is put in front when the model asks for it
/// (`tokenizer.ggml.add_bos_token`), unless the prompt already begins with the BOS
/// text; it is never doubled. Only the part of the prompt after what is already in
/// the KV cache is evaluated. When `max_tokens` ends the reply inside a multi-byte
/// character, that unfinished character is not emitted (only generated bytes are).
/// `params` NULL = defaults; `out_result` may be NULL. Returns `TA_ERR_CANCELLED`
/// when the callback returned false or `ta_context_cancel` was called (the text so
/// far was delivered and `*out_result` is written), `TA_ERR_CONTEXT_FULL` before any
/// work when the prompt does not fit, `TA_ERR_BUSY` when another thread is using the
/// context.
///
/// # Safety
/// Pointers must be NULL or valid as described; `user_data` is passed through.
#[no_mangle]
pub unsafe extern "C" fn ta_context_generate(
    ctx: *mut ta_context,
    prompt: *const c_char,
    params: *const ta_gen_params,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_result: *mut ta_gen_result,
) -> ta_status {
    boundary("ta_context_generate", || {
        let prompt = str_arg(prompt, "prompt")?;
        stream(ctx, params, callback, user_data, out_result, |c, p, cb| {
            c.generate(prompt, p, cb)
        })
    })
}

/// Format `n_messages` messages with the model's chat template (or
/// `params->chat_template`) and stream the assistant's reply, as
/// `ta_context_generate` does; `TA_ERR_UNSUPPORTED` when the model has no template
/// and none is given, or the template is one llama.cpp cannot apply. Pass the whole conversation each
/// turn (including earlier replies): the shared prefix is reused from the KV cache.
///
/// # Safety
/// `messages` must hold `n_messages` valid messages.
#[no_mangle]
pub unsafe extern "C" fn ta_context_chat(
    ctx: *mut ta_context,
    messages: *const ta_chat_message,
    n_messages: usize,
    params: *const ta_gen_params,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_result: *mut ta_gen_result,
) -> ta_status {
    boundary("ta_context_chat", || {
        let msgs = messages_arg(messages, n_messages)?;
        stream(ctx, params, callback, user_data, out_result, |c, p, cb| {
            c.chat(&msgs, p, cb)
        })
    })
}

/// Stop the call running on `ctx` (from any thread, also during a long prompt): it
/// returns `TA_ERR_CANCELLED` soon after. A no-op when nothing is running. NULL is a
/// no-op.
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn ta_context_cancel(ctx: *const ta_context) {
    boundary_value("ta_context_cancel", (), || {
        // SAFETY: NULL or a live context.
        if let Some(c) = unsafe { ctx.as_ref() } {
            c.abort.cancel();
        }
        Ok(())
    })
}

/// Clear the KV cache: the next call evaluates its whole prompt.
///
/// # Safety
/// `ctx` must be a live context.
#[no_mangle]
pub unsafe extern "C" fn ta_context_reset(ctx: *mut ta_context) -> ta_status {
    boundary("ta_context_reset", || {
        let c = arg(ctx as *const ta_context, "ctx")?;
        lock(c)?.reset();
        Ok(())
    })
}

/// The KV cache size in tokens, all sequences together (0 if `ctx` is NULL).
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn ta_context_n_ctx(ctx: *const ta_context) -> u32 {
    boundary_value("ta_context_n_ctx", 0, || Ok(arg(ctx, "ctx")?.n_ctx))
}

/// The window of one sequence in tokens: n_ctx / n_seq_max (rounded up to a
/// multiple of 256), or n_ctx with `kv_unified` (0 if `ctx` is NULL).
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn ta_context_n_ctx_seq(ctx: *const ta_context) -> u32 {
    boundary_value("ta_context_n_ctx_seq", 0, || Ok(arg(ctx, "ctx")?.n_ctx_seq))
}

/// How many sequences the context serves at once (0 if `ctx` is NULL).
///
/// # Safety
/// `ctx` must be NULL or a live context.
#[no_mangle]
pub unsafe extern "C" fn ta_context_n_seq_max(ctx: *const ta_context) -> u32 {
    boundary_value("ta_context_n_seq_max", 0, || Ok(arg(ctx, "ctx")?.n_seq_max))
}

/// `ta_sequence_state_save` on the context's own sequence.
///
/// # Safety
/// `ctx` must be a live context; `path` NUL-terminated; `out_n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ta_context_state_save(
    ctx: *mut ta_context,
    path: *const c_char,
    out_n_tokens: *mut usize,
) -> ta_status {
    boundary("ta_context_state_save", || {
        let c = arg(ctx as *const ta_context, "ctx")?;
        let p = path_arg(path, "path")?;
        let mut g = lock(c)?;
        let n = g.main_sequence()?.save_state(p)?;
        write_opt(out_n_tokens, n);
        Ok(())
    })
}

/// `ta_sequence_state_load` on the context's own sequence.
///
/// # Safety
/// `ctx` must be a live context; `path` NUL-terminated; `out_n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ta_context_state_load(
    ctx: *mut ta_context,
    path: *const c_char,
    out_n_tokens: *mut usize,
) -> ta_status {
    boundary("ta_context_state_load", || {
        let c = arg(ctx as *const ta_context, "ctx")?;
        let p = path_arg(path, "path")?;
        let mut g = lock(c)?;
        let n = g.main_sequence()?.load_state(p)?;
        write_opt(out_n_tokens, n);
        Ok(())
    })
}

/// `ta_model_tokenize` on the context's model.
///
/// # Safety
/// As for `ta_model_tokenize`.
#[no_mangle]
pub unsafe extern "C" fn ta_context_tokenize(
    ctx: *const ta_context,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    parse_special: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> ta_status {
    boundary("ta_context_tokenize", || {
        let c = arg(ctx, "ctx")?;
        tokenize_into(
            &c.model,
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

/// `ta_model_detokenize` on the context's model.
///
/// # Safety
/// As for `ta_model_detokenize`.
#[no_mangle]
pub unsafe extern "C" fn ta_context_detokenize(
    ctx: *const ta_context,
    tokens: *const i32,
    n_tokens: usize,
    remove_special: bool,
    unparse_special: bool,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ta_status {
    boundary("ta_context_detokenize", || {
        let c = arg(ctx, "ctx")?;
        detokenize_into(
            &c.model,
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

/// `ta_model_token_to_piece` on the context's model.
///
/// # Safety
/// As for `ta_model_token_to_piece`.
#[no_mangle]
pub unsafe extern "C" fn ta_context_token_to_piece(
    ctx: *const ta_context,
    token: i32,
    special: bool,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> ta_status {
    boundary("ta_context_token_to_piece", || {
        let c = arg(ctx, "ctx")?;
        piece_into(&c.model, token, special, buf, capacity, len)
    })
}

/// Run the library's streaming text path (UTF-8 assembly, stop-string matching and
/// the callback crossing) over `len` bytes at `text`, cut into `piece_len`-byte
/// pieces as if each piece were one generated token. No model is involved: for
/// tests of chunking and for measuring per-token callback overhead.
/// `*out_calls` (may be NULL) receives the number of callback calls. Returns
/// `TA_ERR_CANCELLED` when the callback returned false.
///
/// # Safety
/// `text` must hold `len` bytes; `stop` `n_stop` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn ta_debug_stream(
    text: *const c_char,
    len: usize,
    piece_len: usize,
    stop: *const *const c_char,
    n_stop: usize,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_calls: *mut usize,
) -> ta_status {
    boundary("ta_debug_stream", || {
        let bytes = slice_arg(text as *const u8, len, "text")?;
        if piece_len == 0 {
            return Err(Error::invalid_arg("piece_len must be > 0"));
        }
        let stops = str_array_arg(stop, n_stop, "stop")?;
        let mut calls = 0usize;
        let mut inner = c_emit(callback, user_data);
        let mut emit = |s: &str| {
            calls += 1;
            inner(s)
        };
        let mut ts = crate::engine::text::TextStream::new(stops);
        let mut flow = crate::engine::text::Flow::Continue;
        for piece in bytes.chunks(piece_len) {
            flow = ts.push(piece, &mut emit);
            if flow != crate::engine::text::Flow::Continue {
                break;
            }
        }
        if flow == crate::engine::text::Flow::Continue {
            flow = ts.finish(&mut emit);
        }
        // SAFETY: NULL or writable.
        if let Some(o) = unsafe { out_calls.as_mut() } {
            *o = calls;
        }
        if flow == crate::engine::text::Flow::Cancelled {
            return Err(Error::cancelled("the callback returned false"));
        }
        Ok(())
    })
}
