//! One error type for the whole crate. Each [`ErrorKind`] maps to exactly one C
//! `ta_status` code at the FFI boundary; the message carries the context (which file,
//! which argument, what was expected) that `ta_last_error()` hands to C callers.

use std::fmt;

/// What kind of failure happened. The discriminants are the C status codes and are
/// never renumbered: new kinds are appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ErrorKind {
    /// A required pointer argument was NULL.
    NullArg = 1,
    /// An argument was out of range, malformed, or not valid UTF-8.
    InvalidArg = 2,
    /// A file-system operation failed (the message names the path).
    Io = 3,
    /// A file, repo, key or token that was asked for does not exist.
    NotFound = 4,
    /// A model file is not a valid GGUF, or llama.cpp refused it.
    BadModel = 5,
    /// A network operation failed (connection, protocol, HTTP 5xx after retries).
    Network = 6,
    /// Downloaded bytes did not hash to the expected sha256.
    Checksum = 7,
    /// The caller (callback or `_cancel`) stopped the work.
    Cancelled = 8,
    /// The prompt or generation does not fit the context window.
    ContextFull = 9,
    /// The handle is in use by another thread, or a lock is held by another process.
    Busy = 10,
    /// The operation is not available on this platform or build.
    Unsupported = 11,
    /// An allocation failed.
    OutOfMemory = 12,
    /// A Rust panic was caught at the boundary (a bug in this library).
    Panic = 13,
    /// A caller-supplied buffer is too small; the required size was reported.
    BufferTooSmall = 14,
    /// Authentication is needed or was refused (HTTP 401/403: gated or private repo).
    Unauthorized = 15,
    /// The operation needs the network but offline mode is on.
    Offline = 16,
    /// llama.cpp reported a failure that has no more specific kind.
    Backend = 17,
}

impl ErrorKind {
    /// Every kind, in code order (used by tests and by `ta_status_str`).
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::NullArg,
        ErrorKind::InvalidArg,
        ErrorKind::Io,
        ErrorKind::NotFound,
        ErrorKind::BadModel,
        ErrorKind::Network,
        ErrorKind::Checksum,
        ErrorKind::Cancelled,
        ErrorKind::ContextFull,
        ErrorKind::Busy,
        ErrorKind::Unsupported,
        ErrorKind::OutOfMemory,
        ErrorKind::Panic,
        ErrorKind::BufferTooSmall,
        ErrorKind::Unauthorized,
        ErrorKind::Offline,
        ErrorKind::Backend,
    ];

    /// The numeric status code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The status's name as the C constants spell it without `TA_ERR_`
    /// (`"BAD_MODEL"`): the `code` of the native host's error messages.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::NullArg => "NULL_ARG",
            ErrorKind::InvalidArg => "INVALID_ARG",
            ErrorKind::Io => "IO",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::BadModel => "BAD_MODEL",
            ErrorKind::Network => "NETWORK",
            ErrorKind::Checksum => "CHECKSUM",
            ErrorKind::Cancelled => "CANCELLED",
            ErrorKind::ContextFull => "CONTEXT_FULL",
            ErrorKind::Busy => "BUSY",
            ErrorKind::Unsupported => "UNSUPPORTED",
            ErrorKind::OutOfMemory => "OUT_OF_MEMORY",
            ErrorKind::Panic => "PANIC",
            ErrorKind::BufferTooSmall => "BUFFER_TOO_SMALL",
            ErrorKind::Unauthorized => "UNAUTHORIZED",
            ErrorKind::Offline => "OFFLINE",
            ErrorKind::Backend => "BACKEND",
        }
    }

    /// Static description of the kind, as `ta_status_str` returns it.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::NullArg => "a required pointer argument was NULL",
            ErrorKind::InvalidArg => "invalid argument",
            ErrorKind::Io => "I/O error",
            ErrorKind::NotFound => "not found",
            ErrorKind::BadModel => "bad model file",
            ErrorKind::Network => "network error",
            ErrorKind::Checksum => "checksum mismatch",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ContextFull => "context window is full",
            ErrorKind::Busy => "busy: in use by another caller",
            ErrorKind::Unsupported => "not supported by this model, platform or build",
            ErrorKind::OutOfMemory => "out of memory",
            ErrorKind::Panic => "internal panic caught at the library boundary",
            ErrorKind::BufferTooSmall => "buffer too small",
            ErrorKind::Unauthorized => "unauthorized: a token is needed or was refused",
            ErrorKind::Offline => "offline mode forbids network access",
            ErrorKind::Backend => "inference backend error",
        }
    }
}

/// The crate's error: a kind plus a human-readable message with context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn null_arg(name: &str) -> Self {
        Error::new(
            ErrorKind::NullArg,
            format!("argument `{name}` must not be NULL"),
        )
    }

    pub fn invalid_arg(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArg, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn bad_model(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::BadModel, message)
    }

    pub fn cancelled(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Cancelled, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    pub fn backend(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Backend, message)
    }

    /// An I/O error with the path and the action that failed, e.g.
    /// `Error::io("open", path, err)` → "open /x/y: No such file or directory".
    /// A missing file maps to `NotFound`, a full disk or quota to `Io` with that text.
    pub fn io(action: &str, path: impl AsRef<std::path::Path>, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::OutOfMemory => ErrorKind::OutOfMemory,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{action} {}: {err}", path.as_ref().display()))
    }

    /// Prefix the message with more context, keeping the kind.
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.message = format!("{prefix}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_stable() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.code(), i as i32 + 1, "{k:?}");
            assert!(!k.describe().is_empty());
        }
    }

    #[test]
    fn io_error_names_path_and_maps_kind() {
        let e = Error::io(
            "open",
            "/nope/x.gguf",
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("/nope/x.gguf"), "{}", e.message());
        let e = Error::io(
            "write",
            "/d/f",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.message().contains("/d/f"));
    }

    #[test]
    fn context_keeps_kind() {
        let e = Error::bad_model("bad magic").context("model.gguf");
        assert_eq!(e.kind(), ErrorKind::BadModel);
        assert_eq!(e.message(), "model.gguf: bad magic");
    }
}
