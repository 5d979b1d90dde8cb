//! Declarations of `shim.cpp`: the llama.cpp calls that can throw, each behind a
//! try/catch that turns a C++ exception into a status and its message. Everything
//! in the engine that may throw goes through [`guard`].

use super::sys;
use crate::error::{Error, ErrorKind, Result};
use std::ffi::{c_char, c_int, CStr};

extern "C" {
    pub(crate) fn tas_model_load(
        path: *const c_char,
        params: sys::llama_model_params,
        out: *mut *mut sys::llama_model,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_init_from_model(
        model: *mut sys::llama_model,
        params: sys::llama_context_params,
        out: *mut *mut sys::llama_context,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tas_tokenize(
        vocab: *const sys::llama_vocab,
        text: *const c_char,
        text_len: i32,
        tokens: *mut sys::llama_token,
        n_tokens_max: i32,
        add_special: bool,
        parse_special: bool,
        ret: *mut i32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tas_token_to_piece(
        vocab: *const sys::llama_vocab,
        token: sys::llama_token,
        buf: *mut c_char,
        length: i32,
        lstrip: i32,
        special: bool,
        ret: *mut i32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tas_detokenize(
        vocab: *const sys::llama_vocab,
        tokens: *const sys::llama_token,
        n_tokens: i32,
        text: *mut c_char,
        text_len_max: i32,
        remove_special: bool,
        unparse_special: bool,
        ret: *mut i32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tas_chat_apply_template(
        tmpl: *const c_char,
        chat: *const sys::llama_chat_message,
        n_msg: usize,
        add_ass: bool,
        buf: *mut c_char,
        length: i32,
        ret: *mut i32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_decode(
        ctx: *mut sys::llama_context,
        batch: sys::llama_batch,
        ret: *mut i32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_encode(
        ctx: *mut sys::llama_context,
        batch: sys::llama_batch,
        ret: *mut i32,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_sampler_sample(
        smpl: *mut sys::llama_sampler,
        ctx: *mut sys::llama_context,
        idx: i32,
        out: *mut sys::llama_token,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_sampler_init_grammar(
        vocab: *const sys::llama_vocab,
        grammar: *const c_char,
        root: *const c_char,
        out: *mut *mut sys::llama_sampler,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_memory_seq_rm(
        mem: sys::llama_memory_t,
        seq: sys::llama_seq_id,
        p0: sys::llama_pos,
        p1: sys::llama_pos,
        ret: *mut bool,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_memory_seq_cp(
        mem: sys::llama_memory_t,
        src: sys::llama_seq_id,
        dst: sys::llama_seq_id,
        p0: sys::llama_pos,
        p1: sys::llama_pos,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_memory_seq_add(
        mem: sys::llama_memory_t,
        seq: sys::llama_seq_id,
        p0: sys::llama_pos,
        p1: sys::llama_pos,
        delta: sys::llama_pos,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    /// `dst` NULL: `*ret` = the size the state needs.
    pub(crate) fn tas_state_seq_get_data(
        ctx: *mut sys::llama_context,
        seq: sys::llama_seq_id,
        dst: *mut u8,
        size: usize,
        ret: *mut usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    pub(crate) fn tas_state_seq_set_data(
        ctx: *mut sys::llama_context,
        seq: sys::llama_seq_id,
        src: *const u8,
        size: usize,
        ret: *mut usize,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn tas_debug_throw(what: c_int, err: *mut c_char, err_len: usize) -> c_int;
}

/// Room for an exception's text.
const ERR_LEN: usize = 1024;

/// Run one shim call. `call` receives the message buffer and its capacity and
/// returns the shim's status. A caught exception becomes an error of `kind`
/// (`OutOfMemory` for `std::bad_alloc`) whose message is `what`, the text and
/// whatever llama.cpp logged during the call.
pub(crate) fn guard(
    kind: ErrorKind,
    // Any Display: the decode path names itself with format_args!, so the
    // per-token call allocates nothing unless it fails.
    what: impl std::fmt::Display,
    call: impl FnOnce(*mut c_char, usize) -> c_int,
) -> Result<()> {
    let mut err = [0 as c_char; ERR_LEN];
    crate::log::clear_backend_errors();
    let rc = call(err.as_mut_ptr(), ERR_LEN);
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim always NUL-terminates `err` (it was zeroed, too).
    let text = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy();
    let kind = if rc == 2 {
        ErrorKind::OutOfMemory
    } else {
        kind
    };
    let logged = crate::log::take_backend_errors()
        .map(|l| format!("; llama.cpp logged: {l}"))
        .unwrap_or_default();
    Err(Error::new(
        kind,
        format!("{what}: llama.cpp threw a C++ exception: {text}{logged}"),
    ))
}

/// A llama.cpp call that failed without throwing: `what`, then every error line it
/// logged (or `fallback`). `OutOfMemory` when llama.cpp says an allocation failed
/// (it reports that only in its log), else `kind`.
pub(crate) fn backend_failure(kind: ErrorKind, what: &str, fallback: &str) -> Error {
    let why = crate::log::take_backend_errors().unwrap_or_else(|| fallback.to_owned());
    let oom = ["failed to allocate", "unable to allocate"]
        .iter()
        .any(|p| why.contains(p));
    Error::new(
        if oom { ErrorKind::OutOfMemory } else { kind },
        format!("{what}: {why}"),
    )
}

/// Throw inside the shim and return what [`guard`] makes of it (tests only):
/// `what` 2 throws `std::bad_alloc`, anything else `std::out_of_range`.
#[doc(hidden)]
pub fn debug_throw(what: i32) -> Result<()> {
    // SAFETY: the buffer is ERR_LEN bytes, as passed.
    guard(ErrorKind::BadModel, "debug", |e, n| unsafe {
        tas_debug_throw(what, e, n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_become_statuses() {
        let e = debug_throw(1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadModel);
        assert!(e.message().contains("tas_debug_throw"), "{}", e.message());
        assert_eq!(debug_throw(2).unwrap_err().kind(), ErrorKind::OutOfMemory);
    }
}
