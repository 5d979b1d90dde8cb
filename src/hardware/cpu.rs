//! CPU identification: vendor, family/model, micro-architecture name, the SIMD
//! features the OS actually lets us use, core counts and cache sizes.
//!
//! On x86_64 the source of truth is CPUID (via raw-cpuid) plus XGETBV, because
//! /proc/cpuinfo is Linux-only. Everywhere else we read /proc/cpuinfo and
//! getauxval. All parsing lives in pure functions so tests can feed them text.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

/// What we know about the host CPU. All fields are public plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuInfo {
    /// "GenuineIntel", "AuthenticAMD", or on Arm the implementer name ("ARM", "Apple").
    pub vendor: String,
    /// Marketing name ("AMD EPYC 7B13"); may be empty on Arm.
    pub brand: String,
    /// Display family (x86: base + extended as Intel/AMD document; Arm: implementer).
    pub family: u32,
    /// Display model (x86: extended model combined; Arm: part number).
    pub model: u32,
    pub stepping: u32,
    /// "zen4", "skylake-x", "neoverse-n1", ... or "unknown".
    pub uarch: String,
    /// x86-64 psABI level 1..=4; 0 on non-x86.
    pub x86_64_level: u32,
    /// Lower-case feature names (see [`FEATURE_VOCABULARY`]), OS-enabled only.
    pub features: Vec<String>,
    /// Unique (package, core) pairs among online CPUs.
    pub physical_cores: u32,
    /// Online logical CPUs in the machine.
    pub logical_cores: u32,
    /// Logical CPUs this process may run on (affinity mask, cgroup quota).
    pub affinity_cores: u32,
    pub l1d_kb: u32,
    pub l2_kb: u32,
    pub l3_kb: u32,
}

impl CpuInfo {
    /// Threads for CPU inference: one per physical core (SMT siblings share the SIMD
    /// units), never more than the CPUs this process may run on, at least 1.
    pub fn recommended_threads(&self) -> u32 {
        let cap = self.affinity_cores.min(self.logical_cores).max(1);
        self.physical_cores.clamp(1, cap)
    }
}

/// Every feature name this module can report, so callers (and tests) share one vocabulary.
pub const FEATURE_VOCABULARY: &[&str] = &[
    // x86
    "sse",
    "sse2",
    "sse3",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "popcnt",
    "cx16",
    "lahf",
    "movbe",
    "osxsave",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi1",
    "bmi2",
    "lzcnt",
    "avx512f",
    "avx512cd",
    "avx512bw",
    "avx512dq",
    "avx512vl",
    "avx512_vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    // aarch64
    "neon",
    "fp16",
    "dotprod",
    "i8mm",
    "sve",
    "sve2",
    "sme",
];

/// Micro-architecture name for an x86 CPU. `vendor` is the CPUID vendor string
/// ("GenuineIntel"/"AuthenticAMD"; "intel"/"amd" also accepted); `family` and
/// `model` are the *display* values (extended bits already combined).
pub fn uarch_name(vendor: &str, family: u32, model: u32) -> &'static str {
    let v = vendor.to_ascii_lowercase();
    if v.contains("amd") {
        match (family, model) {
            // Family 17h: 0x18 (Picasso) is 12 nm Zen+, not Zen; 0x20 (Dali) is Zen.
            (0x17, 0x01 | 0x11 | 0x20) => "zen",
            (0x17, 0x08 | 0x18) => "zen+",
            (0x17, 0x31 | 0x47 | 0x60 | 0x68 | 0x71 | 0x84 | 0x90 | 0x98 | 0xa0) => "zen2",
            (0x19, 0x00..=0x0f | 0x20..=0x2f | 0x40..=0x5f) => "zen3",
            (0x19, 0x10..=0x1f | 0x60..=0x7f | 0xa0..=0xaf) => "zen4",
            (0x1a, _) => "zen5",
            (0x16, 0x00..=0x0f) => "btver1",
            (0x16, 0x30..=0x3f) => "btver2",
            (0x15, 0x00..=0x01) => "bdver1",
            (0x15, 0x02..=0x1f) => "bdver2",
            (0x15, 0x30..=0x3f) => "bdver3",
            (0x15, 0x60..=0x7f) => "bdver4",
            _ => "unknown",
        }
    } else if v.contains("intel") {
        if family != 6 {
            return "unknown";
        }
        match model {
            0x1a | 0x1e | 0x1f | 0x2e => "nehalem",
            0x25 | 0x2c | 0x2f => "westmere",
            0x2a | 0x2d => "sandybridge",
            0x3a | 0x3e => "ivybridge",
            0x3c | 0x3f | 0x45 | 0x46 => "haswell",
            0x3d | 0x47 | 0x4f | 0x56 => "broadwell",
            0x4e | 0x5e => "skylake",
            // 0x55 is shared by Skylake-SP, Cascade Lake and Cooper Lake (told apart
            // only by stepping); all are the same core, so one name.
            0x55 => "skylake-x",
            // Kaby/Coffee/Whiskey/Amber/Comet Lake client parts: Skylake core again.
            0x8e | 0x9e => "kabylake",
            0xa5 | 0xa6 => "cometlake",
            0x66 => "cannonlake",
            0x7d | 0x7e => "icelake",
            0x6a | 0x6c => "icelake-server",
            0xa7 => "rocketlake",
            0x8c | 0x8d => "tigerlake",
            0x97 | 0x9a | 0xbe => "alderlake",
            0xb7 | 0xba | 0xbf => "raptorlake",
            0x8f => "sapphirerapids",
            0xcf => "emeraldrapids",
            0xad | 0xae => "graniterapids",
            0xaf => "sierraforest",
            0xaa | 0xac => "meteorlake",
            0xc5 | 0xc6 | 0xb5 => "arrowlake",
            0xbd => "lunarlake",
            0x57 => "knl",
            0x85 => "knm",
            _ => "unknown",
        }
    } else {
        "unknown"
    }
}

/// Micro-architecture name for an Arm CPU from /proc/cpuinfo "CPU implementer"
/// and "CPU part" (MIDR fields).
pub fn arm_uarch_name(implementer: u32, part: u32) -> &'static str {
    match (implementer, part) {
        (0x41, 0xd03) => "cortex-a53",
        (0x41, 0xd05) => "cortex-a55",
        (0x41, 0xd07) => "cortex-a57",
        (0x41, 0xd08) => "cortex-a72",
        (0x41, 0xd09) => "cortex-a73",
        (0x41, 0xd0a) => "cortex-a75",
        (0x41, 0xd0b) => "cortex-a76",
        (0x41, 0xd0c) => "neoverse-n1",
        (0x41, 0xd0d) => "cortex-a77",
        (0x41, 0xd40) => "neoverse-v1",
        (0x41, 0xd41) => "cortex-a78",
        (0x41, 0xd44) => "cortex-x1",
        (0x41, 0xd46) => "cortex-a510",
        (0x41, 0xd47) => "cortex-a710",
        (0x41, 0xd48) => "cortex-x2",
        (0x41, 0xd49) => "neoverse-n2",
        (0x41, 0xd4f) => "neoverse-v2",
        (0x61, _) => "apple",
        (0xc0, _) => "ampere1",
        _ => "unknown",
    }
}

/// Implementer code → vendor name (MIDR implementer byte).
#[cfg(not(target_arch = "x86_64"))]
fn arm_vendor(implementer: u32) -> &'static str {
    match implementer {
        0x41 => "ARM",
        0x42 => "Broadcom",
        0x43 => "Cavium",
        0x48 => "HiSilicon",
        0x4e => "NVIDIA",
        0x51 => "Qualcomm",
        0x61 => "Apple",
        0xc0 => "Ampere",
        _ => "unknown",
    }
}

/// Combine CPUID leaf-1 version fields into display family/model, as both Intel's
/// SDM and AMD's APM document: the extended family is added only when the base
/// family is 0xF; the extended model is prepended when the base family is 6 or 0xF.
pub fn display_family_model(
    base_family: u32,
    ext_family: u32,
    base_model: u32,
    ext_model: u32,
) -> (u32, u32) {
    let family = if base_family == 0xf {
        base_family + ext_family
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        (ext_model << 4) | base_model
    } else {
        base_model
    };
    (family, model)
}

/// x86-64 psABI micro-architecture level of a feature set (0 when not x86).
pub fn x86_64_level<S: AsRef<str>>(features: &[S]) -> u32 {
    let set: HashSet<&str> = features.iter().map(|s| s.as_ref()).collect();
    let all = |names: &[&str]| names.iter().all(|n| set.contains(n));
    // SSE2 is part of the x86-64 baseline, so it stands in for "is x86-64 at all".
    if !all(&["sse", "sse2"]) {
        return 0;
    }
    let v2 = [
        "cx16", "lahf", "popcnt", "sse3", "sse4_1", "sse4_2", "ssse3",
    ];
    let v3 = [
        "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "osxsave",
    ];
    let v4 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
    if !all(&v2) {
        1
    } else if !all(&v3) {
        2
    } else if !all(&v4) {
        3
    } else {
        4
    }
}

/// Map Linux /proc/cpuinfo flag names ("flags" on x86, "Features" on Arm) to
/// this module's vocabulary; names we do not track are dropped.
pub fn features_from_linux_flags<S: AsRef<str>>(flags: &[S]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let name = match f.as_ref() {
            "pni" => "sse3",
            "lahf_lm" => "lahf",
            "abm" => "lzcnt",
            // The kernel only shows "xsave" when it set CR4.OSXSAVE itself.
            "xsave" => "osxsave",
            "avx512vbmi" => "avx512_vbmi",
            "asimd" => "neon",
            "asimddp" => "dotprod",
            "asimdhp" => "fp16",
            other => other,
        };
        if FEATURE_VOCABULARY.contains(&name) && !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    out
}

/// The fields of /proc/cpuinfo this module uses (first processor's values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCpuinfo {
    /// Number of "processor" stanzas (= online logical CPUs).
    pub processors: u32,
    pub vendor_id: Option<String>,
    pub model_name: Option<String>,
    pub cpu_family: Option<u32>,
    pub model: Option<u32>,
    pub stepping: Option<u32>,
    /// Raw "flags" (x86) or "Features" (Arm) words.
    pub flags: Vec<String>,
    pub cpu_implementer: Option<u32>,
    pub cpu_part: Option<u32>,
    pub cpu_revision: Option<u32>,
    /// Unique ("physical id", "core id") pairs, when the kernel prints them.
    pub physical_cores: Option<u32>,
}

fn parse_num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// Parse /proc/cpuinfo text. Unknown or malformed lines are skipped.
pub fn parse_cpuinfo(text: &str) -> ProcCpuinfo {
    let mut info = ProcCpuinfo::default();
    let mut pairs: HashSet<(String, String)> = HashSet::new();
    let mut phys_id: Option<String> = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        // `get_or_insert` keeps the first processor's value.
        match key {
            "processor" => {
                info.processors += 1;
                phys_id = None;
            }
            "vendor_id" if info.vendor_id.is_none() => info.vendor_id = Some(value.into()),
            "model name" if info.model_name.is_none() => info.model_name = Some(value.into()),
            "cpu family" if info.cpu_family.is_none() => info.cpu_family = parse_num(value),
            "model" if info.model.is_none() => info.model = parse_num(value),
            "stepping" if info.stepping.is_none() => info.stepping = parse_num(value),
            "flags" | "Features" if info.flags.is_empty() => {
                info.flags = value.split_whitespace().map(str::to_string).collect()
            }
            "CPU implementer" if info.cpu_implementer.is_none() => {
                info.cpu_implementer = parse_num(value)
            }
            "CPU part" if info.cpu_part.is_none() => info.cpu_part = parse_num(value),
            "CPU revision" if info.cpu_revision.is_none() => info.cpu_revision = parse_num(value),
            "physical id" => phys_id = Some(value.into()),
            "core id" => {
                pairs.insert((phys_id.clone().unwrap_or_default(), value.into()));
            }
            _ => {}
        }
    }
    if !pairs.is_empty() {
        info.physical_cores = Some(pairs.len() as u32);
    }
    info
}

/// Parse a kernel CPU list such as "0-3,8,10-11" into CPU numbers.
pub fn parse_cpu_list(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    // Cap the range so a corrupt file cannot make us allocate forever.
                    if b >= a && b - a < 1 << 16 {
                        out.extend(a..=b);
                    }
                }
            }
            None => {
                if let Ok(n) = part.trim().parse() {
                    out.push(n);
                }
            }
        }
    }
    out
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Count unique (physical_package_id, core_id) pairs under a sysfs CPU directory
/// (normally /sys/devices/system/cpu). Offline CPUs are skipped.
pub fn physical_cores_from_sysfs(cpu_dir: &Path) -> Option<u32> {
    let mut pairs: HashSet<(String, String)> = HashSet::new();
    for entry in fs::read_dir(cpu_dir).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(num) = name.strip_prefix("cpu") else {
            continue;
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        if read_trim(&dir.join("online")).as_deref() == Some("0") {
            continue;
        }
        let topo = dir.join("topology");
        let (Some(pkg), Some(core)) = (
            read_trim(&topo.join("physical_package_id")),
            read_trim(&topo.join("core_id")),
        ) else {
            continue;
        };
        pairs.insert((pkg, core));
    }
    if pairs.is_empty() {
        None
    } else {
        Some(pairs.len() as u32)
    }
}

/// Parse a sysfs cache size ("32K", "1024K", "32M") into KiB.
fn parse_cache_size_kb(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(k) = s.strip_suffix('K') {
        k.parse().ok()
    } else if let Some(m) = s.strip_suffix('M') {
        m.parse::<u32>().ok().map(|m| m * 1024)
    } else {
        s.parse::<u32>().ok().map(|b| b / 1024)
    }
}

/// (L1d, L2, L3) KiB from a sysfs cache directory such as
/// /sys/devices/system/cpu/cpu0/cache. Sizes are per instance, as the kernel reports.
pub fn caches_from_sysfs(cache_dir: &Path) -> (u32, u32, u32) {
    let (mut l1d, mut l2, mut l3) = (0, 0, 0);
    let Ok(rd) = fs::read_dir(cache_dir) else {
        return (0, 0, 0);
    };
    for entry in rd.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("index") {
            continue;
        }
        let d = entry.path();
        let level = read_trim(&d.join("level")).and_then(|s| s.parse::<u32>().ok());
        let ty = read_trim(&d.join("type")).unwrap_or_default();
        let size = read_trim(&d.join("size")).and_then(|s| parse_cache_size_kb(&s));
        let (Some(level), Some(size)) = (level, size) else {
            continue;
        };
        match (level, ty.as_str()) {
            (1, "Data" | "Unified") => l1d = size,
            (2, _) if ty != "Instruction" => l2 = size,
            (3, _) if ty != "Instruction" => l3 = size,
            _ => {}
        }
    }
    (l1d, l2, l3)
}

/// Logical CPUs this process may use: the smaller of the affinity mask and
/// `available_parallelism` (which also folds in a cgroup CPU quota).
fn affinity_count() -> u32 {
    let par = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: cpu_set_t is plain bits, so all-zero is valid; sched_getaffinity
        // writes at most size_of::<cpu_set_t>() bytes into it; CPU_COUNT only reads it.
        let n = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
                libc::CPU_COUNT(&set) as u32
            } else {
                0
            }
        };
        if n > 0 {
            return n.min(par);
        }
    }
    par
}

/// Online logical CPUs in the machine (not just our affinity mask).
fn online_count() -> u32 {
    if let Some(s) = read_trim(Path::new("/sys/devices/system/cpu/online")) {
        let n = parse_cpu_list(&s).len() as u32;
        if n > 0 {
            return n;
        }
    }
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no memory-safety preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        if n > 0 {
            return n as u32;
        }
    }
    affinity_count()
}

/// Identity and features that come from the instruction set itself.
struct IsaInfo {
    vendor: String,
    brand: String,
    family: u32,
    model: u32,
    stepping: u32,
    uarch: String,
    features: Vec<String>,
    caches: (u32, u32, u32),
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    // SAFETY: the caller checked OSXSAVE, so XGETBV exists and is enabled.
    unsafe { core::arch::x86_64::_xgetbv(0) }
}

#[cfg(target_arch = "x86_64")]
fn isa_info() -> IsaInfo {
    use raw_cpuid::CpuId;
    let cpuid = CpuId::new();
    let vendor = cpuid
        .get_vendor_info()
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    let brand = cpuid
        .get_processor_brand_string()
        .map(|b| b.as_str().trim().to_string())
        .unwrap_or_default();
    let fi = cpuid.get_feature_info();
    let (family, model, stepping) = fi
        .as_ref()
        .map(|f| {
            let (fam, m) = display_family_model(
                f.base_family_id() as u32,
                f.extended_family_id() as u32,
                f.base_model_id() as u32,
                f.extended_model_id() as u32,
            );
            (fam, m, f.stepping_id() as u32)
        })
        .unwrap_or((0, 0, 0));

    // XCR0 says which register state the OS saves on context switch; a CPU bit
    // without the matching XCR0 bits means the instructions fault.
    let osxsave = fi.as_ref().is_some_and(|f| f.has_oxsave());
    let xcr0 = if osxsave {
        // SAFETY: OSXSAVE set means CR4.OSXSAVE=1, so XGETBV is enabled; ecx=0 is valid.
        unsafe { xgetbv0() }
    } else {
        0
    };
    let os_avx = xcr0 & 0b110 == 0b110; // XMM + YMM
    let os_avx512 = os_avx && xcr0 & 0xe0 == 0xe0; // opmask + ZMM_Hi256 + Hi16_ZMM
    let os_amx = xcr0 & (0b11 << 17) == (0b11 << 17); // XTILECFG + XTILEDATA

    let mut feats: Vec<&str> = Vec::new();
    let mut add = |cond: bool, name: &'static str| {
        if cond {
            feats.push(name)
        }
    };
    if let Some(f) = &fi {
        add(f.has_sse(), "sse");
        add(f.has_sse2(), "sse2");
        add(f.has_sse3(), "sse3");
        add(f.has_ssse3(), "ssse3");
        add(f.has_sse41(), "sse4_1");
        add(f.has_sse42(), "sse4_2");
        add(f.has_popcnt(), "popcnt");
        add(f.has_cmpxchg16b(), "cx16");
        add(f.has_movbe(), "movbe");
        add(osxsave, "osxsave");
        add(os_avx && f.has_avx(), "avx");
        add(os_avx && f.has_fma(), "fma");
        add(os_avx && f.has_f16c(), "f16c");
    }
    if let Some(e) = cpuid.get_extended_processor_and_feature_identifiers() {
        add(e.has_lahf_sahf(), "lahf");
        add(e.has_lzcnt(), "lzcnt");
    }
    if let Some(x) = cpuid.get_extended_feature_info() {
        add(os_avx && x.has_avx2(), "avx2");
        add(x.has_bmi1(), "bmi1");
        add(x.has_bmi2(), "bmi2");
        add(os_avx512 && x.has_avx512f(), "avx512f");
        add(os_avx512 && x.has_avx512cd(), "avx512cd");
        add(os_avx512 && x.has_avx512bw(), "avx512bw");
        add(os_avx512 && x.has_avx512dq(), "avx512dq");
        add(os_avx512 && x.has_avx512vl(), "avx512vl");
        add(os_avx512 && x.has_avx512vbmi(), "avx512_vbmi");
        add(os_avx512 && x.has_avx512vnni(), "avx512_vnni");
        add(os_avx512 && x.has_avx512_bf16(), "avx512_bf16");
        add(os_avx && x.has_avx_vnni(), "avx_vnni");
        add(os_amx && x.has_amx_tile(), "amx_tile");
        add(os_amx && x.has_amx_int8(), "amx_int8");
        add(os_amx && x.has_amx_bf16(), "amx_bf16");
    }
    let features = feats.into_iter().map(String::from).collect();

    let mut caches = caches_from_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache"));
    if caches == (0, 0, 0) {
        caches = cpuid_caches(&cpuid);
    }
    IsaInfo {
        uarch: uarch_name(&vendor, family, model).to_string(),
        vendor,
        brand,
        family,
        model,
        stepping,
        features,
        caches,
    }
}

/// Cache sizes from CPUID leaf 4 (Intel) / 0x8000001D (AMD), for non-Linux hosts.
#[cfg(target_arch = "x86_64")]
fn cpuid_caches(cpuid: &raw_cpuid::CpuId<raw_cpuid::CpuIdReaderNative>) -> (u32, u32, u32) {
    use raw_cpuid::CacheType;
    let (mut l1d, mut l2, mut l3) = (0, 0, 0);
    if let Some(params) = cpuid.get_cache_parameters() {
        for c in params {
            let kb = (c.associativity()
                * c.physical_line_partitions()
                * c.coherency_line_size()
                * c.sets()
                / 1024) as u32;
            match (c.level(), c.cache_type()) {
                (1, CacheType::Data | CacheType::Unified) => l1d = kb,
                (2, CacheType::Data | CacheType::Unified) => l2 = kb,
                (3, CacheType::Data | CacheType::Unified) => l3 = kb,
                _ => {}
            }
        }
    }
    (l1d, l2, l3)
}

/// Non-x86: identity from /proc/cpuinfo, features from its "Features" line with
/// getauxval(AT_HWCAP) as fallback.
#[cfg(not(target_arch = "x86_64"))]
fn isa_info() -> IsaInfo {
    let text = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let p = parse_cpuinfo(&text);
    let implementer = p.cpu_implementer.unwrap_or(0);
    let part = p.cpu_part.unwrap_or(0);
    let mut features = features_from_linux_flags(&p.flags);
    if features.is_empty() {
        features = hwcap_features();
    }
    let uarch = if p.cpu_implementer.is_some() {
        arm_uarch_name(implementer, part)
    } else if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        "apple"
    } else {
        "unknown"
    };
    let vendor = p.vendor_id.clone().unwrap_or_else(|| {
        if p.cpu_implementer.is_some() {
            arm_vendor(implementer).to_string()
        } else if uarch == "apple" {
            "Apple".to_string()
        } else {
            String::new()
        }
    });
    IsaInfo {
        vendor,
        brand: p.model_name.clone().unwrap_or_default(),
        family: p.cpu_family.unwrap_or(implementer),
        model: p.model.unwrap_or(part),
        stepping: p.stepping.or(p.cpu_revision).unwrap_or(0),
        uarch: uarch.to_string(),
        features,
        caches: caches_from_sysfs(Path::new("/sys/devices/system/cpu/cpu0/cache")),
    }
}

/// aarch64 Linux HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h).
#[cfg(all(
    not(target_arch = "x86_64"),
    target_arch = "aarch64",
    target_os = "linux"
))]
fn hwcap_features() -> Vec<String> {
    // SAFETY: getauxval only reads the process auxiliary vector.
    let (h1, h2) = unsafe {
        (
            libc::getauxval(libc::AT_HWCAP),
            libc::getauxval(libc::AT_HWCAP2),
        )
    };
    let mut out = Vec::new();
    let mut add = |c: bool, n: &str| {
        if c {
            out.push(n.to_string())
        }
    };
    add(h1 & (1 << 1) != 0, "neon"); // ASIMD
    add(h1 & (1 << 10) != 0, "fp16"); // ASIMDHP
    add(h1 & (1 << 20) != 0, "dotprod"); // ASIMDDP
    add(h1 & (1 << 22) != 0, "sve");
    add(h2 & (1 << 1) != 0, "sve2");
    add(h2 & (1 << 13) != 0, "i8mm");
    add(h2 & (1 << 23) != 0, "sme");
    out
}

/// Apple Silicon: every M-series core has NEON, FP16 and dot-product; no SVE.
#[cfg(all(
    not(target_arch = "x86_64"),
    target_arch = "aarch64",
    not(target_os = "linux")
))]
fn hwcap_features() -> Vec<String> {
    ["neon", "fp16", "dotprod"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn hwcap_features() -> Vec<String> {
    Vec::new()
}

/// Probe the host CPU. Never fails: unknown values come back as 0/""/"unknown".
pub fn detect() -> CpuInfo {
    let isa = isa_info();
    let logical = online_count().max(1);
    let affinity = affinity_count().clamp(1, logical);
    let physical = physical_cores_from_sysfs(Path::new("/sys/devices/system/cpu"))
        .or_else(|| {
            fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|t| parse_cpuinfo(&t).physical_cores)
        })
        .unwrap_or(logical)
        .clamp(1, logical);
    let x86_64_level = if cfg!(target_arch = "x86_64") {
        x86_64_level(&isa.features).max(1)
    } else {
        0
    };
    CpuInfo {
        vendor: isa.vendor,
        brand: isa.brand,
        family: isa.family,
        model: isa.model,
        stepping: isa.stepping,
        uarch: isa.uarch,
        x86_64_level,
        features: isa.features,
        physical_cores: physical,
        logical_cores: logical,
        affinity_cores: affinity,
        l1d_kb: isa.caches.0,
        l2_kb: isa.caches.1,
        l3_kb: isa.caches.2,
    }
}

/// Map llama.cpp's `llama_print_system_info()` item names to our vocabulary.
fn llama_feature_name(item: &str) -> Option<&'static str> {
    Some(match item {
        "SSE3" => "sse3",
        "SSSE3" => "ssse3",
        "AVX" => "avx",
        "AVX2" => "avx2",
        "AVX_VNNI" => "avx_vnni",
        "F16C" => "f16c",
        "FMA" => "fma",
        "BMI2" => "bmi2",
        "AVX512" => "avx512f",
        "AVX512_VBMI" => "avx512_vbmi",
        "AVX512_VNNI" => "avx512_vnni",
        "AVX512_BF16" => "avx512_bf16",
        "AMX_INT8" => "amx_int8",
        "NEON" => "neon",
        "FP16_VA" => "fp16",
        "DOTPROD" => "dotprod",
        "MATMUL_INT8" => "i8mm",
        "SVE" => "sve",
        "SME" => "sme",
        _ => return None,
    })
}

/// ISA features a llama.cpp build was compiled with, parsed from
/// `llama_print_system_info()` ("CPU : SSE3 = 1 | AVX = 1 | ... |"). Items set to
/// anything but 1, and non-ISA items (LLAMAFILE, OPENMP, REPACK, CUDA ARCHS), are dropped.
pub fn build_features(system_info: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in system_info.split('|') {
        // A backend name may prefix the first item of its section: "CPU : SSE3 = 1".
        let item = item.rsplit_once(" : ").map_or(item, |(_, rest)| rest);
        let Some((name, value)) = item.split_once('=') else {
            continue;
        };
        if value.trim() != "1" {
            continue;
        }
        if let Some(f) = llama_feature_name(name.trim()) {
            if !out.iter().any(|o| o == f) {
                out.push(f.to_string());
            }
        }
    }
    out
}

/// Which prebuilt library variant fits this CPU best.
pub fn best_variant(cpu: &CpuInfo) -> &'static str {
    let has = |f: &str| cpu.features.iter().any(|x| x == f);
    if cpu.x86_64_level > 0 {
        match cpu.x86_64_level {
            4 => "x86-64-v4",
            3 => "x86-64-v3",
            2 => "x86-64-v2",
            _ => "x86-64",
        }
    } else if has("neon") || cfg!(target_arch = "aarch64") {
        if has("sve") {
            "aarch64-sve"
        } else if has("dotprod") {
            "aarch64-dotprod"
        } else {
            "aarch64"
        }
    } else {
        "generic"
    }
}

/// SIMD features whose absence from a build costs real speed.
const SPEED_FEATURES: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "dotprod",
    "sve",
];

/// A human warning when the CPU has SIMD features the llama.cpp build does not use.
pub fn build_warning(cpu: &CpuInfo, build: &[String]) -> Option<String> {
    let missing: Vec<String> = SPEED_FEATURES
        .iter()
        .filter(|f| cpu.features.iter().any(|x| x == *f) && !build.iter().any(|b| b == *f))
        .map(|f| f.to_ascii_uppercase())
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "this CPU supports {} but this build of llama.cpp uses none of them; \
         rebuild with RUSTFLAGS=\"-C target-cpu=native\" for a faster library",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn uarch_table() {
        let cases: &[(&str, u32, u32, &str)] = &[
            ("AuthenticAMD", 0x17, 0x01, "zen"),
            ("AuthenticAMD", 0x17, 0x08, "zen+"),
            ("AuthenticAMD", 0x17, 0x18, "zen+"),
            ("AuthenticAMD", 0x17, 0x31, "zen2"),
            ("AuthenticAMD", 0x17, 0x71, "zen2"),
            ("AuthenticAMD", 0x19, 0x01, "zen3"),
            ("AuthenticAMD", 0x19, 0x21, "zen3"),
            ("AuthenticAMD", 0x19, 0x44, "zen3"),
            ("AuthenticAMD", 0x19, 0x11, "zen4"),
            ("AuthenticAMD", 0x19, 0x61, "zen4"),
            ("AuthenticAMD", 0x19, 0xa0, "zen4"),
            ("AuthenticAMD", 0x1a, 0x44, "zen5"),
            ("GenuineIntel", 6, 0x3c, "haswell"),
            ("GenuineIntel", 6, 0x4f, "broadwell"),
            ("GenuineIntel", 6, 0x5e, "skylake"),
            ("GenuineIntel", 6, 0x55, "skylake-x"),
            ("GenuineIntel", 6, 0x9e, "kabylake"),
            ("GenuineIntel", 6, 0x6a, "icelake-server"),
            ("GenuineIntel", 6, 0x7e, "icelake"),
            ("GenuineIntel", 6, 0x8c, "tigerlake"),
            ("GenuineIntel", 6, 0x97, "alderlake"),
            ("GenuineIntel", 6, 0xb7, "raptorlake"),
            ("GenuineIntel", 6, 0x8f, "sapphirerapids"),
            ("GenuineIntel", 6, 0xcf, "emeraldrapids"),
            ("GenuineIntel", 6, 0xaa, "meteorlake"),
            ("GenuineIntel", 6, 0xc6, "arrowlake"),
            ("GenuineIntel", 6, 0xbd, "lunarlake"),
            ("intel", 6, 0x55, "skylake-x"),
            ("GenuineIntel", 6, 0x01, "unknown"),
            ("GenuineIntel", 0x13, 0x01, "unknown"),
            ("AuthenticAMD", 0x17, 0xff, "unknown"),
            ("CentaurHauls", 6, 0x0f, "unknown"),
            ("", 0, 0, "unknown"),
        ];
        for &(v, f, m, want) in cases {
            assert_eq!(uarch_name(v, f, m), want, "{v} {f:#x} {m:#x}");
        }
        assert_eq!(arm_uarch_name(0x41, 0xd0c), "neoverse-n1");
        assert_eq!(arm_uarch_name(0x41, 0xd4f), "neoverse-v2");
        assert_eq!(arm_uarch_name(0x61, 0x022), "apple");
        assert_eq!(arm_uarch_name(0x41, 0x123), "unknown");
    }

    #[test]
    fn family_model_combination() {
        // Zen 3 Milan: base family 0xF + ext 0xA = 0x19, model ext 0 base 1.
        assert_eq!(display_family_model(0xf, 0xa, 0x1, 0x0), (0x19, 0x01));
        // Intel Sapphire Rapids: family 6, ext model 8, base model 0xF.
        assert_eq!(display_family_model(0x6, 0x0, 0xf, 0x8), (6, 0x8f));
        // Family 5 (Pentium): extended fields ignored.
        assert_eq!(display_family_model(0x5, 0x3, 0x4, 0x2), (5, 4));
    }

    #[test]
    fn levels() {
        let v1 = ["sse", "sse2"];
        let v2 = [
            "sse", "sse2", "cx16", "lahf", "popcnt", "sse3", "sse4_1", "sse4_2", "ssse3",
        ];
        let mut v3: Vec<&str> = v2.to_vec();
        v3.extend([
            "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "osxsave",
        ]);
        let mut v4 = v3.clone();
        v4.extend(["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]);
        assert_eq!(x86_64_level::<&str>(&[]), 0);
        assert_eq!(x86_64_level(&["neon", "dotprod"]), 0);
        assert_eq!(x86_64_level(&v1), 1);
        assert_eq!(x86_64_level(&v2), 2);
        assert_eq!(x86_64_level(&v3), 3);
        assert_eq!(x86_64_level(&v4), 4);
        // AVX-512 without v3 (never real, but the levels nest).
        let mut odd = v2.to_vec();
        odd.extend(["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]);
        assert_eq!(x86_64_level(&odd), 2);
        let no_movbe: Vec<&str> = v4.iter().copied().filter(|f| *f != "movbe").collect();
        assert_eq!(x86_64_level(&no_movbe), 2);
    }

    const X86_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Gold 6230\nstepping\t: 7\n\
        physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 avx avx2 abm lahf_lm avx512f\n\n\
        processor\t: 1\nvendor_id\t: GenuineIntel\nphysical id\t: 0\ncore id\t\t: 0\n\n\
        processor\t: 2\nphysical id\t: 0\ncore id\t\t: 1\n\nprocessor\t: 3\nphysical id\t: 1\ncore id\t\t: 0\n";

    const ARM_CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 50.00\n\
        Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs sve i8mm\n\
        CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\nCPU revision\t: 1\n\n\
        processor\t: 1\nCPU implementer\t: 0x41\nCPU part\t: 0xd40\n";

    #[test]
    fn parse_x86_cpuinfo() {
        let p = parse_cpuinfo(X86_CPUINFO);
        assert_eq!(p.processors, 4);
        assert_eq!(p.vendor_id.as_deref(), Some("GenuineIntel"));
        assert_eq!(p.model_name.as_deref(), Some("Intel(R) Xeon(R) Gold 6230"));
        assert_eq!(
            (p.cpu_family, p.model, p.stepping),
            (Some(6), Some(85), Some(7))
        );
        assert_eq!(p.physical_cores, Some(3));
        let f = features_from_linux_flags(&p.flags);
        for want in ["sse3", "ssse3", "avx", "avx2", "lzcnt", "lahf", "avx512f"] {
            assert!(f.contains(&want.to_string()), "{want} in {f:?}");
        }
        assert!(!f.contains(&"fpu".to_string()));
    }

    #[test]
    fn parse_arm_cpuinfo() {
        let p = parse_cpuinfo(ARM_CPUINFO);
        assert_eq!(p.processors, 2);
        assert_eq!((p.cpu_implementer, p.cpu_part), (Some(0x41), Some(0xd40)));
        assert_eq!(arm_uarch_name(0x41, p.cpu_part.unwrap()), "neoverse-v1");
        let f = features_from_linux_flags(&p.flags);
        assert_eq!(f, strings(&["neon", "fp16", "dotprod", "sve", "i8mm"]));
    }

    #[test]
    fn parse_garbage_cpuinfo() {
        let p = parse_cpuinfo("\0\u{fffd}:::\nmodel : zz\ncpu family:\n");
        assert_eq!(p.processors, 0);
        assert_eq!(p.model, None);
        assert_eq!(parse_cpuinfo(""), ProcCpuinfo::default());
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("0"), vec![0]);
        assert!(parse_cpu_list("").is_empty());
        assert!(parse_cpu_list("5-2,x").is_empty());
        assert_eq!(parse_cache_size_kb("32768K"), Some(32768));
        assert_eq!(parse_cache_size_kb("2M"), Some(2048));
    }

    #[test]
    fn sysfs_fixtures() {
        let dir = std::env::temp_dir().join(format!("hw-cpu-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let topo = |cpu: u32, pkg: &str, core: &str, online: Option<&str>| {
            let d = dir.join(format!("cpu{cpu}"));
            fs::create_dir_all(d.join("topology")).unwrap();
            fs::write(d.join("topology/physical_package_id"), pkg).unwrap();
            fs::write(d.join("topology/core_id"), core).unwrap();
            if let Some(o) = online {
                fs::write(d.join("online"), o).unwrap();
            }
        };
        // 2 packages x 2 cores x SMT2, plus one offline CPU on a new core.
        for (i, (p, c)) in [
            (0, 0),
            (0, 0),
            (0, 1),
            (0, 1),
            (1, 0),
            (1, 0),
            (1, 1),
            (1, 1),
        ]
        .iter()
        .enumerate()
        {
            topo(i as u32, &p.to_string(), &c.to_string(), Some("1"));
        }
        topo(8, "1", "7", Some("0"));
        fs::create_dir_all(dir.join("cpufreq")).unwrap();
        assert_eq!(physical_cores_from_sysfs(&dir), Some(4));

        let cache = dir.join("cpu0/cache");
        for (i, level, ty, size) in [
            (0, "1", "Data", "48K"),
            (1, "1", "Instruction", "32K"),
            (2, "2", "Unified", "2048K"),
            (3, "3", "Unified", "105M"),
        ] {
            let d = cache.join(format!("index{i}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("level"), level).unwrap();
            fs::write(d.join("type"), ty).unwrap();
            fs::write(d.join("size"), size).unwrap();
        }
        assert_eq!(caches_from_sysfs(&cache), (48, 2048, 105 * 1024));
        assert_eq!(physical_cores_from_sysfs(&dir.join("nope")), None);
        assert_eq!(caches_from_sysfs(&dir.join("nope")), (0, 0, 0));
        let _ = fs::remove_dir_all(&dir);
    }

    /// Detection must agree with the kernel's view of this machine.
    #[test]
    #[cfg(target_os = "linux")]
    fn matches_proc_cpuinfo() {
        let text = fs::read_to_string("/proc/cpuinfo").unwrap();
        let p = parse_cpuinfo(&text);
        let cpu = detect();
        assert!(
            cpu.logical_cores == p.processors || cpu.logical_cores == cpu.affinity_cores,
            "logical {} vs {} processor lines",
            cpu.logical_cores,
            p.processors
        );
        assert!(cpu.affinity_cores >= 1 && cpu.affinity_cores <= cpu.logical_cores);
        assert!(cpu.physical_cores >= 1 && cpu.physical_cores <= cpu.logical_cores);
        if let Some(n) = p.physical_cores {
            assert_eq!(cpu.physical_cores, n.min(cpu.logical_cores));
        }
        let kernel = features_from_linux_flags(&p.flags);
        // osxsave is inferred from "xsave" on the kernel side, so compare the rest.
        for f in FEATURE_VOCABULARY.iter().filter(|f| **f != "osxsave") {
            let ours = cpu.features.iter().any(|x| x == f);
            let theirs = kernel.iter().any(|x| x == f);
            assert_eq!(
                ours, theirs,
                "feature {f}: cpuid {ours}, /proc/cpuinfo {theirs}"
            );
        }
        if cfg!(target_arch = "x86_64") {
            assert_eq!(Some(cpu.vendor.as_str()), p.vendor_id.as_deref());
            assert_eq!(Some(cpu.brand.as_str()), p.model_name.as_deref());
            assert_eq!(Some(cpu.family), p.cpu_family);
            assert_eq!(Some(cpu.model), p.model);
            assert_eq!(Some(cpu.stepping), p.stepping);
            assert!(cpu.x86_64_level >= 1);
            assert_eq!(cpu.x86_64_level, x86_64_level(&kernel).max(1));
            assert_eq!(
                cpu.uarch,
                uarch_name(p.vendor_id.as_deref().unwrap_or(""), cpu.family, cpu.model)
            );
        } else {
            assert_eq!(cpu.x86_64_level, 0);
        }
    }

    #[test]
    fn build_features_parsing() {
        let s =
            "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | \
                 AVX512 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |";
        assert_eq!(
            build_features(s),
            strings(&["sse3", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2", "avx512f"])
        );
        let s = "CPU : SSE3 = 1 | AVX = 0 | AVX_VNNI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | \
                 AMX_INT8 = 1 | OPENMP = 1 | CUDA : ARCHS = 890 | USE_GRAPHS = 1 |";
        assert_eq!(
            build_features(s),
            strings(&["sse3", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_int8"])
        );
        let s = "CPU : NEON = 1 | ARM_FMA = 1 | FP16_VA = 1 | MATMUL_INT8 = 1 | DOTPROD = 1 | \
                 SVE = 1 | SVE_CNT = 16 | OPENMP = 1 |";
        assert_eq!(
            build_features(s),
            strings(&["neon", "fp16", "i8mm", "dotprod", "sve"])
        );
        assert!(build_features("").is_empty());
        assert!(build_features("CPU : LLAMAFILE = 1 | garbage | = | AVX2 = yes |").is_empty());
    }

    fn fake_cpu(features: &[&str]) -> CpuInfo {
        CpuInfo {
            vendor: "GenuineIntel".into(),
            brand: String::new(),
            family: 6,
            model: 0x8f,
            stepping: 0,
            uarch: "sapphirerapids".into(),
            x86_64_level: x86_64_level(features),
            features: strings(features),
            physical_cores: 1,
            logical_cores: 1,
            affinity_cores: 1,
            l1d_kb: 0,
            l2_kb: 0,
            l3_kb: 0,
        }
    }

    #[test]
    fn build_warnings() {
        let cpu = fake_cpu(&["sse", "sse2", "sse3", "avx", "avx2", "fma", "f16c"]);
        let w = build_warning(&cpu, &strings(&["sse3"])).unwrap();
        assert!(w.contains("AVX, AVX2, FMA, F16C"), "{w}");
        assert!(w.contains("target-cpu=native"));
        assert_eq!(
            build_warning(&cpu, &strings(&["sse3", "avx", "avx2", "fma", "f16c"])),
            None
        );
        // Non-speed features missing from the build do not warn.
        let cpu = fake_cpu(&["sse", "sse2", "sse3", "bmi2"]);
        assert_eq!(build_warning(&cpu, &[]), None);
        let arm = fake_cpu(&["neon", "dotprod", "sve"]);
        let w = build_warning(&arm, &strings(&["neon"])).unwrap();
        assert!(w.contains("DOTPROD, SVE"), "{w}");
        let w = build_warning(
            &fake_cpu(&["avx512f", "avx512_vnni"]),
            &strings(&["avx512f"]),
        );
        assert!(w.unwrap().contains("AVX512_VNNI"));
    }

    #[test]
    fn variants() {
        let v3 = [
            "sse", "sse2", "cx16", "lahf", "popcnt", "sse3", "sse4_1", "sse4_2", "ssse3", "avx",
            "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "osxsave",
        ];
        assert_eq!(best_variant(&fake_cpu(&v3)), "x86-64-v3");
        assert_eq!(best_variant(&fake_cpu(&["sse", "sse2"])), "x86-64");
        assert_eq!(best_variant(&fake_cpu(&["neon"])), "aarch64");
        assert_eq!(
            best_variant(&fake_cpu(&["neon", "dotprod"])),
            "aarch64-dotprod"
        );
        assert_eq!(
            best_variant(&fake_cpu(&["neon", "dotprod", "sve"])),
            "aarch64-sve"
        );
        let host = detect();
        let v = best_variant(&host);
        if cfg!(target_arch = "x86_64") {
            assert!(v.starts_with("x86-64"), "{v}");
        }
    }
}
