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
    /// The error-level lines logged on this thread since the capture began, in
    /// order (llama.cpp explains a refusal only through its log, often over several
    /// lines: the specific reason, then "failed to load model"); read back into
    /// error messages.
    static BACKEND_ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// A backend line still being assembled: its level and text so far.
    static PARTIAL: RefCell<(LogLevel, String)> = const { RefCell::new((LogLevel::Info, String::new())) };
    /// Whether the last error line was captured (fragments follow their line).
    static LAST_KEPT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
/// Every message reaches the sink as one whole line ending in exactly one "\n",
/// whether it is the library's own or llama.cpp's.
pub fn log(level: LogLevel, msg: &str) {
    if (level as i32) < MIN_LEVEL.load(Ordering::Acquire) {
        return;
    }
    let body = msg.trim_end_matches(['\n', '\r']);
    if body.is_empty() {
        return;
    }
    let line = format!("{body}\n");
    if let Some(l) = LOGGER.read().as_ref() {
        if level >= l.min {
            // A panicking sink must not take the library down with it.
            let _ =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (l.sink)(level, &line)));
        }
    }
}

/// Bytes a partial backend line may grow to before it is sent anyway.
const MAX_PARTIAL: usize = 4096;

/// llama.cpp sends some lines in pieces (its load progress is one "." per step,
/// then "\n"): assemble them so the sink gets whole lines, at the level of the
/// line's first piece.
fn assemble_backend_text(level: LogLevel, text: &str, continuation: bool) {
    let ready = PARTIAL.with(|p| {
        let mut p = p.borrow_mut();
        let mut out = Vec::new();
        // A new (non-continuation) message ends whatever was pending.
        if !continuation && !p.1.is_empty() {
            out.push((p.0, std::mem::take(&mut p.1)));
        }
        if p.1.is_empty() {
            p.0 = level;
        }
        p.1.push_str(text);
        while let Some(i) = p.1.find('\n') {
            let rest = p.1.split_off(i + 1);
            out.push((p.0, std::mem::replace(&mut p.1, rest)));
        }
        if p.1.len() > MAX_PARTIAL {
            out.push((p.0, std::mem::take(&mut p.1)));
        }
        out
    });
    for (lvl, line) in ready {
        log(lvl, &line);
    }
}

/// Lines kept per capture, and characters per line: enough for any explanation
/// llama.cpp gives, bounded against a flood.
const MAX_CAPTURED_LINES: usize = 16;
const MAX_CAPTURED_LINE: usize = 512;

/// Start capturing backend error lines on this thread (earlier ones are dropped).
pub fn clear_backend_errors() {
    BACKEND_ERRORS.with(|e| e.borrow_mut().clear());
}

/// Every backend error line seen on this thread since `clear_backend_errors`, in
/// order and joined with "; " (None when there were none). Clears the capture.
pub fn take_backend_errors() -> Option<String> {
    let lines = BACKEND_ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    if lines.is_empty() {
        None
    } else {
        Some(lines.join("; "))
    }
}

fn capture_error_line(text: &str, continuation: bool) {
    let line = text.trim();
    if line.is_empty() {
        return;
    }
    BACKEND_ERRORS.with(|e| {
        let mut lines = e.borrow_mut();
        // ggml sends one line in fragments (level CONT): glue them back together,
        // but only onto a line that was kept (not one dropped by the cap).
        if continuation {
            if LAST_KEPT.with(|k| k.get()) {
                if let Some(last) = lines.last_mut() {
                    last.push(' ');
                    last.push_str(line);
                    truncate_at_char(last, MAX_CAPTURED_LINE);
                }
            }
            return;
        }
        let keep =
            lines.len() < MAX_CAPTURED_LINES && lines.last().map(String::as_str) != Some(line);
        if keep {
            let mut l = line.to_owned();
            truncate_at_char(&mut l, MAX_CAPTURED_LINE);
            lines.push(l);
        }
        LAST_KEPT.with(|k| k.set(keep));
    });
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
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
    let continuation = level_raw == sys::GGML_LOG_LEVEL_CONT;
    if level == LogLevel::Error {
        capture_error_line(text, continuation);
    }
    assemble_backend_text(level, text, continuation);
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
        assert_eq!(got.as_slice(), &[(LogLevel::Error, "loud\n".to_string())]);
    }

    #[test]
    fn the_sink_gets_whole_lines() {
        use llama_cpp_sys_2 as sys;
        let got = Arc::new(Mutex::new(Vec::new()));
        let g2 = got.clone();
        // Only this thread's lines: other tests may log meanwhile.
        let me = std::thread::current().id();
        set_sink(
            Some(Box::new(move |lvl, m| {
                if std::thread::current().id() == me {
                    g2.lock().unwrap().push((lvl, m.to_string()))
                }
            })),
            LogLevel::Debug,
        );
        log(LogLevel::Info, "own line");
        record_backend_line(sys::GGML_LOG_LEVEL_INFO, "load_tensors: done\n");
        for _ in 0..70 {
            record_backend_line(sys::GGML_LOG_LEVEL_CONT, ".");
        }
        record_backend_line(sys::GGML_LOG_LEVEL_CONT, "\n");
        record_backend_line(sys::GGML_LOG_LEVEL_WARN, "two\nlines\n");
        set_sink(None, LogLevel::Debug);
        let got = got.lock().unwrap();
        let want: Vec<(LogLevel, String)> = vec![
            (LogLevel::Info, "own line\n".into()),
            (LogLevel::Info, "load_tensors: done\n".into()),
            (LogLevel::Info, format!("{}\n", ".".repeat(70))),
            (LogLevel::Warn, "two\n".into()),
            (LogLevel::Warn, "lines\n".into()),
        ];
        assert_eq!(*got, want);
    }

    #[test]
    fn every_error_line_of_a_call_is_kept_in_order() {
        use llama_cpp_sys_2 as sys;
        clear_backend_errors();
        record_backend_line(sys::GGML_LOG_LEVEL_INFO, "loading\n");
        record_backend_line(
            sys::GGML_LOG_LEVEL_ERROR,
            "error loading model: missing tensor 'x'\n",
        );
        record_backend_line(sys::GGML_LOG_LEVEL_ERROR, "a line in");
        record_backend_line(sys::GGML_LOG_LEVEL_CONT, "two parts\n");
        record_backend_line(sys::GGML_LOG_LEVEL_WARN, "a warning\n");
        record_backend_line(sys::GGML_LOG_LEVEL_ERROR, "failed to load model\n");
        assert_eq!(
            take_backend_errors().as_deref(),
            Some("error loading model: missing tensor 'x'; a line in two parts; failed to load model")
        );
        assert_eq!(take_backend_errors(), None);
        for i in 0..100 {
            record_backend_line(sys::GGML_LOG_LEVEL_ERROR, &format!("flood {i}"));
        }
        assert_eq!(
            take_backend_errors().unwrap().matches("flood").count(),
            MAX_CAPTURED_LINES
        );
    }
}
