//! Embeddings on a `ta_context` created with `embeddings`: `ta_context_embed`.

use super::context::{ta_context, try_lock};
use super::*;
use crate::engine::embed::{EmbedParams, NOT_FOR_EMBEDDINGS};

/// Pooling types for `ta_context_params.pooling` (llama.cpp's values).
pub const TA_POOLING_MODEL: i32 = -1;
pub const TA_POOLING_NONE: i32 = 0;
pub const TA_POOLING_MEAN: i32 = 1;
pub const TA_POOLING_CLS: i32 = 2;
pub const TA_POOLING_LAST: i32 = 3;
pub const TA_POOLING_RANK: i32 = 4;

/// Options of one `ta_context_embed` call. Get defaults from
/// `ta_embed_default_params()`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ta_embed_params {
    /// Scale each vector to unit length (default true); not applied to rank scores.
    pub normalize: bool,
    /// A text longer than the context: false (default) fails the call with
    /// `TA_ERR_CONTEXT_FULL` naming it; true keeps its first tokens.
    pub truncate: bool,
}

// Only returned if building the defaults panicked (the boundary needs a value).
const FALLBACK_EMBED_PARAMS: ta_embed_params = ta_embed_params {
    normalize: true,
    truncate: false,
};

/// Default embedding options.
#[no_mangle]
pub extern "C" fn ta_embed_default_params() -> ta_embed_params {
    boundary_value("ta_embed_default_params", FALLBACK_EMBED_PARAMS, || {
        let d = EmbedParams::default();
        Ok(ta_embed_params {
            normalize: d.normalize,
            truncate: d.truncate,
        })
    })
}

/// Length of each vector `ta_context_embed` writes (`n_embd`, or the number of
/// scores with `TA_POOLING_RANK`). `TA_ERR_INVALID_ARG` when the context was not
/// created with `embeddings`.
///
/// # Safety
/// `ctx` must be a live context or NULL.
#[no_mangle]
pub unsafe extern "C" fn ta_context_embed_dim(
    ctx: *const ta_context,
    out_dim: *mut usize,
) -> ta_status {
    boundary("ta_context_embed_dim", || {
        let c = arg(ctx, "ctx")?;
        let o = out(out_dim, "out_dim")?;
        let dim = try_lock(&c.inner, "the context is busy with another call")?.embed_dim();
        if dim == 0 {
            return Err(Error::invalid_arg(NOT_FOR_EMBEDDINGS));
        }
        *o = dim;
        Ok(())
    })
}

/// The pooling an embedding context uses, the model's default resolved (a
/// `TA_POOLING_*` value).
///
/// # Safety
/// `ctx` must be a live context or NULL.
#[no_mangle]
pub unsafe extern "C" fn ta_context_pooling(
    ctx: *const ta_context,
    out_pooling: *mut i32,
) -> ta_status {
    boundary("ta_context_pooling", || {
        let c = arg(ctx, "ctx")?;
        let o = out(out_pooling, "out_pooling")?;
        let p = try_lock(&c.inner, "the context is busy with another call")?
            .pooling()
            .ok_or_else(|| Error::invalid_arg(NOT_FOR_EMBEDDINGS))?;
        *o = p.code();
        Ok(())
    })
}

/// Embed `n_texts` NUL-terminated UTF-8 texts: one vector of `ta_context_embed_dim`
/// floats per text, text `i`'s at `out + i * dim`, in the caller's buffer `out` of
/// `out_cap` floats. `*out_len` always receives the floats needed (`n_texts * dim`);
/// `TA_ERR_BUFFER_TOO_SMALL` before any work when they do not fit. Texts are
/// batched into few decodes. `params` NULL = defaults. A text with no tokens is
/// `TA_ERR_INVALID_ARG`; one longer than the context `TA_ERR_CONTEXT_FULL` unless
/// `params->truncate`. One call at a time per context (`TA_ERR_BUSY`).
///
/// # Safety
/// `texts` must hold `n_texts` valid strings; `out` must have `out_cap` writable
/// floats (NULL when `out_cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn ta_context_embed(
    ctx: *mut ta_context,
    texts: *const *const c_char,
    n_texts: usize,
    params: *const ta_embed_params,
    out_vectors: *mut f32,
    out_cap: usize,
    out_len: *mut usize,
) -> ta_status {
    boundary("ta_context_embed", || {
        let c = arg(ctx, "ctx")?;
        let texts = str_array_arg(texts, n_texts, "texts")?;
        let len = out(out_len, "out_len")?;
        // SAFETY: NULL = defaults, else valid for the call.
        let p = match unsafe { params.as_ref() } {
            Some(p) => EmbedParams {
                normalize: p.normalize,
                truncate: p.truncate,
            },
            None => EmbedParams::default(),
        };
        let guard = try_lock(&c.inner, "the context is busy with another call")?;
        let dim = guard.embed_dim();
        if dim == 0 {
            return Err(Error::invalid_arg(NOT_FOR_EMBEDDINGS));
        }
        let need = n_texts
            .checked_mul(dim)
            .ok_or_else(|| Error::invalid_arg("n_texts is too large"))?;
        *len = need;
        if out_cap < need {
            return Err(Error::new(
                crate::error::ErrorKind::BufferTooSmall,
                format!("the output needs {need} floats ({n_texts} texts x {dim}); out_cap is {out_cap}"),
            ));
        }
        if need == 0 {
            return Ok(());
        }
        if out_vectors.is_null() {
            return Err(Error::null_arg("out_vectors"));
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let e = guard.embed(&refs, &p)?;
        // SAFETY: out_vectors has out_cap >= need writable floats (documented).
        let dst = unsafe { std::slice::from_raw_parts_mut(out_vectors, need) };
        dst.copy_from_slice(&e.vectors);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::embed::Pooling;

    #[test]
    fn pooling_constants_are_the_engine_codes() {
        for (c, p) in [
            (TA_POOLING_MODEL, Pooling::Model),
            (TA_POOLING_NONE, Pooling::None),
            (TA_POOLING_MEAN, Pooling::Mean),
            (TA_POOLING_CLS, Pooling::Cls),
            (TA_POOLING_LAST, Pooling::Last),
            (TA_POOLING_RANK, Pooling::Rank),
        ] {
            assert_eq!(Pooling::from_code(c), Some(p));
            assert_eq!(p.code(), c);
        }
        assert_eq!(Pooling::from_code(5), None);
    }
}
