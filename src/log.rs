//! Log routing. llama.cpp and ggml log through one global callback; the library
//! installs its own trampoline before the backend starts so nothing ever reaches
//! stderr/stdout unless the caller registers a sink with a minimum level.

use parking_lot::RwLock;
use std::cell::RefCell;
use std::sync::atomic::{AtomicI32, Ordering};

/// Log severity, numerically ordered so `level >= min` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum LogLevel {
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
}

impl LogLevel {
    pub fn from_i32(v: i32) -> Option<LogLevel> {
        match v {
            1 => Some(LogLevel::Debug),
            2 => Some(LogLevel::Info),
            3 => Some(LogLevel::Warn),
            4 => Some(LogLevel::Error),
            _ => None,
        }
    }
}

/// A log receiver. Called from whichever thread logs; must not block for long.
pub type LogSink = Box<dyn Fn(LogLevel, &str) + Send + Sync>;

struct Logger {
    sink: LogSink,
    min: LogLevel,
}

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);
/// Minimum level as an atomic so the common "no sink" case costs one load.
static MIN_LEVEL: AtomicI32 = AtomicI32::new(i32::MAX);

thread_local! {
    /// The last error-level line logged on this thread (llama.cpp explains load
    /// failures only through its log); read back into error messages.
    static LAST_BACKEND_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
    /// ggml sends continuation fragments with level CONT: they inherit the level of
    /// the line they continue.
    static LAST_LEVEL: std::cell::Cell<LogLevel> = const { std::cell::Cell::new(LogLevel::Info) };
}

/// Install (or with `None`, remove) the sink.
pub fn set_sink(sink: Option<LogSink>, min: LogLevel) {
    let mut g = LOGGER.write();
    match sink {
        Some(sink) => {
            *g = Some(Logger { sink, min });
            MIN_LEVEL.store(min as i32, Ordering::Release);
        }
        None => {
            *g = None;
            MIN_LEVEL.store(i32::MAX, Ordering::Release);
        }
    }
}

/// Log a message from the library itself.
pub fn log(level: LogLevel, msg: &str) {
    if (level as i32) < MIN_LEVEL.load(Ordering::Acquire) {
        return;
    }
    if let Some(l) = LOGGER.read().as_ref() {
        if level >= l.min {
            // A panicking sink must not take the library down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (l.sink)(level, msg)));
        }
    }
}

/// Start recording backend error lines on this thread (cleared first).
pub fn clear_backend_error() {
    LAST_BACKEND_ERROR.with(|e| *e.borrow_mut() = None);
}

/// The last backend error line seen on this thread since `clear_backend_error`.
pub fn take_backend_error() -> Option<String> {
    LAST_BACKEND_ERROR.with(|e| e.borrow_mut().take())
}

pub(crate) fn record_backend_line(level_raw: u32, text: &str) {
    use llama_cpp_sys_2 as sys;
    let level = match level_raw {
        sys::GGML_LOG_LEVEL_DEBUG => LogLevel::Debug,
        sys::GGML_LOG_LEVEL_INFO => LogLevel::Info,
        sys::GGML_LOG_LEVEL_WARN => LogLevel::Warn,
        sys::GGML_LOG_LEVEL_ERROR => LogLevel::Error,
        sys::GGML_LOG_LEVEL_CONT => LAST_LEVEL.with(|l| l.get()),
        _ => LogLevel::Info,
    };
    LAST_LEVEL.with(|l| l.set(level));
    if level == LogLevel::Error {
        let line = text.trim();
        if !line.is_empty() {
            LAST_BACKEND_ERROR.with(|e| *e.borrow_mut() = Some(line.to_owned()));
        }
    }
    log(level, text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn sink_filters_by_level_and_can_be_removed() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = got.clone();
        set_sink(
            Some(Box::new(move |lvl, m| {
                g2.lock().unwrap().push((lvl, m.to_string()))
            })),
            LogLevel::Warn,
        );
        log(LogLevel::Info, "quiet");
        log(LogLevel::Error, "loud");
        set_sink(None, LogLevel::Debug);
        log(LogLevel::Error, "after removal");
        let got = got.lock().unwrap();
        assert_eq!(got.as_slice(), &[(LogLevel::Error, "loud".to_string())]);
    }
}
