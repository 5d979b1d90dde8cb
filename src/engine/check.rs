//! The out-of-process model check. llama.cpp has hundreds of asserts and more
//! architectures than the Rust validator can model, so a caller about to load an
//! untrusted file can first have a child process (the `tabagent-probe` executable
//! shipped beside the library) do the real load and a one-token decode, under a
//! time and memory limit. If the child dies, the host learns why and stays up.

use super::context::{Context, ContextParams, GenParams};
use super::model::{Model, ModelParams};
use crate::error::{Error, ErrorKind, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The probe executable's file name.
pub const PROBE_NAME: &str = if cfg!(windows) {
    "tabagent-probe.exe"
} else {
    "tabagent-probe"
};

/// Context size the probe decodes with: small, so the check costs little memory.
const PROBE_N_CTX: u32 = 256;

/// Limits of one check. Zeros pick the defaults documented on each field.
#[derive(Debug, Clone, Default)]
pub struct CheckLimits {
    /// Wall-clock limit; 0 = 60 s plus 10 s per GiB of model file (a cold read of a
    /// large file from a slow disk is not a hang).
    pub timeout_ms: u64,
    /// Address-space limit of the child; 0 = 3 GiB plus twice the file size.
    pub memory_bytes: u64,
    /// The probe executable; None = `TABAGENT_PROBE`, then beside the library.
    pub probe: Option<PathBuf>,
}

/// What a passed check measured.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Wall-clock time of the child, spawn to exit.
    pub elapsed_ms: f64,
    /// The child's peak resident memory.
    pub peak_rss_bytes: u64,
}

/// Check `path` out of process: the Rust validator here, then the real load and a
/// one-token decode in a child with limits. `Ok` means the child loaded the file
/// and decoded; a child that failed, crashed or hung gives `BadModel` (or the
/// child's own status, e.g. `OutOfMemory` when the limit stopped it) naming the
/// file and the reason.
pub fn check_model(path: &Path, params: &ModelParams, limits: &CheckLimits) -> Result<CheckReport> {
    let info = crate::gguf::open_checked(path, params.vocab_only)?;
    check_validated(
        path,
        &path.display().to_string(),
        info.file_size,
        params,
        limits,
    )
}

/// The child half of [`check_model`], for a file the caller has already validated.
/// `shown` names the file in messages.
pub(crate) fn check_validated(
    path: &Path,
    shown: &str,
    file_size: u64,
    params: &ModelParams,
    limits: &CheckLimits,
) -> Result<CheckReport> {
    let probe = find_probe(limits.probe.as_deref())?;
    let gib = 1u64 << 30;
    let timeout = Duration::from_millis(if limits.timeout_ms > 0 {
        limits.timeout_ms
    } else {
        60_000 + 10_000 * file_size.div_ceil(gib)
    });
    let memory = if limits.memory_bytes > 0 {
        limits.memory_bytes
    } else {
        3 * gib + file_size.saturating_mul(2)
    };
    let run = run_probe(&probe, path, params, timeout, memory)?;
    let named = |msg: &str| {
        if msg.contains(shown) {
            msg.to_owned()
        } else {
            format!("{shown}: {msg}")
        }
    };
    let why = tail(&run.stderr);
    match run.end {
        ProbeEnd::TimedOut => Err(Error::bad_model(format!(
            "{shown}: the model check did not finish within {:.0} s (the load or the first decode hangs){why}",
            timeout.as_secs_f64()
        ))),
        ProbeEnd::Signal(sig) => Err(Error::bad_model(format!(
            "{shown}: loading it killed the check process with {}{}{why}",
            signal_name(sig),
            if sig == libc::SIGKILL {
                format!(" (the check's memory limit is {} MiB)", memory >> 20)
            } else {
                String::new()
            }
        ))),
        ProbeEnd::Exited(code) => match parse_verdict(&run.stdout) {
            Some(Ok(())) if code == Some(0) || code.is_none() => Ok(CheckReport {
                elapsed_ms: run.elapsed_ms,
                peak_rss_bytes: run.peak_rss_bytes,
            }),
            Some(Err(e)) => Err(Error::new(e.kind(), named(e.message()))),
            _ => Err(Error::bad_model(format!(
                "{shown}: the model check process ended abnormally (exit {}) without a verdict{why}",
                code.map_or_else(|| "status unknown".to_owned(), |c| c.to_string())
            ))),
        },
    }
}

/// Where the probe is: `explicit`, else `TABAGENT_PROBE`, else beside the file this
/// library was loaded from (the shared library, or the executable it is linked
/// into) or one folder up (Cargo puts test executables in `deps/`). Only absolute
/// folders are searched, so a relative library path never makes this run a
/// `tabagent-probe` from the current directory or `PATH`.
pub fn find_probe(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("TABAGENT_PROBE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    if let Some(lib) = this_library_path() {
        dirs.extend(lib.parent().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.parent().map(Path::to_path_buf));
    }
    let ups: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| d.parent().map(Path::to_path_buf))
        .collect();
    dirs.extend(ups);
    dirs.retain(|d| d.is_absolute());
    dirs.iter()
        .map(|d| d.join(PROBE_NAME))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::not_found(format!(
                "the model check needs the {PROBE_NAME} executable, which was not found beside the library ({}); set TABAGENT_PROBE to its path",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

#[cfg(unix)]
fn this_library_path() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: Dl_info is plain data; zeroed is a valid initial value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr reads the address of a function in this library and fills
    // `info`; dli_fname is a NUL-terminated path owned by the loader.
    let ok = unsafe { libc::dladdr(find_probe as *const libc::c_void, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: non-NULL NUL-terminated string, copied at once.
    let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let p = PathBuf::from(std::ffi::OsStr::from_bytes(name.to_bytes()));
    // dli_fname may be relative (as the library was opened): resolve it now.
    p.canonicalize().ok()
}

#[cfg(not(unix))]
fn this_library_path() -> Option<PathBuf> {
    None
}

/// How a probe run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeEnd {
    /// Exited by itself; the code is None when another part of the host reaped it
    /// first (SIGCHLD ignored, or a `waitpid(-1)` elsewhere).
    Exited(Option<i32>),
    /// Killed by this signal (not by the timeout).
    Signal(i32),
    /// Killed for running past the timeout.
    TimedOut,
}

/// One run of the probe: how it ended, what it printed (at most 1 MiB of each
/// stream), its time and peak memory.
#[derive(Debug, Clone)]
pub struct ProbeRun {
    pub end: ProbeEnd,
    pub stdout: String,
    pub stderr: String,
    pub elapsed_ms: f64,
    pub peak_rss_bytes: u64,
}

/// Run the probe on `path` with a wall-clock `timeout` and an address-space limit
/// of `memory` bytes (the probe applies it to itself before doing anything else).
#[cfg(unix)]
pub fn run_probe(
    probe: &Path,
    path: &Path,
    params: &ModelParams,
    timeout: Duration,
    memory: u64,
) -> Result<ProbeRun> {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(probe);
    cmd.arg(path)
        .args(["--memory-limit", &memory.to_string()])
        .args(["--gpu-layers", &params.n_gpu_layers.to_string()])
        .args(params.vocab_only.then_some("--vocab-only"))
        .args((!params.use_mmap).then_some("--no-mmap"))
        // ggml would otherwise try to attach a debugger to print a backtrace, and
        // glibc's per-thread malloc arenas would reserve address space the limit
        // counts.
        .env("GGML_NO_BACKTRACE", "1")
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("spawn", probe, e).context("the model check"))?;
    let pid = child.id() as libc::pid_t;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    let mut reaped = true;
    let mut nap = Duration::from_micros(500);
    loop {
        // SAFETY: waiting for our own child; status and usage are valid out-params.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // Someone else reaped it: the verdict on stdout still tells.
                Some(libc::ECHILD) => {
                    reaped = false;
                    break;
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::io("wait4", probe, e).context("the model check"));
                }
            }
        }
        let waited = t0.elapsed();
        if waited > timeout && !timed_out {
            timed_out = true;
            // SAFETY: the child has not been reaped, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // A child stuck in uninterruptible I/O (a dead network mount) may not die
        // at once; do not wait for it forever.
        if timed_out && waited > timeout + Duration::from_secs(10) {
            reaped = false;
            break;
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(10));
    }
    let elapsed_ms = t0.elapsed().as_secs_f64() * 1000.0;
    // A child that exited (reaped here or elsewhere) has closed its pipes, so the
    // readers finish; one still stuck after the kill may hold them open forever.
    let (stdout, stderr) = if timed_out && !reaped {
        (String::new(), String::new())
    } else {
        (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    };
    let end = if timed_out {
        ProbeEnd::TimedOut
    } else if !reaped {
        ProbeEnd::Exited(None)
    } else if libc::WIFSIGNALED(status) {
        ProbeEnd::Signal(libc::WTERMSIG(status))
    } else {
        ProbeEnd::Exited(Some(libc::WEXITSTATUS(status)))
    };
    // ru_maxrss is KiB on Linux and the BSDs, bytes on macOS.
    let rss_unit = if cfg!(target_os = "macos") { 1 } else { 1024 };
    Ok(ProbeRun {
        end,
        stdout,
        stderr,
        elapsed_ms,
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * rss_unit,
    })
}

#[cfg(not(unix))]
pub fn run_probe(
    _probe: &Path,
    _path: &Path,
    _params: &ModelParams,
    _timeout: Duration,
    _memory: u64,
) -> Result<ProbeRun> {
    Err(Error::unsupported(
        "the out-of-process model check is implemented for Unix systems",
    ))
}

fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut r) = r {
            // Bounded: a child that floods its pipe cannot exhaust the host's memory,
            // and draining the rest keeps it from blocking on a full pipe.
            let _ = r.by_ref().take(1 << 20).read_to_end(&mut s);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

/// The child's last few log lines, as "; it said: …" (empty when silent).
fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(4);
    let mut s = lines[start..].join(" | ");
    if s.len() > 1500 {
        let mut cut = 1500;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    format!("; it said: {s}")
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGABRT => "SIGABRT (an assertion in llama.cpp or ggml)",
        libc::SIGSEGV => "SIGSEGV (an invalid memory access)",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE (an arithmetic fault)",
        libc::SIGILL => "SIGILL",
        libc::SIGKILL => "SIGKILL",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// The probe's one line of JSON: `{"ok":true}` or `{"ok":false,"code":N,"message":…}`.
pub fn parse_verdict(stdout: &str) -> Option<Result<()>> {
    let line = stdout.lines().rev().find(|l| l.starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("ok")?.as_bool()? {
        return Some(Ok(()));
    }
    let code = v.get("code")?.as_i64()?;
    let kind = ErrorKind::ALL
        .into_iter()
        .find(|k| i64::from(k.code()) == code)
        .unwrap_or(ErrorKind::BadModel);
    let msg = v.get("message")?.as_str()?.to_owned();
    Some(Err(Error::new(kind, msg)))
}

/// What the probe does in its own process: load the model as `Model::load` does
/// (validator, then llama.cpp), create a small context and decode one token. The
/// corpus tests run it in a child too, to prove the in-process path survives.
pub fn probe(path: &Path, params: &ModelParams) -> Result<()> {
    let model = Arc::new(Model::load(path, params)?);
    let tokens = model.tokenize("Hello, world!\n", true, true)?;
    model.detokenize(&tokens, false, false)?;
    if params.vocab_only {
        return Ok(());
    }
    let cp = ContextParams {
        n_ctx: PROBE_N_CTX,
        n_batch: PROBE_N_CTX,
        n_ubatch: PROBE_N_CTX,
        ..Default::default()
    };
    let mut ctx = Context::new(model, &cp)?;
    let gp = GenParams {
        temperature: 0.0,
        max_tokens: 1,
        ..Default::default()
    };
    ctx.generate("Hello", &gp, &mut |_| true)?;
    Ok(())
}

/// The probe executable's `main`:
/// `tabagent-probe PATH [--vocab-only] [--no-mmap] [--gpu-layers N] [--memory-limit BYTES]`.
/// Prints one JSON verdict line on stdout and the library's warnings and errors
/// on stderr; exits 0 whenever it could give a verdict.
pub fn probe_main(args: &[String]) -> i32 {
    let usage = || {
        eprintln!(
            "usage: {PROBE_NAME} MODEL.gguf [--vocab-only] [--no-mmap] [--gpu-layers N] [--memory-limit BYTES]"
        );
        2
    };
    let mut params = ModelParams {
        n_gpu_layers: 0,
        ..Default::default()
    };
    let mut path = None;
    let mut memory = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--vocab-only" => params.vocab_only = true,
            "--no-mmap" => params.use_mmap = false,
            "--gpu-layers" => match it.next().and_then(|v| v.parse().ok()) {
                Some(n) => params.n_gpu_layers = n,
                None => return usage(),
            },
            "--memory-limit" => match it.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(n) => memory = Some(n),
                None => return usage(),
            },
            _ if path.is_none() && !a.starts_with("--") => path = Some(PathBuf::from(a)),
            _ => return usage(),
        }
    }
    let Some(path) = path else {
        return usage();
    };
    if let Err(e) = limit_self(memory) {
        eprintln!("{PROBE_NAME}: could not set its limits: {e}");
        return 3;
    }
    crate::log::set_sink(
        Some(Box::new(|_, msg| eprintln!("{}", msg.trim_end()))),
        crate::log::LogLevel::Warn,
    );
    let verdict = match probe(&path, &params) {
        Ok(()) => serde_json::json!({"ok": true}),
        Err(e) => serde_json::json!({
            "ok": false,
            "code": e.kind().code(),
            "message": e.message(),
        }),
    };
    println!("{verdict}");
    0
}

/// The probe limits itself (rather than the parent between fork and exec, which
/// would rule out posix_spawn): address space, and no core file when it crashes.
#[cfg(unix)]
fn limit_self(memory: Option<u64>) -> std::io::Result<()> {
    let set = |res, v: u64| {
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid out-parameter.
        unsafe { libc::getrlimit(res, &mut cur) };
        // An unprivileged process cannot raise its hard limit: stay under it.
        let v = (v as libc::rlim_t).min(cur.rlim_max);
        let r = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: a valid rlimit for this process.
        if unsafe { libc::setrlimit(res, &r) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_CORE, 0)?;
    if let Some(m) = memory {
        set(libc::RLIMIT_AS, m)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn limit_self(_memory: Option<u64>) -> std::io::Result<()> {
    Ok(())
}
