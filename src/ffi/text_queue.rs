//! `ta_text_queue`: generated text handed from the generating thread to a consumer
//! on another thread, without calling back into the consumer's runtime per token.

use super::*;
use crate::engine::text_queue::{Popped, TextQueue};
use std::time::Duration;

/// A queue of generated text, opaque. Create with `ta_text_queue_new`, free with
/// `ta_text_queue_free`. Pass `ta_text_queue_push` as a generation's text callback
/// with the queue as its `user_data`; the generating thread then only copies each
/// piece into the queue, and any other thread takes the text with
/// `ta_text_queue_pop`. Made for bindings whose own callbacks are costly to enter
/// on a foreign thread (a language runtime's lock, an event loop): the decode
/// never waits for them. All functions are safe from any thread at any time,
/// except `ta_text_queue_free`.
pub struct ta_text_queue {
    q: TextQueue,
}

/// Create an empty queue. `*out_queue` receives an owned queue (free with
/// `ta_text_queue_free`); on failure it is unmodified.
///
/// # Safety
/// `out_queue` must be writable.
#[no_mangle]
pub unsafe extern "C" fn ta_text_queue_new(out_queue: *mut *mut ta_text_queue) -> ta_status {
    boundary("ta_text_queue_new", || {
        let o = out(out_queue, "out_queue")?;
        *o = Box::into_raw(Box::new(ta_text_queue {
            q: TextQueue::new(),
        }));
        Ok(())
    })
}

/// A `ta_text_callback`: appends `len` bytes at `text` (one piece) to the queue
/// `user_data` and wakes a waiting `ta_text_queue_pop`. Returns false — which
/// stops the generation (`TA_ERR_CANCELLED`) — once the queue was stopped or
/// ended, and for a NULL queue or text. Never waits for the consumer.
///
/// # Safety
/// `user_data` must be a live `ta_text_queue`; `text` readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn ta_text_queue_push(
    user_data: *mut c_void,
    text: *const c_char,
    len: usize,
) -> bool {
    boundary_value("ta_text_queue_push", false, || {
        let q = arg(user_data as *const ta_text_queue, "user_data")?;
        if len == 0 {
            return Ok(q.q.push(&[]));
        }
        if text.is_null() {
            return Err(Error::null_arg("text"));
        }
        // SAFETY: the caller hands `len` readable bytes (the text callback contract).
        let piece = unsafe { std::slice::from_raw_parts(text as *const u8, len) };
        Ok(q.q.push(piece))
    })
}

/// Take the queued text: as many whole pieces as fit `cap` bytes are copied to
/// `buf` (not NUL-terminated; whole UTF-8 characters, as the library produced
/// them) and their length written to `*out_len`. With nothing queued it waits up
/// to `timeout_ms` milliseconds (negative: until text comes or the queue ends).
/// `*out_ended` is set true (and `*out_len` 0) once the queue was ended and all
/// its text taken; a timeout gives `TA_OK` with `*out_len` 0 and `*out_ended`
/// false. `TA_ERR_BUFFER_TOO_SMALL` when the next piece is longer than `cap`:
/// `*out_len` then holds the size it needs, and nothing is taken.
///
/// # Safety
/// `queue` must be live; `buf` writable for `cap` bytes; `out_len` and `out_ended`
/// writable.
#[no_mangle]
pub unsafe extern "C" fn ta_text_queue_pop(
    queue: *const ta_text_queue,
    buf: *mut c_char,
    cap: usize,
    timeout_ms: i32,
    out_len: *mut usize,
    out_ended: *mut bool,
) -> ta_status {
    boundary("ta_text_queue_pop", || {
        let q = arg(queue, "queue")?;
        let len = out(out_len, "out_len")?;
        let ended = out(out_ended, "out_ended")?;
        if buf.is_null() && cap > 0 {
            return Err(Error::null_arg("buf"));
        }
        let mut empty = [0u8; 0];
        let dst: &mut [u8] = if cap == 0 {
            &mut empty
        } else {
            // SAFETY: `buf` is writable for `cap` bytes (documented contract).
            unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, cap) }
        };
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        *len = 0;
        *ended = false;
        match q.q.pop(dst, timeout) {
            Popped::Text(n) => *len = n,
            Popped::Empty => {}
            Popped::Ended => *ended = true,
            Popped::TooSmall(need) => {
                *len = need;
                return Err(Error::new(
                    ErrorKind::BufferTooSmall,
                    format!("the next piece needs room for {need} bytes, the buffer holds {cap}"),
                ));
            }
        }
        Ok(())
    })
}

/// The producer's end: no more text comes (call it when the generation call has
/// returned). A waiting `ta_text_queue_pop` wakes; once the rest is taken it
/// reports the end. Later pushes return false. NULL is a no-op.
///
/// # Safety
/// `queue` must be live or NULL.
#[no_mangle]
pub unsafe extern "C" fn ta_text_queue_end(queue: *const ta_text_queue) {
    boundary_value("ta_text_queue_end", (), || {
        // SAFETY: live or NULL (documented).
        if let Some(q) = unsafe { queue.as_ref() } {
            q.q.end();
        }
        Ok(())
    })
}

/// The consumer's stop: later pushes return false, so a generation feeding the
/// queue stops at its next piece (the prompt phase does not push: cancel the
/// context or sequence as well to stop that). Text already queued can still be
/// taken. NULL is a no-op.
///
/// # Safety
/// `queue` must be live or NULL.
#[no_mangle]
pub unsafe extern "C" fn ta_text_queue_stop(queue: *const ta_text_queue) {
    boundary_value("ta_text_queue_stop", (), || {
        // SAFETY: live or NULL (documented).
        if let Some(q) = unsafe { queue.as_ref() } {
            q.q.stop();
        }
        Ok(())
    })
}

/// Free a queue and any text left in it. NULL is a no-op. Only once no call can
/// push to it any more (the generation that uses it has returned) and no thread
/// waits in `ta_text_queue_pop`.
///
/// # Safety
/// `queue` must come from `ta_text_queue_new` and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn ta_text_queue_free(queue: *mut ta_text_queue) {
    boundary_value("ta_text_queue_free", (), || {
        if !queue.is_null() {
            // SAFETY: allocated by Box::into_raw in ta_text_queue_new.
            drop(unsafe { Box::from_raw(queue) });
        }
        Ok(())
    })
}
