//! The sampler chain for one generation call, built from [`GenParams`].

use super::context::GenParams;
use super::model::Model;
use super::sys;
use crate::error::{Error, ErrorKind, Result};
use std::ffi::CString;
use std::ptr::NonNull;

/// An owned llama.cpp sampler chain.
pub(crate) struct Sampler {
    ptr: NonNull<sys::llama_sampler>,
}

// SAFETY: a sampler chain has no thread affinity; it is used by one thread at a time
// (created by the caller, then owned by the batch thread).
unsafe impl Send for Sampler {}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain owns the samplers added to it; freed once here.
        unsafe { sys::llama_sampler_free(self.ptr.as_ptr()) }
    }
}

impl Sampler {
    /// Chain order follows llama.cpp's own tools: grammar constrains first, penalties
    /// reshape logits, truncation samplers cut the tail, then temperature and a
    /// seeded draw (or greedy when temperature is 0).
    pub(crate) fn new(model: &Model, p: &GenParams, seed: u32) -> Result<Sampler> {
        // SAFETY: default params by value; chain_init returns an owned chain.
        let chain = unsafe {
            let mut cp = sys::llama_sampler_chain_default_params();
            cp.no_perf = true;
            sys::llama_sampler_chain_init(cp)
        };
        let chain = NonNull::new(chain)
            .ok_or_else(|| Error::backend("could not create a sampler chain"))?;
        let s = Sampler { ptr: chain };
        let add = |x: *mut sys::llama_sampler| -> Result<()> {
            if x.is_null() {
                return Err(Error::backend("could not create a sampler"));
            }
            // SAFETY: chain takes ownership of the non-NULL sampler.
            unsafe { sys::llama_sampler_chain_add(s.ptr.as_ptr(), x) };
            Ok(())
        };
        if let Some(g) = p.grammar.as_deref().filter(|g| !g.trim().is_empty()) {
            // llama.cpp's parser reports syntax errors with fprintf(stderr): check the
            // grammar here first so callers get the message and stderr stays quiet.
            super::gbnf::check(g).map_err(|e| Error::invalid_arg(format!("grammar: {e}")))?;
            let gs =
                CString::new(g).map_err(|_| Error::invalid_arg("grammar contains a NUL byte"))?;
            crate::log::clear_backend_errors();
            let mut gp = std::ptr::null_mut();
            // SAFETY: strings are NUL-terminated and copied by llama.cpp.
            super::shim::guard(ErrorKind::InvalidArg, "grammar", |e, el| unsafe {
                super::shim::tas_sampler_init_grammar(
                    model.vocab(),
                    gs.as_ptr(),
                    c"root".as_ptr(),
                    &mut gp,
                    e,
                    el,
                )
            })?;
            if gp.is_null() {
                let why = crate::log::take_backend_errors().unwrap_or_default();
                return Err(Error::invalid_arg(format!(
                    "grammar does not parse as GBNF with a `root` rule{}{}",
                    if why.is_empty() { "" } else { ": " },
                    why
                )));
            }
            add(gp)?;
        }
        let penalties =
            p.repeat_penalty != 1.0 || p.frequency_penalty != 0.0 || p.presence_penalty != 0.0;
        if penalties && p.penalty_last_n != 0 {
            // SAFETY: plain constructor.
            add(unsafe {
                sys::llama_sampler_init_penalties(
                    model.info().n_vocab,
                    p.penalty_last_n,
                    p.repeat_penalty,
                    p.frequency_penalty,
                    p.presence_penalty,
                )
            })?;
        }
        if p.temperature <= 0.0 {
            // SAFETY: plain constructor.
            add(unsafe { sys::llama_sampler_init_greedy() })?;
            return Ok(s);
        }
        // SAFETY (all below): plain constructors with validated values.
        if p.top_k > 0 {
            add(unsafe { sys::llama_sampler_init_top_k(p.top_k) })?;
        }
        if p.top_p < 1.0 {
            add(unsafe { sys::llama_sampler_init_top_p(p.top_p, 1) })?;
        }
        if p.min_p > 0.0 {
            add(unsafe { sys::llama_sampler_init_min_p(p.min_p, 1) })?;
        }
        add(unsafe { sys::llama_sampler_init_temp(p.temperature) })?;
        add(unsafe { sys::llama_sampler_init_dist(seed) })?;
        Ok(s)
    }

    pub(crate) fn raw(&self) -> *mut sys::llama_sampler {
        self.ptr.as_ptr()
    }
}
