//! A context on a model: its parameters, the sampling and result types of a
//! generation call, and the handle that owns the KV cache and its sequences.

use super::batch::{AbortHandle, Core, Setup};
use super::embed::{EmbedParams, Embeddings, Pooling, MAX_EMBED_SEQ};
use super::model::{ChatMessage, Model};
use super::sequence::Sequence;
use super::sys;
use crate::error::{Error, ErrorKind, Result};
use std::sync::Arc;

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
    /// Sequences (conversations) the context can serve at once; 1..=256.
    pub n_seq_max: u32,
    /// One KV cache shared by all sequences (a long one may use what short ones
    /// leave) instead of a stream of n_ctx / n_seq_max cells per sequence (faster:
    /// each sequence attends only over its own cells).
    pub kv_unified: bool,
    /// A context for [`Context::embed`] (no generation): texts are batched as
    /// separate sequences, n_batch and n_ubatch become n_ctx (capped at the
    /// model's training context) so every text fits one micro-batch, and the KV
    /// cache (if the model has one) is shared.
    pub embeddings: bool,
    /// Embedding contexts: how token vectors become one vector per text.
    pub pooling: Pooling,
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
            n_seq_max: 1,
            kv_unified: false,
            embeddings: false,
            pooling: Pooling::Model,
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
    /// Chat only: JSON array of tool definitions, the template's `tools`.
    pub chat_tools: Option<String>,
    /// Chat only: JSON object of extra template variables (`enable_thinking`, …).
    pub chat_vars: Option<String>,
    /// When generation fills the window, drop the oldest tokens after the first
    /// `n_keep` and go on, instead of stopping with [`StopReason::ContextFull`].
    pub context_shift: bool,
    /// Tokens at the start of the window a context shift never drops.
    pub n_keep: u32,
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
            chat_tools: None,
            chat_vars: None,
            context_shift: false,
            n_keep: 0,
        }
    }
}

impl GenParams {
    pub(crate) fn validate(&self) -> Result<()> {
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
    /// Context shifts during the call, and the tokens they dropped.
    pub n_shifts: u32,
    pub n_shifted: u32,
}

/// A context: a llama.cpp context whose KV cache holds up to `n_seq_max`
/// sequences, and the batch scheduler that decodes them together. Its own calls
/// run on its first sequence, created on first use. Not `Sync` (one caller at a
/// time per sequence; the C layer enforces that with `TA_ERR_BUSY`).
pub struct Context {
    core: Arc<Core>,
    main: Option<Sequence>,
    main_abort: AbortHandle,
    seed: u32,
}

/// Creates sequences of one context; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Sequences {
    core: Arc<Core>,
    seed: u32,
}

impl Sequences {
    /// See [`Context::new_sequence`].
    pub fn new_sequence(&self) -> Result<Sequence> {
        Sequence::new(
            self.core.clone(),
            AbortHandle::new(&self.core.sh),
            self.seed,
        )
    }
}

/// Threads to use by default: the physical cores this process may run on (SMT
/// siblings share SIMD units; extra threads only add contention). Detected once.
pub fn physical_cores() -> u32 {
    static N: once_cell::sync::Lazy<u32> =
        once_cell::sync::Lazy::new(|| crate::hardware::cpu::detect().recommended_threads());
    *N
}

/// llama.cpp's LLAMA_MAX_SEQ.
pub const MAX_SEQ: u32 = 256;

/// An embedding context's parameters: every text must fit one micro-batch, a
/// batch holds up to [`MAX_EMBED_SEQ`] texts sharing one cache, and positions stay
/// inside the model's table (BERT's position embeddings end at n_ctx_train).
fn embedding_params(model: &Model, p: &ContextParams) -> ContextParams {
    let train = model.info().n_ctx_train.max(0) as u32;
    let mut n_ctx = if p.n_ctx == 0 { train } else { p.n_ctx };
    if train > 0 {
        n_ctx = n_ctx.min(train);
    }
    let n_ctx = n_ctx.max(8);
    ContextParams {
        n_ctx,
        n_batch: n_ctx,
        n_ubatch: n_ctx,
        n_seq_max: if p.n_seq_max > 1 {
            p.n_seq_max.min(MAX_EMBED_SEQ)
        } else {
            MAX_EMBED_SEQ
        }
        .min(n_ctx),
        kv_unified: true,
        ..p.clone()
    }
}

impl Context {
    pub fn new(model: Arc<Model>, p: &ContextParams) -> Result<Context> {
        super::init();
        let adjusted;
        let p = if p.embeddings {
            adjusted = embedding_params(&model, p);
            &adjusted
        } else {
            p
        };
        if p.n_batch == 0 || p.n_ubatch == 0 {
            return Err(Error::invalid_arg("n_batch and n_ubatch must be > 0"));
        }
        if p.n_threads < 0 || p.n_threads_batch < 0 {
            return Err(Error::invalid_arg(
                "n_threads and n_threads_batch must be >= 0",
            ));
        }
        if !(1..=MAX_SEQ).contains(&p.n_seq_max) {
            return Err(Error::invalid_arg(format!(
                "n_seq_max must be in 1..={MAX_SEQ}, got {}",
                p.n_seq_max
            )));
        }
        // llama.cpp reserves an output row per sequence within a batch's rows and
        // asserts (aborting the process) when there are more sequences than rows.
        if p.n_seq_max > p.n_batch {
            return Err(Error::invalid_arg(format!(
                "n_seq_max ({}) must not exceed n_batch ({})",
                p.n_seq_max, p.n_batch
            )));
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
        // SAFETY: default params by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = p.n_ctx;
        cp.n_batch = p.n_batch;
        cp.n_ubatch = p.n_ubatch.min(p.n_batch);
        cp.n_seq_max = p.n_seq_max;
        cp.kv_unified = p.kv_unified;
        cp.embeddings = p.embeddings;
        cp.pooling_type = if p.embeddings {
            p.pooling.code()
        } else {
            sys::LLAMA_POOLING_TYPE_UNSPECIFIED
        };
        cp.n_threads = threads;
        cp.n_threads_batch = threads_batch;
        cp.flash_attn_type = match p.flash_attn {
            FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::Disabled => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
            FlashAttn::Enabled => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        };
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
        if p.embeddings {
            check_rank_head(&model, p.pooling)?;
        }
        check_memory(&model, p)?;
        let what = format!("{}: could not create a context", model.source());
        let core = Arc::new(Core::new(model, Setup { params: cp, what })?);
        let main_abort = AbortHandle::new(&core.sh);
        Ok(Context {
            core,
            main: None,
            main_abort,
            seed: p.seed,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.core.sh.model
    }

    /// The whole KV cache in tokens (all sequences).
    pub fn n_ctx(&self) -> u32 {
        self.core.sh.n_ctx
    }

    /// The window of one sequence.
    pub fn n_ctx_seq(&self) -> u32 {
        self.core.sh.n_ctx_seq
    }

    pub fn n_seq_max(&self) -> u32 {
        self.core.sh.n_seq_max
    }

    /// One vector per text (see [`super::embed`]); the context must have been
    /// created with `embeddings`.
    pub fn embed(&self, texts: &[&str], params: &EmbedParams) -> Result<Embeddings> {
        super::embed::embed(&self.core, texts, params)
    }

    /// Length of each vector [`Context::embed`] returns (0 when the context is not
    /// for embeddings).
    pub fn embed_dim(&self) -> usize {
        if self.core.sh.embeddings {
            super::embed::dim(&self.core)
        } else {
            0
        }
    }

    /// The pooling an embedding context uses (the model's default resolved).
    pub fn pooling(&self) -> Option<Pooling> {
        self.core
            .sh
            .embeddings
            .then(|| super::embed::context_pooling(&self.core))
    }

    /// A new sequence (conversation) in this context; `Busy` when all
    /// `n_seq_max` are taken. It keeps the context's KV cache alive.
    pub fn new_sequence(&self) -> Result<Sequence> {
        self.sequences().new_sequence()
    }

    /// A handle that creates sequences of this context from any thread, without
    /// borrowing the context.
    pub fn sequences(&self) -> Sequences {
        Sequences {
            core: self.core.clone(),
            seed: self.seed,
        }
    }

    /// The context's own sequence, claimed on first use.
    pub fn main_sequence(&mut self) -> Result<&mut Sequence> {
        if self.main.is_none() {
            self.main = Some(Sequence::new(
                self.core.clone(),
                self.main_abort.clone(),
                self.seed,
            )?);
        }
        Ok(self.main.as_mut().expect("just set"))
    }

    /// Tokens the context's own sequence holds in the KV cache.
    pub fn cached_tokens(&self) -> Vec<i32> {
        self.main
            .as_ref()
            .map(Sequence::cached_tokens)
            .unwrap_or_default()
    }

    /// Cancels the context's own sequence.
    pub fn abort_handle(&self) -> AbortHandle {
        self.main_abort.clone()
    }

    /// Forget the context's own sequence's KV cells.
    pub fn reset(&mut self) {
        if let Some(m) = self.main.as_mut() {
            m.reset();
        }
    }

    /// [`Sequence::generate`] on the context's own sequence.
    pub fn generate(
        &mut self,
        prompt: &str,
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        self.main_sequence()?.generate(prompt, params, on_text)
    }

    /// [`Sequence::chat`] on the context's own sequence.
    pub fn chat(
        &mut self,
        messages: &[ChatMessage],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        self.main_sequence()?.chat(messages, params, on_text)
    }

    /// [`Sequence::run`] on the context's own sequence.
    pub fn run(
        &mut self,
        tokens: &[i32],
        params: &GenParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenResult> {
        self.main_sequence()?.run(tokens, params, on_text)
    }
}

/// Refuse rank pooling on a model without a classification head (`cls.weight`
/// or `cls.output.weight`). llama.cpp does not: its graph then ends in the pooled
/// hidden state, and `llama_get_embeddings_seq` hands back `n_cls_out` (1) floats
/// read from that state at the sequence's index, a "score" that means nothing.
fn check_rank_head(model: &Model, pooling: Pooling) -> Result<()> {
    let g = model.gguf();
    let rank = match pooling {
        Pooling::Rank => true,
        Pooling::Model => g.arch_u64("pooling_type") == Some(Pooling::Rank.code() as u64),
        _ => false,
    };
    let head = g
        .tensors
        .iter()
        .any(|t| t.name == "cls.weight" || t.name == "cls.output.weight");
    if rank && !head {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{}: rank pooling needs a classification head (a reranker's cls or cls.output tensors) and this model has none: use mean, cls or last pooling for embeddings",
                model.source()
            ),
        ));
    }
    Ok(())
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
    fn physical_cores_is_sane() {
        let p = physical_cores();
        let l = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(p >= 1 && p <= l, "{p} {l}");
    }
}
