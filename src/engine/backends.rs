//! Which CPU code runs inference. The portable build (feature `portable`, the
//! default) compiles llama.cpp's CPU backend once per instruction-set level
//! (ggml's CPU variants: `libggml-cpu-haswell.so`, `…-skylakex.so`, …) and picks
//! one here, at startup: every variant beside the library reports a score for this
//! CPU (0 = it uses instructions this CPU lacks), and the highest wins. Other
//! backends found there (a GPU module) are loaded too. The native build links one
//! CPU backend in and has nothing to choose.
//!
//! Where variants are looked for, first hit wins: `TABAGENT_BACKEND_DIR`; the
//! folder of the library or program that holds this code; the folder of the
//! loaded libggml (a program that linked the static archive). The build puts them
//! beside what it builds (build.rs). `TABAGENT_CPU_VARIANT=name` asks for one
//! variant by name (tests, benchmarks); a variant this CPU cannot run is refused.

// The native build has nothing to search for; the helpers stay compiled and tested.
#![cfg_attr(not(feature = "portable"), allow(dead_code))]

use std::path::{Path, PathBuf};

/// What was chosen and why; read by the hardware report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendReport {
    /// The CPU variant running inference ("haswell", "x64", …), or "built-in" for
    /// the native build, or "" when none could be loaded.
    pub cpu_variant: String,
    /// One sentence: why this variant (or why none).
    pub reason: String,
    /// The folder variants were loaded from (None for the native build).
    pub dir: Option<PathBuf>,
    /// Every CPU variant found and its score on this CPU (0 = cannot run here).
    pub candidates: Vec<(String, i32)>,
    /// Other backend modules loaded from `dir` ("cuda", "vulkan", …).
    pub other_backends: Vec<String>,
}

/// Set once, by [`load`], before llama.cpp is initialised.
static REPORT: once_cell::sync::OnceCell<BackendReport> = once_cell::sync::OnceCell::new();

/// The report of what [`load`] did (initialising llama.cpp if needed).
pub fn report() -> &'static BackendReport {
    super::init();
    REPORT.get_or_init(BackendReport::default)
}

/// Choose among variant scores: the forced name if it runs here, else the best.
/// Returns the index and the reason.
pub(crate) fn choose(
    candidates: &[(String, i32)],
    forced: Option<&str>,
) -> (Option<usize>, String) {
    let runnable = candidates.iter().filter(|c| c.1 > 0).count();
    let best = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1 > 0)
        .max_by_key(|(_, c)| c.1)
        .map(|(i, _)| i);
    let refused: Vec<&str> = candidates
        .iter()
        .filter(|c| c.1 <= 0)
        .map(|c| c.0.as_str())
        .collect();
    let lacking = if refused.is_empty() {
        String::new()
    } else {
        format!(
            "; this CPU lacks instructions that {} need{}",
            refused.join(", "),
            if refused.len() == 1 { "s" } else { "" }
        )
    };
    if let Some(name) = forced {
        match candidates.iter().position(|c| c.0 == name) {
            Some(i) if candidates[i].1 > 0 => {
                return (
                    Some(i),
                    format!("{name}: asked for by TABAGENT_CPU_VARIANT ({runnable} of {} variants run on this CPU{lacking})", candidates.len()),
                )
            }
            Some(_) => {
                let (b, why) = choose(candidates, None);
                return (b, format!("TABAGENT_CPU_VARIANT={name} was refused: this CPU cannot run it. {why}"));
            }
            None => {
                let (b, why) = choose(candidates, None);
                return (b, format!("TABAGENT_CPU_VARIANT={name} names no variant here. {why}"));
            }
        }
    }
    match best {
        Some(i) => (
            Some(i),
            format!(
                "{}: the highest-scoring of the {runnable} CPU variants (of {}) this CPU runs{lacking}",
                candidates[i].0,
                candidates.len()
            ),
        ),
        None if candidates.is_empty() => (None, String::new()),
        None => (
            None,
            format!("none of the {} CPU variants runs on this CPU", candidates.len()),
        ),
    }
}

#[cfg(not(feature = "portable"))]
pub(super) fn load() {
    let _ = REPORT.set(BackendReport {
        cpu_variant: "built-in".into(),
        reason: "the native build: one CPU backend linked in, compiled for the CPU the build named"
            .into(),
        ..BackendReport::default()
    });
}

#[cfg(feature = "portable")]
pub(super) fn load() {
    let _ = REPORT.set(imp::load());
}

/// Backend module file names: `libggml-<name>.so` (`ggml-<name>.dll` on Windows).
fn module_name(file: &str) -> Option<&str> {
    let (prefix, ext) = if cfg!(windows) {
        ("ggml-", ".dll")
    } else {
        ("libggml-", ".so")
    };
    let name = file.strip_prefix(prefix)?.strip_suffix(ext)?;
    // ggml-base is the core library, not a backend.
    (name != "base" && !name.is_empty()).then_some(name)
}

/// The folders to search, in order.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("TABAGENT_BACKEND_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = own_dir() {
        dirs.push(d);
    }
    // A program that linked the static archive: the variants sit beside libggml.
    #[cfg(all(unix, feature = "portable"))]
    if let Some(d) = dir_of(llama_cpp_sys_2::ggml_backend_load as *const libc::c_void) {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

/// The folder of the shared library (or program) this code was linked into.
fn own_dir() -> Option<PathBuf> {
    #[cfg(unix)]
    {
        dir_of(own_dir as fn() -> Option<PathBuf> as *const libc::c_void)
    }
    #[cfg(not(unix))]
    {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
    }
}

/// The folder of the loaded object (library or program) that holds `addr`.
#[cfg(unix)]
fn dir_of(addr: *const libc::c_void) -> Option<PathBuf> {
    // SAFETY: Dl_info is plain data; all-zero is a valid value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address; `info` is a valid out-parameter.
    let ok = unsafe { libc::dladdr(addr, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the loader.
    let path = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
    let path = Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
    // The main program may be reported by a relative name.
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_exe().ok()?
    };
    path.canonicalize().ok()?.parent().map(Path::to_path_buf)
}

#[cfg(unix)]
use std::os::unix::ffi::OsStrExt;

/// The backend modules in `dir`: (name, path), sorted by name.
fn modules(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            e.file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false)
        })
        .filter_map(|e| {
            let file = e.file_name().into_string().ok()?;
            module_name(&file).map(|n| (n.to_string(), e.path()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(all(feature = "portable", unix))]
mod imp {
    use super::*;
    use crate::log::{log, LogLevel};
    use llama_cpp_sys_2 as sys;
    use std::ffi::CString;

    /// Score a module the way ggml does: load it, call its `ggml_backend_score`.
    /// None when it cannot be loaded or has no score (a module for all CPUs).
    fn score(path: &Path) -> Option<i32> {
        let c = CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: dlopen of a ggml backend module: its initialisers are built to run
        // on any CPU of its architecture (ggml itself loads every variant to score
        // it); the handle is closed below.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return None;
        }
        // SAFETY: `h` is a live handle; the symbol, when present, is ggml's
        // `int ggml_backend_score(void)`.
        unsafe {
            let f = libc::dlsym(h, c"ggml_backend_score".as_ptr());
            let s = if f.is_null() {
                None
            } else {
                let f: extern "C" fn() -> i32 = std::mem::transmute(f);
                Some(f())
            };
            libc::dlclose(h);
            s
        }
    }

    fn load_module(path: &Path) -> bool {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: a NUL-terminated path; ggml registers the backend it finds there
        // (or returns NULL and logs why).
        !unsafe { sys::ggml_backend_load(c.as_ptr()) }.is_null()
    }

    pub(super) fn load() -> BackendReport {
        let dirs = search_dirs();
        let Some((dir, mods)) = dirs
            .iter()
            .map(|d| (d, modules(d)))
            .find(|(_, m)| m.iter().any(|(n, _)| n.starts_with("cpu")))
        else {
            let reason = format!(
                "no CPU backend (libggml-cpu-*.so) was found in {}; keep the variant files beside the library or set TABAGENT_BACKEND_DIR",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            log(LogLevel::Error, &reason);
            return BackendReport {
                reason,
                ..BackendReport::default()
            };
        };
        let mut candidates = Vec::new();
        let mut paths = Vec::new();
        let mut others = Vec::new();
        for (name, path) in mods {
            match name.strip_prefix("cpu-") {
                Some(v) => {
                    if let Some(s) = score(&path) {
                        candidates.push((v.to_string(), s));
                        paths.push(path);
                    }
                }
                // "cpu" alone: a single-variant module; score it as any.
                None if name == "cpu" => {
                    candidates.push(("cpu".to_string(), score(&path).unwrap_or(1).max(1)));
                    paths.push(path);
                }
                None => others.push((name, path)),
            }
        }
        let forced = std::env::var("TABAGENT_CPU_VARIANT").ok();
        let (pick, mut reason) = super::choose(&candidates, forced.as_deref());
        let mut cpu_variant = String::new();
        if let Some(i) = pick {
            if load_module(&paths[i]) {
                cpu_variant = candidates[i].0.clone();
            } else {
                reason = format!(
                    "{} could not be loaded ({})",
                    candidates[i].0,
                    paths[i].display()
                );
            }
        }
        let other_backends = others
            .into_iter()
            .filter(|(_, p)| load_module(p))
            .map(|(n, _)| n)
            .collect();
        let level = if cpu_variant.is_empty() {
            LogLevel::Error
        } else {
            LogLevel::Info
        };
        log(level, &format!("CPU backend: {reason} ({})", dir.display()));
        BackendReport {
            cpu_variant,
            reason,
            dir: Some(dir.clone()),
            candidates,
            other_backends,
        }
    }
}

#[cfg(all(feature = "portable", not(unix)))]
mod imp {
    use super::*;
    use llama_cpp_sys_2 as sys;

    pub(super) fn load() -> BackendReport {
        // ggml's own search and scoring: the folder of the program.
        let dir = search_dirs().into_iter().find(|d| !modules(d).is_empty());
        let c = dir
            .as_ref()
            .and_then(|d| std::ffi::CString::new(d.to_string_lossy().as_bytes()).ok());
        // SAFETY: NULL (ggml's default paths) or a NUL-terminated folder.
        unsafe {
            sys::ggml_backend_load_all_from_path(
                c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            )
        };
        BackendReport {
            cpu_variant: "ggml's choice".into(),
            reason: "chosen by ggml_backend_load_all".into(),
            dir,
            ..BackendReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: &[(&str, i32)]) -> Vec<(String, i32)> {
        v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn the_best_runnable_variant_wins_and_a_forced_one_only_when_it_runs() {
        let cands = c(&[("x64", 1), ("haswell", 40), ("skylakex", 0), ("sse42", 5)]);
        let (i, why) = choose(&cands, None);
        assert_eq!(i, Some(1));
        assert!(
            why.starts_with("haswell: the highest-scoring of the 3"),
            "{why}"
        );
        assert!(
            why.contains("lacks instructions that skylakex needs"),
            "{why}"
        );
        assert_eq!(choose(&cands, Some("sse42")).0, Some(3));
        let (i, why) = choose(&cands, Some("skylakex"));
        assert_eq!(i, Some(1), "an unrunnable variant is never loaded");
        assert!(why.contains("refused"), "{why}");
        let (i, why) = choose(&cands, Some("nonesuch"));
        assert_eq!(i, Some(1));
        assert!(why.contains("names no variant"), "{why}");
        let (i, why) = choose(&c(&[("skylakex", 0)]), None);
        assert_eq!(i, None);
        assert!(why.contains("none of the 1"), "{why}");
        assert_eq!(choose(&[], None).0, None);
    }

    #[test]
    fn module_names() {
        if cfg!(windows) {
            return;
        }
        assert_eq!(module_name("libggml-cpu-haswell.so"), Some("cpu-haswell"));
        assert_eq!(module_name("libggml-cuda.so"), Some("cuda"));
        assert_eq!(module_name("libggml-base.so"), None);
        assert_eq!(module_name("libggml.so"), None);
        assert_eq!(module_name("libllama.so"), None);
        assert_eq!(module_name("libggml-.so"), None);
    }
}
