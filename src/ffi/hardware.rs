//! `ta_hardware`: what this machine can run, and whether a model will fit.

use super::model::ta_model;
use super::*;
use crate::hardware::fit::{self, Fit, FitParams, ModelShape};
use crate::hardware::HardwareInfo;

/// A snapshot of the machine, opaque. Create with `ta_hardware_detect`, free with
/// `ta_hardware_free`. Immutable: safe to use from many threads at once.
pub struct ta_hardware {
    info: HardwareInfo,
    s: HwStrings,
}

struct HwStrings {
    vendor: CString,
    brand: CString,
    uarch: CString,
    features: CString,
    build_features: CString,
    best_variant: CString,
    build_warning: Option<CString>,
    cpu_variant: CString,
    cpu_variant_reason: CString,
    backends: CString,
    gpus: Vec<[Option<CString>; 5]>,
}

/// CPU facts. Strings are borrowed from the `ta_hardware` (valid until it is freed).
#[repr(C)]
pub struct ta_cpu_info {
    /// "GenuineIntel", "AuthenticAMD", "ARM", …
    pub vendor: *const c_char,
    pub brand: *const c_char,
    /// Micro-architecture: "zen4", "skylake-x", "neoverse-n1", or "unknown".
    pub uarch: *const c_char,
    /// Space-separated SIMD features ("sse4_2 avx avx2 fma f16c …").
    pub features: *const c_char,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// x86-64 micro-architecture level 1–4 (0 on other CPUs).
    pub x86_64_level: u32,
    pub physical_cores: u32,
    pub logical_cores: u32,
    pub l1d_kb: u32,
    pub l2_kb: u32,
    pub l3_kb: u32,
    /// Threads to use for inference (physical cores this process may run on).
    pub recommended_threads: u32,
}

/// Memory available to this process; cgroup (container) limits are honoured.
#[repr(C)]
pub struct ta_memory_info {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub host_total_bytes: u64,
    pub host_available_bytes: u64,
    /// The cgroup memory limit, 0 when there is none.
    pub cgroup_limit_bytes: u64,
    pub swap_total_bytes: u64,
}

/// One GPU found through its driver (dlopen'ed; no SDK is linked). Strings are
/// borrowed from the `ta_hardware`; optional ones are NULL when unknown.
#[repr(C)]
pub struct ta_gpu_info {
    /// "cuda", "vulkan" or "metal".
    pub backend: *const c_char,
    pub name: *const c_char,
    /// CUDA compute capability ("8.6"), or NULL.
    pub compute_capability: *const c_char,
    /// Vulkan device type ("discrete", "integrated", …), or NULL.
    pub device_type: *const c_char,
    /// Driver version text, or NULL.
    pub driver: *const c_char,
    pub index: u32,
    pub total_bytes: u64,
    /// Free memory; meaningful only when `has_free_bytes`.
    pub free_bytes: u64,
    pub has_free_bytes: bool,
}

/// This build of the library versus the CPU. Strings borrowed from the `ta_hardware`.
#[repr(C)]
pub struct ta_build_info {
    /// Space-separated CPU features this build's ggml uses.
    pub features: *const c_char,
    /// The best build variant for this CPU ("x86-64-v3", "x86-64-v4", "aarch64-dotprod", …).
    pub best_variant: *const c_char,
    /// Set when the CPU could run a faster build than this one ("this CPU supports
    /// AVX2 … but this build uses none of them; rebuild with …"); NULL otherwise.
    pub warning: *const c_char,
    /// Space-separated GPU backends compiled in ("" for a CPU-only build).
    pub gpu_backends: *const c_char,
    /// Whether llama.cpp can offload layers to a GPU in this build and machine.
    pub gpu_offload: bool,
    /// The CPU code running inference: the ggml CPU variant the portable build
    /// loaded for this CPU ("haswell", "skylakex", "x64", …), "built-in" for a
    /// native build, "" when no CPU backend could be loaded.
    pub cpu_variant: *const c_char,
    /// Why that variant: its rank among the variants found and which ones this CPU
    /// cannot run, or why none was loaded.
    pub cpu_variant_reason: *const c_char,
}

/// A memory estimate for a model and context size, and advice.
#[repr(C)]
pub struct ta_fit {
    /// The context size estimated for (padded as llama.cpp pads it).
    pub n_ctx: u32,
    pub weights_bytes: u64,
    pub kv_bytes: u64,
    pub compute_bytes: u64,
    pub total_bytes: u64,
    pub fits_ram: bool,
    pub fits_vram: bool,
    /// -1 = all layers on the GPU, 0 = none (no GPU), else a count.
    pub recommended_gpu_layers: i32,
    pub recommended_threads: u32,
}

fn compiled_backends() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "vulkan") {
        "vulkan"
    } else if cfg!(feature = "metal") {
        "metal"
    } else {
        ""
    }
}

fn cs(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

fn opt_ptr(c: &Option<CString>) -> *const c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

impl ta_hardware {
    fn new(info: HardwareInfo) -> ta_hardware {
        let s = HwStrings {
            vendor: cs(&info.cpu.vendor),
            brand: cs(&info.cpu.brand),
            uarch: cs(&info.cpu.uarch),
            features: cs(&info.cpu.features.join(" ")),
            build_features: cs(&info.build_features.join(" ")),
            best_variant: cs(&info.best_variant),
            build_warning: info.build_warning.as_deref().map(cs),
            cpu_variant: cs(&crate::engine::backends::report().cpu_variant),
            cpu_variant_reason: cs(&crate::engine::backends::report().reason),
            backends: cs(compiled_backends()),
            gpus: info
                .gpus
                .iter()
                .map(|g| {
                    [
                        Some(cs(&g.backend)),
                        Some(cs(&g.name)),
                        g.compute_capability.as_deref().map(cs),
                        g.device_type.as_deref().map(cs),
                        g.driver.as_deref().map(cs),
                    ]
                })
                .collect(),
        };
        ta_hardware { info, s }
    }

    fn json(&self) -> serde_json::Value {
        let b = crate::engine::backends::report();
        let mut j = self.info.to_json();
        j["build"] = serde_json::json!({
            "gpu_backends": compiled_backends(),
            "gpu_offload": crate::engine::supports_gpu_offload(),
            "llama": crate::engine::llama_version(),
            "system_info": crate::engine::system_info(),
            "cpu_variant": b.cpu_variant,
            "cpu_variant_reason": b.reason,
            "cpu_variants": b.candidates.iter().map(|(n, s)| serde_json::json!({"name": n, "score": s})).collect::<Vec<_>>(),
            "backend_dir": b.dir.as_ref().map(|d| d.display().to_string()),
            "other_backends": b.other_backends,
        });
        j
    }
}

fn fit_out(f: &Fit, out: &mut ta_fit) {
    *out = ta_fit {
        n_ctx: f.n_ctx.min(u32::MAX as u64) as u32,
        weights_bytes: f.weights_bytes,
        kv_bytes: f.kv_bytes,
        compute_bytes: f.compute_bytes,
        total_bytes: f.total_bytes,
        fits_ram: f.fits_ram,
        fits_vram: f.fits_vram,
        recommended_gpu_layers: f.recommended_gpu_layers,
        recommended_threads: f.recommended_threads,
    };
}

/// Probe the machine: CPU (cpuid / /proc/cpuinfo), memory (with cgroup limits),
/// GPUs (CUDA and Vulkan drivers through dlopen; a missing driver means no GPU, not
/// an error). `*out_hw` receives an owned snapshot (free with `ta_hardware_free`).
///
/// # Safety
/// `out_hw` must be writable.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_detect(out_hw: *mut *mut ta_hardware) -> ta_status {
    boundary("ta_hardware_detect", || {
        let o = out(out_hw, "out_hw")?;
        let info = crate::hardware::detect(&crate::engine::system_info());
        *o = Box::into_raw(Box::new(ta_hardware::new(info)));
        Ok(())
    })
}

/// Free a hardware snapshot. NULL is a no-op.
///
/// # Safety
/// `hw` must come from `ta_hardware_detect` and not be freed twice.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_free(hw: *mut ta_hardware) {
    boundary_value("ta_hardware_free", (), || {
        if !hw.is_null() {
            // SAFETY: allocated by Box::into_raw in ta_hardware_detect.
            drop(unsafe { Box::from_raw(hw) });
        }
        Ok(())
    })
}

/// CPU facts (strings borrowed from `hw`).
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_cpu(
    hw: *const ta_hardware,
    out_cpu: *mut ta_cpu_info,
) -> ta_status {
    boundary("ta_hardware_cpu", || {
        let h = arg(hw, "hw")?;
        let o = out(out_cpu, "out_cpu")?;
        let c = &h.info.cpu;
        *o = ta_cpu_info {
            vendor: h.s.vendor.as_ptr(),
            brand: h.s.brand.as_ptr(),
            uarch: h.s.uarch.as_ptr(),
            features: h.s.features.as_ptr(),
            family: c.family,
            model: c.model,
            stepping: c.stepping,
            x86_64_level: c.x86_64_level,
            physical_cores: c.physical_cores,
            logical_cores: c.logical_cores,
            l1d_kb: c.l1d_kb,
            l2_kb: c.l2_kb,
            l3_kb: c.l3_kb,
            recommended_threads: h.info.recommended_threads(),
        };
        Ok(())
    })
}

/// Memory facts.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_memory(
    hw: *const ta_hardware,
    out_mem: *mut ta_memory_info,
) -> ta_status {
    boundary("ta_hardware_memory", || {
        let m = &arg(hw, "hw")?.info.memory;
        let o = out(out_mem, "out_mem")?;
        *o = ta_memory_info {
            total_bytes: m.total_bytes,
            available_bytes: m.available_bytes,
            host_total_bytes: m.host_total_bytes,
            host_available_bytes: m.host_available_bytes,
            cgroup_limit_bytes: m.cgroup_limit_bytes.unwrap_or(0),
            swap_total_bytes: m.swap_total_bytes,
        };
        Ok(())
    })
}

/// Number of GPUs found (0 when `hw` is NULL).
///
/// # Safety
/// `hw` must be NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_gpu_count(hw: *const ta_hardware) -> usize {
    boundary_value("ta_hardware_gpu_count", 0, || {
        Ok(arg(hw, "hw")?.info.gpus.len())
    })
}

/// GPU `index` (0-based; `TA_ERR_INVALID_ARG` past the end).
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_gpu(
    hw: *const ta_hardware,
    index: usize,
    out_gpu: *mut ta_gpu_info,
) -> ta_status {
    boundary("ta_hardware_gpu", || {
        let h = arg(hw, "hw")?;
        let o = out(out_gpu, "out_gpu")?;
        let (g, s) = h
            .info
            .gpus
            .get(index)
            .zip(h.s.gpus.get(index))
            .ok_or_else(|| {
                Error::invalid_arg(format!(
                    "GPU index {index} is out of range ({} found)",
                    h.info.gpus.len()
                ))
            })?;
        *o = ta_gpu_info {
            backend: opt_ptr(&s[0]),
            name: opt_ptr(&s[1]),
            compute_capability: opt_ptr(&s[2]),
            device_type: opt_ptr(&s[3]),
            driver: opt_ptr(&s[4]),
            index: g.index,
            total_bytes: g.total_bytes,
            free_bytes: g.free_bytes.unwrap_or(0),
            has_free_bytes: g.free_bytes.is_some(),
        };
        Ok(())
    })
}

/// This build versus this CPU: features used, best variant, a warning when a
/// faster build would run here, compiled GPU backends.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_build(
    hw: *const ta_hardware,
    out_build: *mut ta_build_info,
) -> ta_status {
    boundary("ta_hardware_build", || {
        let h = arg(hw, "hw")?;
        let o = out(out_build, "out_build")?;
        *o = ta_build_info {
            features: h.s.build_features.as_ptr(),
            best_variant: h.s.best_variant.as_ptr(),
            warning: opt_ptr(&h.s.build_warning),
            gpu_backends: h.s.backends.as_ptr(),
            gpu_offload: crate::engine::supports_gpu_offload(),
            cpu_variant: h.s.cpu_variant.as_ptr(),
            cpu_variant_reason: h.s.cpu_variant_reason.as_ptr(),
        };
        Ok(())
    })
}

/// Everything as one JSON document (owned: free with `ta_string_free`).
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_json(
    hw: *const ta_hardware,
    out_json: *mut *mut c_char,
) -> ta_status {
    boundary("ta_hardware_json", || {
        let h = arg(hw, "hw")?;
        let o = out(out_json, "out_json")?;
        *o = owned_cstring(h.json().to_string());
        Ok(())
    })
}

fn fit_params(n_ctx: u32) -> FitParams {
    FitParams {
        n_ctx: n_ctx as u64,
        ..FitParams::default()
    }
}

/// Estimate the memory a model file needs with an `n_ctx`-token context (0 = the
/// model's training context), without loading it: weights, KV cache, compute
/// buffers; whether it fits in RAM / VRAM; recommended threads and GPU layers.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_fit_file(
    hw: *const ta_hardware,
    path: *const c_char,
    n_ctx: u32,
    out_fit: *mut ta_fit,
) -> ta_status {
    boundary("ta_hardware_fit_file", || {
        let h = arg(hw, "hw")?;
        let path = str_arg(path, "path")?;
        let o = out(out_fit, "out_fit")?;
        let g = crate::gguf::open_model(std::path::Path::new(path))?;
        let shape = ModelShape::from_gguf(&g).map_err(|e| e.context(path))?;
        fit_out(&fit::estimate(&shape, &fit_params(n_ctx), &h.info), o);
        Ok(())
    })
}

/// `ta_hardware_fit_file` for a loaded model.
///
/// # Safety
/// Pointers must be valid.
#[no_mangle]
pub unsafe extern "C" fn ta_hardware_fit_model(
    hw: *const ta_hardware,
    model: *const ta_model,
    n_ctx: u32,
    out_fit: *mut ta_fit,
) -> ta_status {
    boundary("ta_hardware_fit_model", || {
        let h = arg(hw, "hw")?;
        let m = arg(model, "model")?;
        let o = out(out_fit, "out_fit")?;
        let shape = ModelShape::from_gguf(m.inner.gguf())?;
        fit_out(&fit::estimate(&shape, &fit_params(n_ctx), &h.info), o);
        Ok(())
    })
}
