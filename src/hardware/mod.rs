//! Hardware detection: CPU, memory, GPUs, and how well the loaded llama.cpp
//! build matches the CPU. Nothing here links llama.cpp or a GPU SDK: the caller
//! passes `llama_print_system_info()` text in, and GPU drivers are dlopen'ed.
//!
//! Detection never fails; what could not be probed is empty/zero, and the
//! reasons go to [`HardwareInfo::probe_notes`].

pub mod cpu;
pub mod fit;
pub mod gpu;
pub mod memory;

pub use cpu::CpuInfo;
pub use gpu::GpuInfo;
pub use memory::MemoryInfo;

use serde_json::{json, Value};

/// Everything [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareInfo {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub gpus: Vec<GpuInfo>,
    /// ISA features the llama.cpp build uses (same vocabulary as `cpu.features`).
    pub build_features: Vec<String>,
    /// Best prebuilt library variant for this CPU ("x86-64-v3", "aarch64-dotprod", ...).
    pub best_variant: String,
    /// Set when the CPU has fast SIMD the build leaves unused.
    pub build_warning: Option<String>,
    /// Why some probe came back empty (driver init failures, missing inputs).
    pub probe_notes: Vec<String>,
}

/// Probe the machine. `system_info` is llama.cpp's `llama_print_system_info()`
/// output; pass "" when unknown (then no build warning is given).
pub fn detect(system_info: &str) -> HardwareInfo {
    let cpu = cpu::detect();
    let memory = memory::detect();
    let (gpus, mut probe_notes) = gpu::probe_all_with_notes();
    let build_features = cpu::build_features(system_info);
    // An empty string means "not told", not "a build without SIMD".
    let build_warning = if system_info.trim().is_empty() {
        probe_notes.push("no llama.cpp system info given; build features unknown".into());
        None
    } else {
        cpu::build_warning(&cpu, &build_features)
    };
    if memory.host_total_bytes == 0 {
        probe_notes.push("host memory size unknown on this platform".into());
    }
    HardwareInfo {
        best_variant: cpu::best_variant(&cpu).to_string(),
        cpu,
        memory,
        gpus,
        build_features,
        build_warning,
        probe_notes,
    }
}

impl HardwareInfo {
    /// Threads for CPU inference: one per physical core (SMT siblings share the
    /// SIMD units, so more threads only add contention), never more than the
    /// CPUs this process may run on, at least 1.
    pub fn recommended_threads(&self) -> u32 {
        self.cpu.recommended_threads()
    }

    /// Every field as JSON (plus `recommended_threads`), for the C ABI and logs.
    pub fn to_json(&self) -> Value {
        let c = &self.cpu;
        let m = &self.memory;
        json!({
            "cpu": {
                "vendor": c.vendor,
                "brand": c.brand,
                "family": c.family,
                "model": c.model,
                "stepping": c.stepping,
                "uarch": c.uarch,
                "x86_64_level": c.x86_64_level,
                "features": c.features,
                "physical_cores": c.physical_cores,
                "logical_cores": c.logical_cores,
                "affinity_cores": c.affinity_cores,
                "l1d_kb": c.l1d_kb,
                "l2_kb": c.l2_kb,
                "l3_kb": c.l3_kb,
            },
            "memory": {
                "total_bytes": m.total_bytes,
                "available_bytes": m.available_bytes,
                "host_total_bytes": m.host_total_bytes,
                "host_available_bytes": m.host_available_bytes,
                "cgroup_limit_bytes": m.cgroup_limit_bytes,
                "swap_total_bytes": m.swap_total_bytes,
            },
            "gpus": self.gpus.iter().map(|g| json!({
                "backend": g.backend,
                "index": g.index,
                "name": g.name,
                "total_bytes": g.total_bytes,
                "free_bytes": g.free_bytes,
                "compute_capability": g.compute_capability,
                "device_type": g.device_type,
                "driver": g.driver,
            })).collect::<Vec<_>>(),
            "build_features": self.build_features,
            "best_variant": self.best_variant,
            "build_warning": self.build_warning,
            "probe_notes": self.probe_notes,
            "recommended_threads": self.recommended_threads(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS: &str = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | \
                       BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |";

    #[test]
    fn detect_runs_and_is_sane() {
        let hw = detect(SYS);
        assert!(hw.cpu.logical_cores >= 1);
        assert!(hw.cpu.physical_cores >= 1 && hw.cpu.physical_cores <= hw.cpu.logical_cores);
        assert!(!hw.best_variant.is_empty());
        assert_eq!(hw.build_features, cpu::build_features(SYS));
        let t = hw.recommended_threads();
        assert!(t >= 1 && t <= hw.cpu.affinity_cores.max(1));
        if cfg!(target_os = "linux") {
            assert!(hw.memory.total_bytes > 0);
        }
    }

    #[test]
    fn empty_system_info_gives_note_not_warning() {
        let hw = detect("");
        assert!(hw.build_warning.is_none());
        assert!(hw.probe_notes.iter().any(|n| n.contains("system info")));
    }

    fn fake(physical: u32, logical: u32, affinity: u32) -> HardwareInfo {
        let mut hw = detect(SYS);
        hw.cpu.physical_cores = physical;
        hw.cpu.logical_cores = logical;
        hw.cpu.affinity_cores = affinity;
        hw
    }

    #[test]
    fn recommended_threads_rules() {
        assert_eq!(fake(8, 16, 16).recommended_threads(), 8);
        assert_eq!(fake(8, 16, 4).recommended_threads(), 4);
        assert_eq!(fake(0, 0, 0).recommended_threads(), 1);
        assert_eq!(fake(4, 4, 2).recommended_threads(), 2);
    }

    #[test]
    fn json_round_trip_has_every_key() {
        let mut hw = detect(SYS);
        // A synthetic GPU so the per-GPU keys are exercised too.
        hw.gpus.push(GpuInfo {
            backend: "cuda".into(),
            index: 0,
            name: "Test GPU".into(),
            total_bytes: 8 << 30,
            free_bytes: Some(7 << 30),
            compute_capability: Some("8.9".into()),
            device_type: Some("discrete".into()),
            driver: None,
        });
        let text = serde_json::to_string(&hw.to_json()).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        for k in [
            "cpu",
            "memory",
            "gpus",
            "build_features",
            "best_variant",
            "build_warning",
            "probe_notes",
            "recommended_threads",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in [
            "vendor",
            "brand",
            "family",
            "model",
            "stepping",
            "uarch",
            "x86_64_level",
            "features",
            "physical_cores",
            "logical_cores",
            "affinity_cores",
            "l1d_kb",
            "l2_kb",
            "l3_kb",
        ] {
            assert!(v["cpu"].get(k).is_some(), "missing cpu.{k}");
        }
        for k in [
            "total_bytes",
            "available_bytes",
            "host_total_bytes",
            "host_available_bytes",
            "cgroup_limit_bytes",
            "swap_total_bytes",
        ] {
            assert!(v["memory"].get(k).is_some(), "missing memory.{k}");
        }
        let g = v["gpus"].as_array().unwrap().last().unwrap();
        for k in [
            "backend",
            "index",
            "name",
            "total_bytes",
            "free_bytes",
            "compute_capability",
            "device_type",
            "driver",
        ] {
            assert!(g.get(k).is_some(), "missing gpu.{k}");
        }
        assert_eq!(g["compute_capability"], "8.9");
        assert_eq!(v["cpu"]["logical_cores"], hw.cpu.logical_cores);
        assert_eq!(v["best_variant"], hw.best_variant.as_str());
    }
}
