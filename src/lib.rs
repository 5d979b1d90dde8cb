//! tabagent: local LLM inference on GGUF models behind a C ABI.
//!
//! The safe Rust API lives in [`engine`] (models, contexts, generation),
//! [`gguf`] (a bounds-checked GGUF reader), [`log`] and [`error`]; `ffi` only
//! translates it to the C interface declared in `include/tabagent.h`.

pub mod cache;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod gguf;
pub mod hardware;
pub mod host;
pub mod log;

pub use error::{Error, ErrorKind, Result};

/// Library version, kept equal to the crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const VERSION_MAJOR: u32 = 0;
pub const VERSION_MINOR: u32 = 1;
pub const VERSION_PATCH: u32 = 0;
/// Bumped whenever a struct layout or function signature in the C header changes.
pub const ABI_VERSION: u32 = 5;
