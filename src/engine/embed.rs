//! Embeddings: one vector per text from a context created for them
//! (`ContextParams::embeddings`). Several texts go through one decode as separate
//! sequences; encoder models (BERT family) and decoder models (mean/last pooling)
//! both work. Everything llama.cpp would assert on (a text longer than the
//! micro-batch, positions past the model's table) is refused here first.

use super::batch::Core;
use super::sys;
use crate::error::{Error, ErrorKind, Result};

/// Sequences one embedding decode may hold (texts batched together).
pub const MAX_EMBED_SEQ: u32 = 64;

/// How a text's token vectors become one vector (llama.cpp's pooling types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// What the model's file says (`<arch>.pooling_type`); mean when it says nothing.
    #[default]
    Model,
    /// No pooling: one vector per token (not available through `embed`).
    None,
    Mean,
    /// The first token's vector (BERT's [CLS]).
    Cls,
    /// The last token's vector (decoder embedding models).
    Last,
    /// A reranker's classification head: `n_cls_out` scores per text. A context
    /// on a model without one (no `cls` / `cls.output` tensors) is refused.
    Rank,
}

impl Pooling {
    /// The C/llama code: -1 model, 0 none, 1 mean, 2 cls, 3 last, 4 rank.
    pub fn from_code(c: i32) -> Option<Pooling> {
        Some(match c {
            -1 => Pooling::Model,
            0 => Pooling::None,
            1 => Pooling::Mean,
            2 => Pooling::Cls,
            3 => Pooling::Last,
            4 => Pooling::Rank,
            _ => return None,
        })
    }

    pub fn code(self) -> i32 {
        match self {
            Pooling::Model => -1,
            Pooling::None => 0,
            Pooling::Mean => 1,
            Pooling::Cls => 2,
            Pooling::Last => 3,
            Pooling::Rank => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pooling::Model => "model",
            Pooling::None => "none",
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::Rank => "rank",
        }
    }
}

/// Options of one `embed` call.
#[derive(Debug, Clone, Copy)]
pub struct EmbedParams {
    /// Scale each vector to unit length (cosine similarity becomes a dot
    /// product). Not applied to rank scores.
    pub normalize: bool,
    /// Cut a text longer than the context to its first tokens (keeping the
    /// model's closing separator) instead of refusing it.
    pub truncate: bool,
}

impl Default for EmbedParams {
    fn default() -> Self {
        EmbedParams {
            normalize: true,
            truncate: false,
        }
    }
}

/// The vectors of one call: `vectors[i * dim .. (i + 1) * dim]` is text `i`'s.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub dim: usize,
    pub vectors: Vec<f32>,
    /// Tokens each text was embedded from (after truncation).
    pub n_tokens: Vec<u32>,
}

impl Embeddings {
    pub fn get(&self, i: usize) -> &[f32] {
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    pub fn len(&self) -> usize {
        self.n_tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.n_tokens.is_empty()
    }
}

/// The pooling the context actually uses (llama.cpp resolves "model").
pub(crate) fn context_pooling(core: &Core) -> Pooling {
    let l = core.sh.llama.lock();
    // SAFETY: valid context.
    let code = unsafe { sys::llama_pooling_type(l.ptr.as_ptr()) };
    Pooling::from_code(code).unwrap_or(Pooling::Mean)
}

/// Why `embed` refuses a context made for generation.
pub(crate) const NOT_FOR_EMBEDDINGS: &str =
    "this context was not created for embeddings: set ContextParams.embeddings (ta_context_params.embeddings)";

/// Length of each vector `embed` returns on this context.
pub(crate) fn dim(core: &Core) -> usize {
    dim_for(core, context_pooling(core))
}

fn dim_for(core: &Core, pooling: Pooling) -> usize {
    let m = core.sh.model.raw();
    // SAFETY: plain getters on a loaded model.
    let n = unsafe {
        if pooling == Pooling::Rank {
            sys::llama_model_n_cls_out(m) as i64
        } else {
            sys::llama_model_n_embd_out(m) as i64
        }
    };
    n.max(0) as usize
}

pub(crate) fn embed(core: &Core, texts: &[&str], p: &EmbedParams) -> Result<Embeddings> {
    let sh = &core.sh;
    let model = &sh.model;
    if !sh.embeddings {
        return Err(Error::invalid_arg(NOT_FOR_EMBEDDINGS));
    }
    let pooling = context_pooling(core);
    if pooling == Pooling::None {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "pooling \"none\" gives one vector per token, not per text: create the context with another pooling",
        ));
    }
    let dim = dim_for(core, pooling);
    if dim == 0 {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("{}: the model reports no embedding size", model.source()),
        ));
    }
    // One text must fit a micro-batch (llama.cpp asserts otherwise for
    // non-causal models), and the cache: both are n_ctx here.
    let limit = sh.n_batch.min(sh.n_ctx) as usize;
    // SAFETY: plain getters on a loaded model and its vocabulary.
    let (encoder_only, adds_sep) = unsafe {
        let m = model.raw();
        let v = sys::llama_model_get_vocab(m);
        (
            sys::llama_model_has_encoder(m) && !sys::llama_model_has_decoder(m),
            sys::llama_vocab_get_add_eos(v) || sys::llama_vocab_get_add_sep(v),
        )
    };
    let mut toks = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let mut v = model.tokenize(t, true, false)?;
        if v.is_empty() {
            return Err(Error::invalid_arg(format!(
                "texts[{i}] has no tokens to embed"
            )));
        }
        if v.len() > limit {
            if !p.truncate {
                return Err(Error::new(
                    ErrorKind::ContextFull,
                    format!(
                        "texts[{i}] has {} tokens; this context embeds at most {limit} (create it with a larger n_ctx, or ask for truncation)",
                        v.len()
                    ),
                ));
            }
            let last = *v.last().expect("non-empty");
            v.truncate(limit);
            if adds_sep {
                v[limit - 1] = last;
            }
        }
        toks.push(v);
    }

    let what = format!("{}: embedding failed", model.source());
    let mut out = Embeddings {
        dim,
        vectors: Vec::with_capacity(texts.len() * dim),
        n_tokens: toks.iter().map(|v| v.len() as u32).collect(),
    };
    let mut l = sh.llama.lock();
    let mut start = 0;
    while start < toks.len() {
        // As many whole texts as fit one batch and the sequence slots.
        let mut end = start;
        let mut total = 0;
        while end < toks.len()
            && end - start < sh.n_seq_max as usize
            && total + toks[end].len() <= limit
        {
            total += toks[end].len();
            end += 1;
        }
        let group = &toks[start..end];
        // SAFETY: valid memory; nothing else is cached in an embedding context.
        unsafe { sys::llama_memory_clear(l.mem(), true) };
        let items = group.iter().enumerate().flat_map(|(s, v)| {
            v.iter()
                .enumerate()
                .map(move |(k, &t)| (t, k as i32, s as i32, true))
        });
        let rc = l.run_batch(&what, items, sh.n_batch as usize, encoder_only)?;
        if rc != 0 {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("{what}: llama.cpp returned {rc}"),
            ));
        }
        for s in 0..group.len() {
            // SAFETY: valid context; the pointer (if any) holds `dim` floats until
            // the next decode, and is copied at once.
            let v = unsafe {
                let ptr = sys::llama_get_embeddings_seq(l.ptr.as_ptr(), s as i32);
                if ptr.is_null() {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        format!("{what}: no vector for text {}", start + s),
                    ));
                }
                std::slice::from_raw_parts(ptr, dim)
            };
            let at = out.vectors.len();
            out.vectors.extend_from_slice(v);
            if p.normalize && pooling != Pooling::Rank {
                normalize(&mut out.vectors[at..]);
            }
        }
        start = end;
    }
    // SAFETY: valid memory.
    unsafe { sys::llama_memory_clear(l.mem(), true) };
    Ok(out)
}

fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
    }
}
