//! `ta_host`: the native-messaging dispatcher (`crate::host`) for hosts written in
//! other languages: post request JSON, receive every message through a callback.

use super::*;
use crate::host::{Host, HostConfig};

/// Receives each message the host sends: `len` bytes of UTF-8 JSON (not
/// NUL-terminated, under 1 MiB), borrowed for the call. Called from the thread of
/// `ta_host_post` (quick actions) and from the host's worker threads, never two at
/// once; it must not call `ta_host_post` or `ta_host_free` (post from another thread).
pub type ta_host_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, json: *const c_char, len: usize)>;

/// A native-messaging dispatcher, opaque. Free with `ta_host_free`.
pub struct ta_host {
    inner: Host,
}

struct SendPtr(*mut c_void);
// SAFETY: the caller documents `user_data` as usable from the host's threads.
unsafe impl Send for SendPtr {}
// SAFETY: as above; the callback is never called twice at once.
unsafe impl Sync for SendPtr {}

/// Create a host. `config_json` NULL = defaults, else a JSON object: `cache_dir`,
/// `endpoint`, `offline`, `model_dirs` (folders LOAD_MODEL may read besides the
/// cache), `max_request_bytes`, `max_running`, `max_models`, `n_ctx`, `n_seq_max`,
/// `n_threads`. `callback` gets every message (see `ta_host_callback`);
/// `user_data` is passed to it and must stay valid until `ta_host_free` returns.
///
/// # Safety
/// `config_json` NULL or a NUL-terminated string; `out_host` writable.
#[no_mangle]
pub unsafe extern "C" fn ta_host_new(
    config_json: *const c_char,
    callback: ta_host_callback,
    user_data: *mut c_void,
    out_host: *mut *mut ta_host,
) -> ta_status {
    boundary("ta_host_new", || {
        let o = out(out_host, "out_host")?;
        let cb = callback.ok_or_else(|| Error::null_arg("callback"))?;
        let cfg = match opt_str_arg(config_json, "config_json")? {
            Some(t) => HostConfig::from_json(t)?,
            None => HostConfig::default(),
        };
        let ud = SendPtr(user_data);
        let sink = Box::new(move |msg: &str| {
            let ud = &ud;
            // SAFETY: the caller's callback with its user data; msg lives for the call.
            unsafe { cb(ud.0, msg.as_ptr() as *const c_char, msg.len()) };
        });
        *o = Box::into_raw(Box::new(ta_host {
            inner: Host::new(cfg, sink),
        }));
        Ok(())
    })
}

/// Post one request (`len` bytes of JSON, no NUL needed). Every problem with the
/// request itself is reported as an `error` message through the callback; the
/// status is `TA_OK` unless `host` or `json` is NULL.
///
/// # Safety
/// `host` from `ta_host_new`; `json` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn ta_host_post(
    host: *mut ta_host,
    json: *const c_char,
    len: usize,
) -> ta_status {
    boundary("ta_host_post", || {
        let h = arg(host, "host")?;
        if json.is_null() {
            return Err(Error::null_arg("json"));
        }
        let bytes = slice_arg(json as *const u8, len, "json")?;
        h.inner.post(bytes);
        Ok(())
    })
}

/// Cancel every running request, wait for each to send its final message, and
/// free the host. NULL is a no-op.
///
/// # Safety
/// `host` from `ta_host_new`, not freed twice, not called from the callback.
#[no_mangle]
pub unsafe extern "C" fn ta_host_free(host: *mut ta_host) {
    boundary_value("ta_host_free", (), || {
        if !host.is_null() {
            // SAFETY: allocated by Box::into_raw in ta_host_new.
            drop(unsafe { Box::from_raw(host) });
        }
        Ok(())
    })
}
