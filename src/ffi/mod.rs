//! The C boundary and nothing else: pointer checks, panic catching, status codes,
//! the thread-local last-error text, and strings handed to C. Every exported
//! function runs its body through [`boundary`] or [`boundary_value`] (a test scans
//! the sources to prove it).
#![allow(non_camel_case_types)]

pub mod cache;
pub mod context;
pub mod embed;
pub mod hardware;
pub mod host;
pub mod model;
pub mod sequence;
pub mod text_queue;

use crate::error::{Error, ErrorKind, Result};
use once_cell::sync::Lazy;
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Status code returned by every fallible function: `TA_OK` (0) or a `TA_ERR_*` code.
pub type ta_status = i32;

/// Success.
pub const TA_OK: ta_status = 0;
/// A required pointer argument was NULL.
pub const TA_ERR_NULL_ARG: ta_status = 1;
/// An argument was out of range, malformed, or not valid UTF-8.
pub const TA_ERR_INVALID_ARG: ta_status = 2;
/// A file-system operation failed; the last error names the path.
pub const TA_ERR_IO: ta_status = 3;
/// A file, key or token that was asked for does not exist.
pub const TA_ERR_NOT_FOUND: ta_status = 4;
/// The file is not a valid GGUF model, or llama.cpp refused it.
pub const TA_ERR_BAD_MODEL: ta_status = 5;
/// A network operation failed.
pub const TA_ERR_NETWORK: ta_status = 6;
/// Downloaded bytes did not match the expected sha256.
pub const TA_ERR_CHECKSUM: ta_status = 7;
/// A callback returned false, or `ta_context_cancel` was called.
pub const TA_ERR_CANCELLED: ta_status = 8;
/// The prompt does not fit the context window.
pub const TA_ERR_CONTEXT_FULL: ta_status = 9;
/// The handle is in use by another thread.
pub const TA_ERR_BUSY: ta_status = 10;
/// Not available on this platform or build.
pub const TA_ERR_UNSUPPORTED: ta_status = 11;
/// An allocation failed.
pub const TA_ERR_OUT_OF_MEMORY: ta_status = 12;
/// A bug inside the library was caught at the boundary; the last error has details.
pub const TA_ERR_PANIC: ta_status = 13;
/// A caller buffer is too small; the required size was written to the size out-parameter.
pub const TA_ERR_BUFFER_TOO_SMALL: ta_status = 14;
/// Authentication is needed or was refused.
pub const TA_ERR_UNAUTHORIZED: ta_status = 15;
/// Network access is needed but offline mode is on.
pub const TA_ERR_OFFLINE: ta_status = 16;
/// llama.cpp reported a failure with no more specific code.
pub const TA_ERR_BACKEND: ta_status = 17;

/// Version of this library (also `ta_version()`).
/// (Literals so cbindgen can emit them; a test keeps them equal to Cargo.toml.)
pub const TA_VERSION_MAJOR: u32 = 0;
pub const TA_VERSION_MINOR: u32 = 1;
pub const TA_VERSION_PATCH: u32 = 0;
/// Bumped whenever a struct layout or a function signature changes.
pub const TA_ABI_VERSION: u32 = 5;

/// Log levels for `ta_set_log_callback`.
pub const TA_LOG_DEBUG: i32 = 1;
pub const TA_LOG_INFO: i32 = 2;
pub const TA_LOG_WARN: i32 = 3;
pub const TA_LOG_ERROR: i32 = 4;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// Set while a boundary body runs, so the panic hook stays silent for panics it
    /// will turn into TA_ERR_PANIC (and lets others reach the previous hook).
    static IN_BOUNDARY: Cell<u32> = const { Cell::new(0) };
    static PANIC_WHERE: RefCell<String> = const { RefCell::new(String::new()) };
}

static PANIC_HOOK: Lazy<()> = Lazy::new(|| {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if IN_BOUNDARY.with(|b| b.get()) > 0 {
            let loc = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            PANIC_WHERE.with(|w| *w.borrow_mut() = loc);
        } else {
            prev(info);
        }
    }));
});

pub(crate) fn set_last_error(func: &str, e: &Error) {
    let msg = format!("{func}: {}", e.message());
    // Interior NULs would truncate the C string; replace them.
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
    crate::log::log(
        crate::log::LogLevel::Debug,
        &format!("{func} failed: {}", e.message()),
    );
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

/// Run an exported function's body: catch panics, map errors to status codes and
/// record the message as the thread's last error.
pub(crate) fn boundary(func: &'static str, f: impl FnOnce() -> Result<()>) -> ta_status {
    match guarded(f) {
        Ok(Ok(())) => TA_OK,
        Ok(Err(e)) => {
            set_last_error(func, &e);
            e.kind().code()
        }
        Err(msg) => {
            set_last_error(func, &Error::new(ErrorKind::Panic, msg));
            TA_ERR_PANIC
        }
    }
}

/// Like [`boundary`] for functions that return a value instead of a status (getters,
/// `_free`, `cancel`): a failure or panic returns `fallback` and sets the last error.
pub(crate) fn boundary_value<T>(
    func: &'static str,
    fallback: T,
    f: impl FnOnce() -> Result<T>,
) -> T {
    match guarded(f) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_last_error(func, &e);
            fallback
        }
        Err(msg) => {
            set_last_error(func, &Error::new(ErrorKind::Panic, msg));
            fallback
        }
    }
}

fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    Lazy::force(&PANIC_HOOK);
    IN_BOUNDARY.with(|b| b.set(b.get() + 1));
    let r = catch_unwind(AssertUnwindSafe(|| {
        #[cfg(test)]
        tests::maybe_inject_panic();
        f()
    }));
    IN_BOUNDARY.with(|b| b.set(b.get() - 1));
    r.map_err(|p| {
        let loc = PANIC_WHERE.with(|w| std::mem::take(&mut *w.borrow_mut()));
        format!(
            "internal panic: {}{loc} (please report this bug)",
            panic_text(p.as_ref())
        )
    })
}

/// A required borrowed pointer argument.
pub(crate) fn arg<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: non-NULL pointers handed to the API must point to a valid T for the
    // duration of the call (documented on every function).
    unsafe { p.as_ref() }.ok_or_else(|| Error::null_arg(name))
}

/// A required out-parameter.
pub(crate) fn out<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: as for `arg`; out-pointers must be writable.
    unsafe { p.as_mut() }.ok_or_else(|| Error::null_arg(name))
}

/// A required NUL-terminated UTF-8 string argument.
pub(crate) fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Error::null_arg(name));
    }
    // SAFETY: documented as a NUL-terminated string valid for the call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        Error::invalid_arg(format!(
            "argument `{name}` is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// A required NUL-terminated UTF-8 path argument.
pub(crate) fn path_arg<'a>(p: *const c_char, name: &str) -> Result<&'a std::path::Path> {
    str_arg(p, name).map(std::path::Path::new)
}

/// Write an optional out-parameter (NULL = the caller does not want it).
pub(crate) fn write_opt<T>(p: *mut T, v: T) {
    // SAFETY: documented as NULL or writable.
    if let Some(o) = unsafe { p.as_mut() } {
        *o = v;
    }
}

/// An optional string argument (NULL = None).
pub(crate) fn opt_str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        str_arg(p, name).map(Some)
    }
}

/// A (pointer, length) UTF-8 argument; NULL is allowed only when `len` is 0.
pub(crate) fn bytes_str_arg<'a>(p: *const c_char, len: usize, name: &str) -> Result<&'a str> {
    let b = slice_arg(p as *const u8, len, name)?;
    std::str::from_utf8(b).map_err(|e| {
        Error::invalid_arg(format!(
            "argument `{name}` is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })
}

/// An array of `n` NUL-terminated UTF-8 strings; element errors name `name[i]`.
pub(crate) fn str_array_arg(p: *const *const c_char, n: usize, name: &str) -> Result<Vec<String>> {
    slice_arg(p, n, name)?
        .iter()
        .enumerate()
        .map(|(i, s)| str_arg(*s, &format!("{name}[{i}]")).map(str::to_owned))
        .collect()
}

/// A (pointer, count) array argument; NULL is allowed only when `n` is 0.
pub(crate) fn slice_arg<'a, T>(p: *const T, n: usize, name: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Error::null_arg(name));
    }
    // SAFETY: documented: `p` points to `n` valid elements for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Copy `data` into a caller buffer of `cap` elements. Always writes the required
/// length to `len_out`; `TA_ERR_BUFFER_TOO_SMALL` when it does not fit. With
/// `nul`, a terminating zero is also written and counted in the capacity.
pub(crate) fn fill_buffer<T: Copy + Default>(
    data: &[T],
    buf: *mut T,
    cap: usize,
    len_out: &mut usize,
    nul: bool,
    what: &str,
) -> Result<()> {
    let need = data.len() + usize::from(nul);
    *len_out = data.len();
    if cap < need {
        return Err(Error::new(
            ErrorKind::BufferTooSmall,
            format!(
                "{what} needs room for {need} {unit}, the buffer holds {cap}",
                unit = if std::mem::size_of::<T>() == 1 {
                    "bytes"
                } else {
                    "elements"
                }
            ),
        ));
    }
    if buf.is_null() {
        return Err(Error::null_arg("buf"));
    }
    // SAFETY: buf has `cap >= need` writable elements (documented contract).
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        if nul {
            *buf.add(data.len()) = T::default();
        }
    }
    Ok(())
}

/// Hand a Rust string to C as an owned, NUL-terminated copy (free: `ta_string_free`).
pub(crate) fn owned_cstring(s: String) -> *mut c_char {
    CString::new(s.replace('\0', "\\0"))
        .unwrap_or_default()
        .into_raw()
}

// ---------------------------------------------------------------------------------
// Library-wide functions.

/// Static text for a status code ("bad model file", …). Never NULL; unknown codes give
/// "unknown status". The string is static: do not free it.
#[no_mangle]
pub extern "C" fn ta_status_str(status: ta_status) -> *const c_char {
    boundary_value("ta_status_str", c"unknown status".as_ptr(), || {
        static TEXTS: Lazy<Vec<CString>> = Lazy::new(|| {
            ErrorKind::ALL
                .iter()
                .map(|k| CString::new(k.describe()).unwrap_or_default())
                .collect()
        });
        Ok(match status {
            TA_OK => c"ok".as_ptr(),
            s if s >= 1 && (s as usize) <= TEXTS.len() => TEXTS[s as usize - 1].as_ptr(),
            _ => c"unknown status".as_ptr(),
        })
    })
}

/// The message of the last failure on the calling thread, with context (function,
/// file, argument, what was expected). Never NULL ("" when nothing failed yet).
/// Borrowed: valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn ta_last_error() -> *const c_char {
    boundary_value("ta_last_error", c"".as_ptr(), || {
        Ok(LAST_ERROR.with(|l| l.borrow().as_ptr()))
    })
}

/// Free a string this library returned as owned (`char **` out-parameters).
/// NULL is a no-op.
///
/// # Safety
/// `s` must come from this library and not have been freed already.
#[no_mangle]
pub unsafe extern "C" fn ta_string_free(s: *mut c_char) {
    boundary_value("ta_string_free", (), || {
        if !s.is_null() {
            // SAFETY: `s` came from CString::into_raw in this library.
            drop(unsafe { CString::from_raw(s) });
        }
        Ok(())
    })
}

/// "MAJOR.MINOR.PATCH" of this library. Static; do not free.
#[no_mangle]
pub extern "C" fn ta_version() -> *const c_char {
    boundary_value("ta_version", c"".as_ptr(), || {
        static V: Lazy<CString> = Lazy::new(|| CString::new(crate::VERSION).unwrap_or_default());
        Ok(V.as_ptr())
    })
}

/// The ABI version this library was built with; compare with `TA_ABI_VERSION`.
#[no_mangle]
pub extern "C" fn ta_abi_version() -> u32 {
    boundary_value("ta_abi_version", 0, || Ok(crate::ABI_VERSION))
}

/// The bundled llama.cpp's version and build info. Static; do not free.
#[no_mangle]
pub extern "C" fn ta_llama_version() -> *const c_char {
    boundary_value("ta_llama_version", c"".as_ptr(), || {
        static V: Lazy<CString> =
            Lazy::new(|| CString::new(crate::engine::llama_version()).unwrap_or_default());
        Ok(V.as_ptr())
    })
}

/// llama.cpp's system info: the CPU features this build of ggml uses
/// ("CPU : SSE3 = 1 | AVX2 = 1 | …"). Static; do not free.
#[no_mangle]
pub extern "C" fn ta_system_info() -> *const c_char {
    boundary_value("ta_system_info", c"".as_ptr(), || {
        static V: Lazy<CString> =
            Lazy::new(|| CString::new(crate::engine::system_info()).unwrap_or_default());
        Ok(V.as_ptr())
    })
}

/// Receives log lines: each call is one whole line ending in exactly one newline,
/// from llama.cpp (its fragments, such as load-progress dots, are assembled first)
/// or from the library itself. `text` is borrowed for the call, not NUL-terminated
/// (read `len` bytes). Called from whichever thread logs,
/// possibly several at once; keep it short and do not call back into the library.
pub type ta_log_callback = Option<
    unsafe extern "C" fn(user_data: *mut c_void, level: i32, text: *const c_char, len: usize),
>;

struct SendPtr(*mut c_void);
// SAFETY: the caller promises user_data may be used from any thread (documented).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Route llama.cpp's and the library's log messages at `min_level` (`TA_LOG_*`) or
/// above to `callback`. NULL callback: back to silence (the default). The library
/// never writes to stdout or stderr itself.
#[no_mangle]
pub extern "C" fn ta_set_log_callback(
    callback: ta_log_callback,
    user_data: *mut c_void,
    min_level: i32,
) -> ta_status {
    boundary("ta_set_log_callback", || {
        let lvl = crate::log::LogLevel::from_i32(min_level).ok_or_else(|| {
            Error::invalid_arg(format!(
                "min_level must be TA_LOG_DEBUG..TA_LOG_ERROR (1..4), got {min_level}"
            ))
        })?;
        crate::engine::init();
        match callback {
            None => crate::log::set_sink(None, lvl),
            Some(cb) => {
                let ud = SendPtr(user_data);
                crate::log::set_sink(
                    Some(Box::new(move |level, text: &str| {
                        let ud = &ud;
                        // SAFETY: the caller registered cb with this user_data.
                        unsafe {
                            cb(
                                ud.0,
                                level as i32,
                                text.as_ptr() as *const c_char,
                                text.len(),
                            )
                        }
                    })),
                    lvl,
                )
            }
        }
        Ok(())
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        static INJECT: Cell<bool> = const { Cell::new(false) };
    }

    pub(crate) fn maybe_inject_panic() {
        if INJECT.with(|i| i.replace(false)) {
            panic!("injected test panic");
        }
    }

    fn last() -> String {
        // SAFETY: ta_last_error never returns NULL.
        unsafe { CStr::from_ptr(ta_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panic_becomes_status_and_message() {
        INJECT.with(|i| i.set(true));
        let st = ta_set_log_callback(None, std::ptr::null_mut(), TA_LOG_ERROR);
        assert_eq!(st, TA_ERR_PANIC);
        let m = last();
        assert!(
            m.contains("ta_set_log_callback") && m.contains("injected test panic"),
            "{m}"
        );
        // The next call works normally.
        assert_eq!(
            ta_set_log_callback(None, std::ptr::null_mut(), TA_LOG_ERROR),
            TA_OK
        );
    }

    #[test]
    fn status_constants_match_error_kinds() {
        let consts = [
            TA_ERR_NULL_ARG,
            TA_ERR_INVALID_ARG,
            TA_ERR_IO,
            TA_ERR_NOT_FOUND,
            TA_ERR_BAD_MODEL,
            TA_ERR_NETWORK,
            TA_ERR_CHECKSUM,
            TA_ERR_CANCELLED,
            TA_ERR_CONTEXT_FULL,
            TA_ERR_BUSY,
            TA_ERR_UNSUPPORTED,
            TA_ERR_OUT_OF_MEMORY,
            TA_ERR_PANIC,
            TA_ERR_BUFFER_TOO_SMALL,
            TA_ERR_UNAUTHORIZED,
            TA_ERR_OFFLINE,
            TA_ERR_BACKEND,
        ];
        for (c, k) in consts.iter().zip(ErrorKind::ALL) {
            assert_eq!(*c, k.code());
            // SAFETY: static strings.
            let s = unsafe { CStr::from_ptr(ta_status_str(*c)) }
                .to_str()
                .unwrap();
            assert_eq!(s, k.describe());
        }
        // SAFETY: static strings.
        let s = unsafe { CStr::from_ptr(ta_status_str(999)) }
            .to_str()
            .unwrap();
        assert_eq!(s, "unknown status");
    }

    #[test]
    fn version_macros_follow_cargo() {
        let v = format!("{TA_VERSION_MAJOR}.{TA_VERSION_MINOR}.{TA_VERSION_PATCH}");
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        assert_eq!(TA_ABI_VERSION, crate::ABI_VERSION);
        assert_eq!(
            (
                crate::VERSION_MAJOR,
                crate::VERSION_MINOR,
                crate::VERSION_PATCH
            ),
            (TA_VERSION_MAJOR, TA_VERSION_MINOR, TA_VERSION_PATCH)
        );
    }

    #[test]
    fn bad_log_level_is_invalid_arg() {
        assert_eq!(
            ta_set_log_callback(None, std::ptr::null_mut(), 7),
            TA_ERR_INVALID_ARG
        );
        assert!(last().contains("min_level"));
    }

    #[test]
    fn str_arg_rejects_invalid_utf8() {
        let bad = [b'a', 0xff, 0];
        let e = str_arg(bad.as_ptr() as *const c_char, "path").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArg);
        assert!(e.message().contains("`path`") && e.message().contains("offset 1"));
        assert_eq!(
            str_arg(std::ptr::null(), "x").unwrap_err().kind(),
            ErrorKind::NullArg
        );
    }

    #[test]
    fn fill_buffer_reports_required_size() {
        let mut n = 0usize;
        let mut buf = [0u8; 3];
        let e = fill_buffer(b"abc", buf.as_mut_ptr(), 3, &mut n, true, "text").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BufferTooSmall);
        assert_eq!(n, 3);
        let mut buf = [9u8; 4];
        fill_buffer(b"abc", buf.as_mut_ptr(), 4, &mut n, true, "text").unwrap();
        assert_eq!(&buf, b"abc\0");
    }

    /// Every `extern "C" fn` in src/ffi routes its body through the boundary: the
    /// first statement of each body must be a `boundary(` or `boundary_value(` call.
    #[test]
    fn every_exported_function_goes_through_the_boundary() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/ffi");
        let mut checked = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let src = std::fs::read_to_string(&path).unwrap();
            let mut rest = src.as_str();
            while let Some(i) = rest.find("extern \"C\" fn ") {
                let after = &rest[i..];
                let name: String = after["extern \"C\" fn ".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // Function types (callbacks) have no body and no name here.
                let open = after.find('{').unwrap();
                let semi = after.find(';').unwrap_or(usize::MAX);
                if !name.starts_with("ta_") || semi < open {
                    rest = &after[1..];
                    continue;
                }
                let body = after[open + 1..].trim_start();
                assert!(
                    body.starts_with("boundary(") || body.starts_with("boundary_value("),
                    "{}: {name} does not start with the boundary",
                    path.display()
                );
                // The name passed to the boundary (before its closure) is this function's.
                let head = &body[..body.find("||").unwrap_or(body.len())];
                assert!(
                    head.contains(&format!("\"{name}\"")),
                    "{name} reports a different name: {head}"
                );
                checked += 1;
                rest = &after[1..];
            }
        }
        assert!(checked >= 30, "only {checked} exported functions found");
    }
}
