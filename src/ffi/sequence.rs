//! `ta_sequence`: one conversation in a context, drivable from its own thread.

use super::context::{
    gen_params, stream_on, ta_context, ta_gen_params, ta_gen_result, ta_text_callback, try_lock,
};
use super::model::{messages_arg, ta_chat_message};
use super::*;
use crate::engine::{AbortHandle, Sequence};
use parking_lot::Mutex;

/// A sequence: one conversation in a context, with its own KV cells, token history,
/// sampler and result, opaque. Create with `ta_sequence_new`, free with
/// `ta_sequence_free`. Different sequences of one context may be used from
/// different threads at the same time — their decodes share batches; one sequence
/// serves one call at a time (a concurrent call gets `TA_ERR_BUSY`).
/// `ta_sequence_cancel` and `ta_sequence_id` are safe from any thread at any time.
/// A sequence keeps its context's KV cache (and model) alive: free the context and
/// its sequences in any order.
pub struct ta_sequence {
    inner: Mutex<Sequence>,
    abort: AbortHandle,
    id: i32,
}

const BUSY: &str =
    "the sequence is in use by another thread (a ta_sequence serves one call at a time)";

fn lock(s: &ta_sequence) -> Result<parking_lot::MutexGuard<'_, Sequence>> {
    try_lock(&s.inner, BUSY)
}

/// Claim a free sequence of `ctx`. `*out_seq` receives an owned sequence (free with
/// `ta_sequence_free`). `TA_ERR_BUSY` when all `n_seq_max` sequences are taken
/// (the context's own calls take one on first use). Safe from any thread.
///
/// # Safety
/// `ctx` must be a live context; `out_seq` writable.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_new(
    ctx: *const ta_context,
    out_seq: *mut *mut ta_sequence,
) -> ta_status {
    boundary("ta_sequence_new", || {
        let c = arg(ctx, "ctx")?;
        let o = out(out_seq, "out_seq")?;
        // Only reads the context's shared core: never waits for a running call.
        let seq = c.sequences.new_sequence()?;
        *o = Box::into_raw(Box::new(ta_sequence {
            abort: seq.abort_handle(),
            id: seq.id(),
            inner: Mutex::new(seq),
        }));
        Ok(())
    })
}

/// Free a sequence: its KV cells are released for other sequences. NULL is a
/// no-op. Must not race with a call on the same sequence; other sequences of the
/// context may keep running.
///
/// # Safety
/// `seq` must come from `ta_sequence_new` and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_free(seq: *mut ta_sequence) {
    boundary_value("ta_sequence_free", (), || {
        if !seq.is_null() {
            // SAFETY: allocated by Box::into_raw in ta_sequence_new.
            drop(unsafe { Box::from_raw(seq) });
        }
        Ok(())
    })
}

/// `ta_context_generate` on this sequence.
///
/// # Safety
/// As for `ta_context_generate`.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_generate(
    seq: *mut ta_sequence,
    prompt: *const c_char,
    params: *const ta_gen_params,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_result: *mut ta_gen_result,
) -> ta_status {
    boundary("ta_sequence_generate", || {
        let s = arg(seq as *const ta_sequence, "seq")?;
        let prompt = str_arg(prompt, "prompt")?;
        let gp = gen_params(params)?;
        let mut g = lock(s)?;
        stream_on(&mut *g, &gp, callback, user_data, out_result, |q, p, cb| {
            q.generate(prompt, p, cb)
        })
    })
}

/// `ta_context_chat` on this sequence. A sequence that starts with the same tokens
/// as another one of the context (a common system prompt) copies those KV cells
/// instead of evaluating them again; `n_reused_tokens` counts them.
///
/// # Safety
/// As for `ta_context_chat`.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_chat(
    seq: *mut ta_sequence,
    messages: *const ta_chat_message,
    n_messages: usize,
    params: *const ta_gen_params,
    callback: ta_text_callback,
    user_data: *mut c_void,
    out_result: *mut ta_gen_result,
) -> ta_status {
    boundary("ta_sequence_chat", || {
        let s = arg(seq as *const ta_sequence, "seq")?;
        let msgs = messages_arg(messages, n_messages)?;
        let gp = gen_params(params)?;
        let mut g = lock(s)?;
        stream_on(&mut *g, &gp, callback, user_data, out_result, |q, p, cb| {
            q.chat(&msgs, p, cb)
        })
    })
}

/// Stop the call running on `seq` (from any thread): it returns
/// `TA_ERR_CANCELLED` at the end of the current batch step; other sequences go on.
/// A no-op when nothing is running. NULL is a no-op.
///
/// # Safety
/// `seq` must be NULL or a live sequence.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_cancel(seq: *const ta_sequence) {
    boundary_value("ta_sequence_cancel", (), || {
        // SAFETY: NULL or a live sequence.
        if let Some(s) = unsafe { seq.as_ref() } {
            s.abort.cancel();
        }
        Ok(())
    })
}

/// Forget the sequence's KV cells: its next call evaluates its whole prompt.
///
/// # Safety
/// `seq` must be a live sequence.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_reset(seq: *mut ta_sequence) -> ta_status {
    boundary("ta_sequence_reset", || {
        let s = arg(seq as *const ta_sequence, "seq")?;
        lock(s)?.reset();
        Ok(())
    })
}

/// The sequence's id in its context, 0..n_seq_max (-1 if `seq` is NULL).
///
/// # Safety
/// `seq` must be NULL or a live sequence.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_id(seq: *const ta_sequence) -> i32 {
    boundary_value("ta_sequence_id", -1, || Ok(arg(seq, "seq")?.id))
}

/// The number of tokens the sequence holds in the KV cache. `TA_ERR_BUSY` while a
/// call runs on it.
///
/// # Safety
/// `seq` must be a live sequence; `out_n` writable.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_n_cached(
    seq: *const ta_sequence,
    out_n: *mut usize,
) -> ta_status {
    boundary("ta_sequence_n_cached", || {
        let s = arg(seq, "seq")?;
        let o = out(out_n, "out_n")?;
        *o = lock(s)?.cached_tokens().len();
        Ok(())
    })
}

/// Save the sequence's tokens and KV cells to `path` (UTF-8, NUL-terminated),
/// written whole through a temporary file beside it. The file names the model by a
/// fingerprint of its GGUF (size, metadata, samples of the weights), not its path.
/// `*out_n_tokens` (may be NULL) receives the number of tokens saved.
///
/// # Safety
/// `seq` must be a live sequence; `path` NUL-terminated; `out_n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_state_save(
    seq: *const ta_sequence,
    path: *const c_char,
    out_n_tokens: *mut usize,
) -> ta_status {
    boundary("ta_sequence_state_save", || {
        let s = arg(seq, "seq")?;
        let p = path_arg(path, "path")?;
        let n = lock(s)?.save_state(p)?;
        write_opt(out_n_tokens, n);
        Ok(())
    })
}

/// Load a file written by `ta_sequence_state_save` (or `ta_context_state_save`)
/// into this sequence, in this or another process, replacing what it held; the next
/// call whose prompt starts with the restored tokens evaluates only what is new.
/// A file from another model, a truncated or altered file (`TA_ERR_INVALID_ARG`)
/// or one that does not fit the sequence's window (`TA_ERR_CONTEXT_FULL`) is
/// refused, and the sequence is left empty. `*out_n_tokens` (may be NULL) receives
/// the number of tokens restored.
///
/// # Safety
/// `seq` must be a live sequence; `path` NUL-terminated; `out_n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn ta_sequence_state_load(
    seq: *mut ta_sequence,
    path: *const c_char,
    out_n_tokens: *mut usize,
) -> ta_status {
    boundary("ta_sequence_state_load", || {
        let s = arg(seq as *const ta_sequence, "seq")?;
        let p = path_arg(path, "path")?;
        let n = lock(s)?.load_state(p)?;
        write_opt(out_n_tokens, n);
        Ok(())
    })
}
