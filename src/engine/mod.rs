//! Safe layer over llama.cpp. All `unsafe` calls into `llama-cpp-sys-2` live in this
//! module tree; everything it exposes is ordinary safe Rust.

pub mod backends;
pub mod batch;
pub mod check;
pub mod context;
pub mod embed;
pub mod gbnf;
pub mod model;
pub mod sampler;
pub mod sequence;
pub mod shim;
pub mod state;
pub mod template;
pub mod text;
pub mod text_queue;

use llama_cpp_sys_2 as sys;
use once_cell::sync::Lazy;
use std::ffi::{c_char, c_void, CStr};

pub use batch::AbortHandle;
pub use context::{
    physical_cores, Context, ContextParams, FlashAttn, GenParams, GenResult, Sequences, StopReason,
    MAX_SEQ, SEED_DEFAULT,
};
pub use model::{ChatMessage, ChatOptions, Model, ModelInfo, ModelParams};
pub use sequence::Sequence;

static BACKEND: Lazy<()> = Lazy::new(|| {
    // SAFETY: the trampolines are 'static functions that never unwind; installing
    // the log hook before backend init keeps even init messages off stderr.
    unsafe {
        sys::llama_log_set(Some(log_trampoline), std::ptr::null_mut());
        sys::ggml_set_abort_callback(Some(abort_trampoline));
    }
    // The portable build has no CPU backend until one of its variants is loaded.
    backends::load();
    // SAFETY: plain init call, once.
    unsafe {
        sys::llama_backend_init();
    }
});

/// Initialise llama.cpp once per process (idempotent, thread-safe).
pub fn init() {
    Lazy::force(&BACKEND);
}

unsafe extern "C" fn log_trampoline(
    level: sys::ggml_log_level,
    text: *const c_char,
    _ud: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: ggml passes a NUL-terminated string valid for this call.
        let s = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        crate::log::record_backend_line(level, &s);
    });
}

unsafe extern "C" fn abort_trampoline(msg: *const c_char) {
    // ggml is about to abort(): the best we can do is make the reason visible.
    let _ = std::panic::catch_unwind(|| {
        let s = if msg.is_null() {
            "ggml abort".into()
        } else {
            // SAFETY: NUL-terminated message from ggml.
            unsafe { CStr::from_ptr(msg) }.to_string_lossy()
        };
        crate::log::log(crate::log::LogLevel::Error, &s);
    });
}

/// llama.cpp's version string and build info.
pub fn llama_version() -> String {
    init();
    // SAFETY: returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::llama_version()) }
        .to_string_lossy()
        .into_owned()
}

/// llama.cpp's system info: which CPU features this build of ggml uses.
pub fn system_info() -> String {
    init();
    // SAFETY: returns a pointer to a static buffer; copied out immediately.
    unsafe { CStr::from_ptr(sys::llama_print_system_info()) }
        .to_string_lossy()
        .into_owned()
}

pub fn supports_gpu_offload() -> bool {
    init();
    // SAFETY: pure query.
    unsafe { sys::llama_supports_gpu_offload() }
}
