//! One conversation's state on a model: the KV cache, which tokens it holds, and the
//! generation loop (prefix reuse, batched prompts, UTF-8 assembly, stop strings,
//! cancellation).

use super::model::{ChatMessage, Model};
use super::sampler::Sampler;
use super::text::{Flow, TextStream};
use super::{shim, sys};
use crate::error::{Error, ErrorKind, Result};
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Seed value meaning "pick a random seed" (context) or "use the context's seed" (call).
pub const SEED_DEFAULT: u32 = 0xFFFF_FFFF;

/// Flash-attention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashAttn {
    /// llama.cpp decides per device.
    Auto,
    Disabled,
    Enabled,
}

/// How to create a context.
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// Context window in tokens; 0 = the model's training context.
    pub n_ctx: u32,
    /// Largest batch handed to one decode call (prompt chunks).
    pub n_batch: u32,
    /// Physical micro-batch.
    pub n_ubatch: u32,
    /// Threads for generation; 0 = the machine's physical cores.
    pub n_threads: i32,
    /// Threads for prompt batches; 0 = same as `n_threads`.
    pub n_threads_batch: i32,
    pub flash_attn: FlashAttn,
    /// Default sampling seed; [`SEED_DEFAULT`] = random per call.
    pub seed: u32,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            n_ctx: 4096,
            n_batch: 512,
            n_ubatch: 512,
            n_threads: 0,
            n_threads_batch: 0,
            flash_attn: FlashAttn::Auto,
            seed: SEED_DEFAULT,
        }
    }
}

/// Sampling and stopping for one call.
#[derive(Debug, Clone)]
pub struct GenParams {
    /// 0 = greedy; must not be negative.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: i32,
    /// 1.0 = off.
    pub top_p: f32,
    /// 0.0 = off.
    pub min_p: f32,
    /// 1.0 = off.
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Tokens the penalties look back over; -1 = the whole context, 0 = off.
    pub penalty_last_n: i32,
    /// [`SEED_DEFAULT`] = the context's seed.
    pub seed: u32,
    /// Stop after this many generated tokens; 0 or below = until the context is full.
    pub max_tokens: i32,
    /// Strings that end generation; never emitted.
    pub stop: Vec<String>,
    /// Optional GBNF grammar with a `root` rule.
    pub grammar: Option<String>,
    /// Chat only: a built-in template name or template text; None = the model's.
    pub chat_template: Option<String>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            seed: SEED_DEFAULT,
            max_tokens: 256,
            stop: Vec::new(),
            grammar: None,
            chat_template: None,
        }
    }
}

impl GenParams {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_arg(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0 (0 = greedy), got {}",
                self.temperature
            ));
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            return bad(format!(
                "stop[{i}] is empty; an empty stop string would match everywhere"
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.top_k < 0 {
            return bad(format!("top_k must be >= 0, got {}", self.top_k));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        if !self.frequency_penalty.is_finite() || !self.presence_penalty.is_finite() {
            return bad("frequency_penalty and presence_penalty must be finite".into());
        }
        if self.penalty_last_n < -1 {
            return bad(format!(
                "penalty_last_n must be >= -1, got {}",
                self.penalty_last_n
            ));
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    Eog = 0,
    MaxTokens = 1,
    StopString = 2,
    /// The callback returned false or `cancel` was called.
    Cancelled = 3,
    /// The context window filled up during generation.
    ContextFull = 4,
}

/// What a generation call did.
#[derive(Debug, Clone, PartialEq)]
pub struct GenResult {
    pub stop_reason: StopReason,
    /// Tokens in the prompt.
    pub n_prompt: u32,
    /// Prompt tokens already in the KV cache (not evaluated again).
    pub n_reused: u32,
    /// Tokens generated (including one that completed a stop string).
    pub n_generated: u32,
    pub prompt_ms: f64,
    pub gen_ms: f64,
}

const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const CANCELLED: u8 = 2;

/// A thread-safe handle that cancels the context's running call.
#[derive(Debug, Clone)]
pub struct AbortHandle(Arc<AtomicU8>);

impl AbortHandle {
    /// Cancel the call in progress, if any (a no-op when idle, so a stale cancel never
    /// kills the next call).
    pub fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(RUNNING, CANCELLED, Ordering::AcqRel, Ordering::Acquire);
    }

    fn cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire) == CANCELLED
    }
}

unsafe extern "C" fn abort_cb(data: *mut c_void) -> bool {
    // SAFETY: data is the AtomicU8 inside the context's Arc, alive as long as the context.
    let flag = unsafe { &*(data as *const AtomicU8) };
    flag.load(Ordering::Acquire) == CANCELLED
}

/// A context: KV cache plus the tokens it holds. Not `Sync`: one caller at a time
/// (the C layer enforces that with a try-lock and `TA_ERR_BUSY`).
pub struct Context {
    ptr: NonNull<sys::llama_context>,
    model: Arc<Model>,
    /// Exactly the tokens at positions 0.. of sequence 0 in the KV cache.
    cached: Vec<i32>,
    abort: AbortHandle,
    n_ctx: u32,
    n_batch: u32,
    seed: u32,
    piece: Vec<u8>,
}

// SAFETY: a llama_context may move between threads; it is only used through &mut.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model, freed once; the model (kept alive
        // by self.model) is dropped after this.
        unsafe { sys::llama_free(self.ptr.as_ptr()) }
    }
}

/// Threads to use by default: the physical cores this process may run on (SMT
/// siblings share SIMD units; extra threads only add contention). Detected once.
pub fn physical_cores() -> u32 {
    static N: once_cell::sync::Lazy<u32> =
        once_cell::sync::Lazy::new(|| crate::hardware::cpu::detect().recommended_threads());
    *N
}

impl Context {
    pub fn new(model: Arc<Model>, p: &ContextParams) -> Result<Context> {
        super::init();
        if p.n_batch == 0 || p.n_ubatch == 0 {
            return Err(Error::invalid_arg("n_batch and n_ubatch must be > 0"));
        }
        if p.n_threads < 0 || p.n_threads_batch < 0 {
            return Err(Error::invalid_arg(
                "n_threads and n_threads_batch must be >= 0",
            ));
        }
        let threads = if p.n_threads == 0 {
            physical_cores() as i32
        } else {
            p.n_threads
        };
        let threads_batch = if p.n_threads_batch == 0 {
            threads
        } else {
            p.n_threads_batch
        };
        let abort = AbortHandle(Arc::new(AtomicU8::new(IDLE)));
        // SAFETY: default params by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = p.n_ctx;
        cp.n_batch = p.n_batch;
        cp.n_ubatch = p.n_ubatch.min(p.n_batch);
        cp.n_seq_max = 1;
        cp.n_threads = threads;
        cp.n_threads_batch = threads_batch;
        cp.flash_attn_type = match p.flash_attn {
            FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::Disabled => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttn::Enabled => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        };
        cp.abort_callback = Some(abort_cb);
        cp.abort_callback_data = Arc::as_ptr(&abort.0) as *mut c_void;
        cp.no_perf = true;
        if model.is_vocab_only() || model.gguf().tensors.is_empty() {
            return Err(Error::invalid_arg(format!(
                "{}: the model was loaded vocab-only or has no weights; a context needs weights",
                model.source()
            )));
        }
        let train = model.info().n_ctx_train;
        if train > 0 && p.n_ctx > train as u32 {
            crate::log::log(
                crate::log::LogLevel::Warn,
                &format!(
                    "{}: n_ctx {} is above the model's training context {train}; quality past it depends on the model's RoPE scaling",
                    model.source(),
                    p.n_ctx
                ),
            );
        }
        check_memory(&model, p)?;
        crate::log::clear_backend_errors();
        let mut ptr = std::ptr::null_mut();
        // SAFETY: the model pointer is valid while `model` (kept in the context) lives.
        let what = format!("{}: could not create a context", model.source());
        shim::guard(ErrorKind::Backend, &what, |e, el| unsafe {
            shim::tas_init_from_model(model.raw(), cp, &mut ptr, e, el)
        })?;
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            shim::backend_failure(
                ErrorKind::Backend,
                &what,
                "llama.cpp refused the parameters",
            )
        })?;
        // SAFETY: valid context.
        let n_ctx = unsafe { sys::llama_n_ctx(ptr.as_ptr()) };
        // llama.cpp caps n_batch at n_ctx; larger chunks would trip its assert.
        // SAFETY: valid context.
        let n_batch = unsafe { sys::llama_n_batch(ptr.as_ptr()) }.max(1);
        Ok(Context {
            ptr,
            model,
            cached: Vec::new(),
            abort,
            n_ctx,
            n_batch,
            seed: p.seed,
            piece: vec![0u8; 64],
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Tokens currently held in the KV cache.
    pub fn cached_tokens(&self) -> &[i32] {
        &self.cached
    }

    pub fn abort_handle(&self) -> AbortHandle {
        self.abort.clone()
    }

    /// Forget the KV cache (the next call evaluates its whole prompt).
    pub fn reset(&mut self) {
        // SAFETY: valid context; clearing memory is always allowed.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) };
        self.cached.clear();
    }

    /// Continue `prompt` (raw text, special tokens parsed), streaming text to `on_text`;
    /// returning false from it stops generation.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        params.validate()?;
        let tokens = self.model.tokenize_prompt(prompt)?;
        self.run(&tokens, params, on_text)
    }

    /// Format `messages` with the model's chat template and generate the reply.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        params.validate()?;
        if messages.is_empty() {
            return Err(Error::invalid_arg("messages must not be empty"));
        }
        let prompt =
            self.model
                .apply_chat_template(messages, true, params.chat_template.as_deref())?;
        let tokens = self.model.tokenize_prompt(&prompt)?;
        self.run(&tokens, params, on_text)
    }

    /// Generate from already-tokenized input.
    pub fn run(
        &mut self,
        tokens: &[i32],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        params.validate()?;
        // Generated tokens become text: a model without a tokenizer cannot do that.
        self.model.require_tokenizer()?;
        if tokens.is_empty() {
            return Err(Error::invalid_arg("the prompt is empty (no tokens)"));
        }
        let n_vocab = self.model.info().n_vocab;
        if let Some(t) = tokens.iter().find(|&&t| t < 0 || t >= n_vocab) {
            return Err(Error::invalid_arg(format!(
                "token {t} is out of range (vocabulary has {n_vocab})"
            )));
        }
        // Room for the prompt and at least one generated token, checked before any work.
        if tokens.len() >= self.n_ctx as usize {
            return Err(Error::new(
                ErrorKind::ContextFull,
                format!(
                    "the prompt is {} tokens but the context holds {} (including one token for the reply); create the context with a larger n_ctx",
                    tokens.len(),
                    self.n_ctx
                ),
            ));
        }
        let seed = if params.seed != SEED_DEFAULT {
            params.seed
        } else {
            self.seed
        };
        let sampler = Sampler::new(&self.model, params, seed)?;

        // Reuse the longest common prefix already in the KV cache. At least the last
        // prompt token is evaluated again: its logits are needed for the first sample.
        let mut lcp = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        lcp = lcp.min(tokens.len() - 1);
        // SAFETY: valid context.
        let mem = unsafe { sys::llama_get_memory(self.ptr.as_ptr()) };
        let mut removed = false;
        // SAFETY: removing [lcp, end) of sequence 0 of a valid context's memory.
        let caught = shim::guard(ErrorKind::Backend, self.model.source(), |e, el| unsafe {
            shim::tas_memory_seq_rm(mem, 0, lcp as i32, -1, &mut removed, e, el)
        });
        if let Err(e) = caught {
            // What the cache holds after an exception is unknown: forget it all.
            self.reset();
            return Err(e);
        }
        if !removed {
            // SAFETY: clearing memory is always allowed.
            unsafe { sys::llama_memory_clear(mem, true) };
            lcp = 0;
        }
        self.cached.truncate(lcp);

        self.abort.0.store(RUNNING, Ordering::Release);
        let out = self.run_inner(tokens, lcp, params, &sampler, on_text);
        self.abort.0.store(IDLE, Ordering::Release);
        out
    }

    fn decode(&mut self, chunk: &[i32]) -> Result<()> {
        let mut buf = chunk.to_vec();
        let mut rc = 0;
        // SAFETY: batch_get_one borrows `buf` for the decode call only.
        let what = format_args!("{}: decode failed", self.model.source());
        let caught = shim::guard(ErrorKind::Backend, what, |e, el| unsafe {
            let batch = sys::llama_batch_get_one(buf.as_mut_ptr(), buf.len() as i32);
            shim::tas_decode(self.ptr.as_ptr(), batch, &mut rc, e, el)
        });
        if let Err(e) = caught {
            // What the cache holds after an exception is unknown: forget it all.
            self.reset();
            return Err(e);
        }
        match rc {
            0 => {
                self.cached.extend_from_slice(chunk);
                Ok(())
            }
            _ => {
                // Aborted or failed: llama.cpp may have kept some ubatches. Re-derive
                // what the cache holds from its highest position so reuse stays exact.
                // SAFETY: valid context.
                let pos_max = unsafe {
                    sys::llama_memory_seq_pos_max(sys::llama_get_memory(self.ptr.as_ptr()), 0)
                };
                let kept = (pos_max + 1).max(0) as usize;
                let before = self.cached.len();
                let extra = kept.saturating_sub(before).min(chunk.len());
                self.cached.extend_from_slice(&chunk[..extra]);
                Err(self.decode_error(rc))
            }
        }
    }

    fn run_inner(
        &mut self,
        tokens: &[i32],
        lcp: usize,
        params: &GenParams,
        sampler: &Sampler,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        let mut res = GenResult {
            stop_reason: StopReason::Eog,
            n_prompt: tokens.len() as u32,
            n_reused: lcp as u32,
            n_generated: 0,
            prompt_ms: 0.0,
            gen_ms: 0.0,
        };
        let t0 = Instant::now();
        for chunk in tokens[lcp..].chunks(self.n_batch as usize) {
            if let Err(e) = self.decode(chunk) {
                res.prompt_ms = ms(t0);
                return self.decode_failed(e, res);
            }
            if self.abort.cancelled() {
                res.prompt_ms = ms(t0);
                res.stop_reason = StopReason::Cancelled;
                return Ok(res);
            }
        }
        res.prompt_ms = ms(t0);

        let t1 = Instant::now();
        let mut stream = TextStream::new(params.stop.clone());
        let max = if params.max_tokens > 0 {
            params.max_tokens as u32
        } else {
            u32::MAX
        };
        loop {
            if self.abort.cancelled() {
                res.stop_reason = StopReason::Cancelled;
                break;
            }
            let mut tok = 0;
            // SAFETY: the last decode produced logits for its last token (-1).
            shim::guard(ErrorKind::Backend, self.model.source(), |e, el| unsafe {
                shim::tas_sampler_sample(sampler.raw(), self.ptr.as_ptr(), -1, &mut tok, e, el)
            })?;
            if self.model.is_eog(tok) {
                res.stop_reason = StopReason::Eog;
                break;
            }
            res.n_generated += 1;
            let mut piece = std::mem::take(&mut self.piece);
            let n = self.model.token_to_piece_into(tok, false, &mut piece)?;
            let flow = stream.push(&piece[..n], on_text);
            self.piece = piece;
            match flow {
                Flow::Continue => {}
                Flow::Stopped => {
                    res.stop_reason = StopReason::StopString;
                    res.gen_ms = ms(t1);
                    return Ok(res);
                }
                Flow::Cancelled => {
                    res.stop_reason = StopReason::Cancelled;
                    break;
                }
            }
            if res.n_generated >= max {
                res.stop_reason = StopReason::MaxTokens;
                break;
            }
            if self.cached.len() + 1 >= self.n_ctx as usize {
                res.stop_reason = StopReason::ContextFull;
                break;
            }
            if let Err(e) = self.decode(&[tok]) {
                res.gen_ms = ms(t1);
                return self.decode_failed(e, res);
            }
        }
        if res.stop_reason != StopReason::Cancelled {
            match stream.finish(on_text) {
                Flow::Cancelled => res.stop_reason = StopReason::Cancelled,
                Flow::Stopped => res.stop_reason = StopReason::StopString,
                Flow::Continue => {}
            }
        }
        res.gen_ms = ms(t1);
        Ok(res)
    }

    /// llama_decode's return code as an error: 2 aborted, 1 no KV slot, -2
    /// allocation failed, others a failure explained in the log.
    fn decode_error(&self, rc: i32) -> Error {
        match rc {
            2 => Error::cancelled("decode aborted"),
            1 => Error::new(
                ErrorKind::ContextFull,
                format!(
                    "no room left in the KV cache ({} tokens held, n_ctx {})",
                    self.cached.len(),
                    self.n_ctx
                ),
            ),
            -2 => shim::backend_failure(
                ErrorKind::OutOfMemory,
                &format!("{}: decode failed", self.model.source()),
                "llama.cpp could not allocate the batch",
            ),
            _ => shim::backend_failure(
                ErrorKind::Backend,
                &format!("{}: decode failed", self.model.source()),
                &format!("llama_decode returned {rc}"),
            ),
        }
    }

    fn decode_failed(&mut self, e: Error, mut res: GenResult) -> Result<GenResult> {
        if e.kind() == ErrorKind::Cancelled {
            res.stop_reason = StopReason::Cancelled;
            return Ok(res);
        }
        Err(e)
    }
}

/// Refuse a context whose KV cache and compute buffers cannot fit the memory this
/// process may use (cgroup limits included), before llama.cpp tries to allocate
/// them: a failed allocation deep inside it is slow at best and an abort at worst.
/// Only where the estimate is an upper bound that holds: host memory (a build
/// without GPU offload) and plain attention; sliding-window and recurrent layers
/// need far less than the estimate says.
fn check_memory(model: &Model, p: &ContextParams) -> Result<()> {
    use crate::hardware::fit;
    let g = model.gguf();
    let partial_kv = g.kv.iter().any(|(k, _)| {
        k.ends_with(".attention.sliding_window")
            || k.contains(".ssm.")
            || k.contains(".wkv.")
            || k.contains(".shortconv.")
    });
    if super::supports_gpu_offload() || partial_kv {
        return Ok(());
    }
    let Ok(shape) = fit::ModelShape::from_gguf(g) else {
        return Ok(());
    };
    let fp = fit::FitParams {
        n_ctx: p.n_ctx.into(),
        n_ubatch: p.n_ubatch.min(p.n_batch).into(),
        flash_attn: p.flash_attn != FlashAttn::Disabled,
    };
    let (kv, compute) = fit::context_bytes(&shape, &fp);
    let need = kv.saturating_add(compute);
    let mem = crate::hardware::memory::detect();
    let avail = mem.available_bytes;
    // 0 = unknown (no /proc): nothing to compare with.
    if avail != 0 && need > avail {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(Error::new(
            ErrorKind::OutOfMemory,
            format!(
                "{}: a context of {} tokens needs {:.2} GiB (KV cache {:.2} GiB, compute buffers {:.2} GiB) but {:.2} GiB of memory is available; lower n_ctx or n_ubatch",
                model.source(),
                if p.n_ctx == 0 { shape.n_ctx_train } else { p.n_ctx.into() },
                gib(need),
                gib(kv),
                gib(compute),
                gib(avail)
            ),
        ));
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_params_validation_names_the_field() {
        let p = GenParams {
            top_p: 0.0,
            ..Default::default()
        };
        let e = p.validate().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        assert!(e.message().contains("top_p"));
        assert!(GenParams::default().validate().is_ok());
    }

    #[test]
    fn abort_handle_is_a_noop_when_idle() {
        let h = AbortHandle(Arc::new(AtomicU8::new(IDLE)));
        h.cancel();
        assert!(!h.cancelled());
        h.0.store(RUNNING, Ordering::Release);
        h.cancel();
        assert!(h.cancelled());
    }

    #[test]
    fn physical_cores_is_sane() {
        let p = physical_cores();
        let l = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(p >= 1 && p <= l, "{p} {l}");
    }
}
