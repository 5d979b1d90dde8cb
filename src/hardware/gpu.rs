//! GPU discovery through the vendor driver libraries, loaded at run time with
//! dlopen so that no GPU SDK is needed to build or run this crate.
//!
//! Contract: a missing library means `Ok(vec![])`; a library that is present but
//! fails (missing symbol, init error) means `Err(reason)` for the probe notes.
//! Nothing here panics on driver misbehavior; every pointer is null-checked.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// One GPU as a backend driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// "cuda" | "vulkan" | "metal".
    pub backend: String,
    /// Device ordinal within its backend.
    pub index: u32,
    pub name: String,
    /// Device-local memory in bytes.
    pub total_bytes: u64,
    /// Free device memory, when the backend can tell without side effects we refuse.
    pub free_bytes: Option<u64>,
    /// CUDA "8.9".
    pub compute_capability: Option<String>,
    /// "discrete" | "integrated" | "virtual" | "cpu" | "other".
    pub device_type: Option<String>,
    /// Driver version string.
    pub driver: Option<String>,
}

/// A dlopen'ed library. Deliberately never dlclose'd: GPU drivers start threads
/// and register exit handlers, and unloading them under those crashes at exit.
struct Lib {
    handle: *mut c_void,
    name: String,
}

impl Lib {
    /// First of `names` that loads, or None when none does.
    #[cfg(unix)]
    fn open(names: &[&str]) -> Option<Lib> {
        for name in names {
            let Ok(c) = std::ffi::CString::new(*name) else {
                continue;
            };
            // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if !handle.is_null() {
                return Some(Lib {
                    handle,
                    name: name.to_string(),
                });
            }
        }
        None
    }

    /// No dlopen in libc on this platform (Windows): report every library as missing.
    #[cfg(not(unix))]
    fn open(_names: &[&str]) -> Option<Lib> {
        None
    }

    /// Address of `sym`, or Err naming it.
    #[cfg(unix)]
    fn sym(&self, sym: &CStr) -> Result<*mut c_void, String> {
        // SAFETY: handle came from a successful dlopen and is never closed.
        let p = unsafe { libc::dlsym(self.handle, sym.as_ptr()) };
        if p.is_null() {
            Err(format!(
                "{}: missing symbol {}",
                self.name,
                sym.to_string_lossy()
            ))
        } else {
            Ok(p)
        }
    }

    #[cfg(not(unix))]
    fn sym(&self, sym: &CStr) -> Result<*mut c_void, String> {
        let _ = self.handle;
        Err(format!(
            "{}: missing symbol {}",
            self.name,
            sym.to_string_lossy()
        ))
    }
}

/// Reinterpret a non-null symbol address as a function pointer of type `F`.
///
/// # Safety
/// `F` must be an `extern` fn pointer type matching the symbol's real signature.
unsafe fn as_fn<F: Copy>(p: *mut c_void) -> F {
    debug_assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: caller guarantees F is a fn pointer type of the symbol's signature;
    // p is non-null (checked by Lib::sym / callers).
    unsafe { std::mem::transmute_copy(&p) }
}

/// Text up to the first NUL in `buf` (lossy), trimmed.
fn c_buf_to_string(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_string()
}

// ---------------------------------------------------------------- CUDA

/// Default driver-library names for the CUDA driver API.
pub const CUDA_LIBS: &[&str] = if cfg!(windows) {
    &["nvcuda.dll"]
} else {
    &["libcuda.so.1", "libcuda.so"]
};

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;

const CU_DEVICE_ATTRIBUTE_INTEGRATED: c_int = 18;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;

/// CUDA GPUs via the system's driver library.
pub fn probe_cuda() -> Result<Vec<GpuInfo>, String> {
    probe_cuda_with(CUDA_LIBS)
}

/// CUDA GPUs via the first library in `lib_names` that loads (tests pass bogus names).
pub fn probe_cuda_with(lib_names: &[&str]) -> Result<Vec<GpuInfo>, String> {
    let Some(lib) = Lib::open(lib_names) else {
        return Ok(Vec::new());
    };
    // SAFETY: each type below is the driver API's documented C signature
    // (cuda.h, CUDA 4.0+ for the _v2 entry points; CUresult/CUdevice are int).
    unsafe {
        let cu_init: unsafe extern "C" fn(c_uint) -> CuResult = as_fn(lib.sym(c"cuInit")?);
        let get_count: unsafe extern "C" fn(*mut c_int) -> CuResult =
            as_fn(lib.sym(c"cuDeviceGetCount")?);
        let device_get: unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult =
            as_fn(lib.sym(c"cuDeviceGet")?);
        let get_name: unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult =
            as_fn(lib.sym(c"cuDeviceGetName")?);
        let total_mem: unsafe extern "C" fn(*mut usize, CuDevice) -> CuResult =
            as_fn(lib.sym(c"cuDeviceTotalMem_v2")?);
        let get_attr: unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult =
            as_fn(lib.sym(c"cuDeviceGetAttribute")?);
        // Optional: free memory needs a context, which some setups refuse.
        let ctx_create: Option<unsafe extern "C" fn(*mut CuContext, c_uint, CuDevice) -> CuResult> =
            lib.sym(c"cuCtxCreate_v2").ok().map(|p| as_fn(p));
        let mem_info: Option<unsafe extern "C" fn(*mut usize, *mut usize) -> CuResult> =
            lib.sym(c"cuMemGetInfo_v2").ok().map(|p| as_fn(p));
        let ctx_destroy: Option<unsafe extern "C" fn(CuContext) -> CuResult> =
            lib.sym(c"cuCtxDestroy_v2").ok().map(|p| as_fn(p));
        let driver_version: Option<unsafe extern "C" fn(*mut c_int) -> CuResult> =
            lib.sym(c"cuDriverGetVersion").ok().map(|p| as_fn(p));

        let rc = cu_init(0);
        if rc == 100 {
            // CUDA_ERROR_NO_DEVICE: driver installed, no GPU. Not a failure.
            return Ok(Vec::new());
        }
        if rc != 0 {
            return Err(format!("cuda: cuInit failed with CUresult {rc}"));
        }
        let driver = driver_version.and_then(|f| {
            let mut v: c_int = 0;
            (f(&mut v) == 0 && v > 0).then(|| format!("CUDA {}.{}", v / 1000, (v % 1000) / 10))
        });
        let mut count: c_int = 0;
        let rc = get_count(&mut count);
        if rc != 0 {
            return Err(format!("cuda: cuDeviceGetCount failed with CUresult {rc}"));
        }
        let mut out = Vec::new();
        for ordinal in 0..count.max(0) {
            let mut dev: CuDevice = 0;
            if device_get(&mut dev, ordinal) != 0 {
                continue;
            }
            let mut name = [0u8; 256];
            if get_name(name.as_mut_ptr().cast(), name.len() as c_int, dev) != 0 {
                name[0] = 0;
            }
            let mut total: usize = 0;
            if total_mem(&mut total, dev) != 0 {
                total = 0;
            }
            let attr = |a: c_int| {
                let mut v: c_int = 0;
                (get_attr(&mut v, a, dev) == 0).then_some(v)
            };
            let cc = match (
                attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
            ) {
                (Some(a), Some(b)) => Some(format!("{a}.{b}")),
                _ => None,
            };
            let device_type = attr(CU_DEVICE_ATTRIBUTE_INTEGRATED)
                .map(|i| if i != 0 { "integrated" } else { "discrete" }.to_string());
            let mut free_bytes = None;
            if let (Some(create), Some(info), Some(destroy)) = (ctx_create, mem_info, ctx_destroy) {
                let mut ctx: CuContext = std::ptr::null_mut();
                if create(&mut ctx, 0, dev) == 0 && !ctx.is_null() {
                    let (mut free, mut tot) = (0usize, 0usize);
                    if info(&mut free, &mut tot) == 0 {
                        free_bytes = Some(free as u64);
                    }
                    destroy(ctx);
                }
            }
            out.push(GpuInfo {
                backend: "cuda".into(),
                index: ordinal as u32,
                name: c_buf_to_string(&name),
                total_bytes: total as u64,
                free_bytes,
                compute_capability: cc,
                device_type,
                driver: driver.clone(),
            });
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- Vulkan

/// Default loader-library names for Vulkan.
pub const VULKAN_LIBS: &[&str] = if cfg!(windows) {
    &["vulkan-1.dll"]
} else if cfg!(target_os = "macos") {
    &["libvulkan.1.dylib", "libMoltenVK.dylib"]
} else {
    &["libvulkan.so.1", "libvulkan.so"]
};

type VkInstance = *mut c_void;
type VkPhysicalDevice = *mut c_void;
type VkResult = i32;
type PfnVoid = Option<unsafe extern "system" fn()>;
type PfnGetInstanceProcAddr = unsafe extern "system" fn(VkInstance, *const c_char) -> PfnVoid;

const VK_STRUCTURE_TYPE_APPLICATION_INFO: u32 = 0;
const VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO: u32 = 1;
const VK_INCOMPLETE: VkResult = 5;
const VK_API_VERSION_1_1: u32 = (1 << 22) | (1 << 12);
const VK_MEMORY_HEAP_DEVICE_LOCAL_BIT: u32 = 1;

#[repr(C)]
struct VkApplicationInfo {
    s_type: u32,
    p_next: *const c_void,
    p_application_name: *const c_char,
    application_version: u32,
    p_engine_name: *const c_char,
    engine_version: u32,
    api_version: u32,
}

#[repr(C)]
struct VkInstanceCreateInfo {
    s_type: u32,
    p_next: *const c_void,
    flags: u32,
    p_application_info: *const VkApplicationInfo,
    enabled_layer_count: u32,
    pp_enabled_layer_names: *const *const c_char,
    enabled_extension_count: u32,
    pp_enabled_extension_names: *const *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VkMemoryType {
    property_flags: u32,
    heap_index: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VkMemoryHeap {
    size: u64,
    flags: u32,
}

#[repr(C)]
struct VkPhysicalDeviceMemoryProperties {
    memory_type_count: u32,
    memory_types: [VkMemoryType; 32],
    memory_heap_count: u32,
    memory_heaps: [VkMemoryHeap; 16],
}

/// VkPhysicalDeviceProperties is 824 bytes on 64-bit targets; we only read its
/// fixed-offset head, so a larger 8-aligned zeroed buffer stands in for it.
#[repr(C, align(8))]
struct PropsBuf([u8; 1024]);

/// Offsets within VkPhysicalDeviceProperties (all u32 before the name).
const OFF_API_VERSION: usize = 0;
const OFF_DRIVER_VERSION: usize = 4;
const OFF_VENDOR_ID: usize = 8;
const OFF_DEVICE_TYPE: usize = 16;
const OFF_DEVICE_NAME: usize = 20;
const DEVICE_NAME_LEN: usize = 256;

fn u32_at(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
}

/// Decode a driverVersion: NVIDIA and Intel-on-Windows use their own packing.
pub fn vulkan_driver_version(vendor_id: u32, v: u32) -> String {
    match vendor_id {
        0x10de => format!("{}.{}.{}", v >> 22, (v >> 14) & 0xff, (v >> 6) & 0xff),
        0x8086 if cfg!(windows) => format!("{}.{}", v >> 14, v & 0x3fff),
        _ => format!("{}.{}.{}", v >> 22, (v >> 12) & 0x3ff, v & 0xfff),
    }
}

fn vk_device_type(t: u32) -> &'static str {
    match t {
        1 => "integrated",
        2 => "discrete",
        3 => "virtual",
        4 => "cpu",
        _ => "other",
    }
}

/// Vulkan physical devices via the system loader.
pub fn probe_vulkan() -> Result<Vec<GpuInfo>, String> {
    probe_vulkan_with(VULKAN_LIBS)
}

/// Vulkan physical devices via the first loader in `lib_names` that loads.
/// CPU rasterizers (llvmpipe, SwiftShader) are listed with device_type "cpu".
pub fn probe_vulkan_with(lib_names: &[&str]) -> Result<Vec<GpuInfo>, String> {
    let Some(lib) = Lib::open(lib_names) else {
        return Ok(Vec::new());
    };
    // SAFETY: function pointer types follow vulkan_core.h (VKAPI_CALL = "system");
    // every struct passed in is #[repr(C)] matching the header; out-buffers are
    // at least as large as the driver writes.
    unsafe {
        let gipa: PfnGetInstanceProcAddr = as_fn(lib.sym(c"vkGetInstanceProcAddr")?);
        let load = |inst: VkInstance, name: &CStr| -> Result<*mut c_void, String> {
            match gipa(inst, name.as_ptr()) {
                Some(f) => Ok(f as *mut c_void),
                None => Err(format!("vulkan: no {}", name.to_string_lossy())),
            }
        };
        type CreateInstance = unsafe extern "system" fn(
            *const VkInstanceCreateInfo,
            *const c_void,
            *mut VkInstance,
        ) -> VkResult;
        let create: CreateInstance = as_fn(load(std::ptr::null_mut(), c"vkCreateInstance")?);

        let app = VkApplicationInfo {
            s_type: VK_STRUCTURE_TYPE_APPLICATION_INFO,
            p_next: std::ptr::null(),
            p_application_name: c"tabagent".as_ptr(),
            application_version: 1,
            p_engine_name: c"tabagent".as_ptr(),
            engine_version: 1,
            api_version: VK_API_VERSION_1_1,
        };
        let info = VkInstanceCreateInfo {
            s_type: VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
            p_next: std::ptr::null(),
            flags: 0,
            p_application_info: &app,
            enabled_layer_count: 0,
            pp_enabled_layer_names: std::ptr::null(),
            enabled_extension_count: 0,
            pp_enabled_extension_names: std::ptr::null(),
        };
        let mut instance: VkInstance = std::ptr::null_mut();
        let rc = create(&info, std::ptr::null(), &mut instance);
        if rc != 0 || instance.is_null() {
            // VK_ERROR_INCOMPATIBLE_DRIVER (-9) is the usual "no ICD installed".
            return Err(format!(
                "vulkan: vkCreateInstance failed with VkResult {rc}"
            ));
        }
        let destroy: Option<unsafe extern "system" fn(VkInstance, *const c_void)> =
            load(instance, c"vkDestroyInstance").ok().map(|p| as_fn(p));
        let result = vulkan_devices(instance, &load);
        if let Some(d) = destroy {
            d(instance, std::ptr::null());
        }
        result
    }
}

/// Enumerate devices of a live instance.
///
/// # Safety
/// `instance` must be a valid VkInstance and `load` must resolve its commands.
unsafe fn vulkan_devices(
    instance: VkInstance,
    load: &dyn Fn(VkInstance, &CStr) -> Result<*mut c_void, String>,
) -> Result<Vec<GpuInfo>, String> {
    type Enumerate =
        unsafe extern "system" fn(VkInstance, *mut u32, *mut VkPhysicalDevice) -> VkResult;
    type GetProps = unsafe extern "system" fn(VkPhysicalDevice, *mut c_void);
    // SAFETY: the types match vulkan_core.h; buffers are sized for what the driver
    // writes (count-bounded array, 1024 >= 824-byte properties, exact memory struct).
    unsafe {
        let enumerate: Enumerate = as_fn(load(instance, c"vkEnumeratePhysicalDevices")?);
        let get_props: GetProps = as_fn(load(instance, c"vkGetPhysicalDeviceProperties")?);
        let get_mem: GetProps = as_fn(load(instance, c"vkGetPhysicalDeviceMemoryProperties")?);

        let mut count: u32 = 0;
        let rc = enumerate(instance, &mut count, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!(
                "vulkan: vkEnumeratePhysicalDevices failed with {rc}"
            ));
        }
        let mut devices: Vec<VkPhysicalDevice> = vec![std::ptr::null_mut(); count.min(64) as usize];
        let mut count = devices.len() as u32;
        let rc = enumerate(instance, &mut count, devices.as_mut_ptr());
        if rc != 0 && rc != VK_INCOMPLETE {
            return Err(format!(
                "vulkan: vkEnumeratePhysicalDevices failed with {rc}"
            ));
        }
        devices.truncate(count as usize);

        let mut out = Vec::new();
        for (i, &pd) in devices.iter().enumerate() {
            if pd.is_null() {
                continue;
            }
            let mut props = PropsBuf([0; 1024]);
            get_props(pd, props.0.as_mut_ptr().cast());
            let b = &props.0;
            let api = u32_at(b, OFF_API_VERSION);
            let vendor = u32_at(b, OFF_VENDOR_ID);
            let name = c_buf_to_string(&b[OFF_DEVICE_NAME..OFF_DEVICE_NAME + DEVICE_NAME_LEN]);

            // SAFETY: all-zero is a valid value of this plain-data struct.
            let mut mem: VkPhysicalDeviceMemoryProperties = std::mem::zeroed();
            get_mem(
                pd,
                (&mut mem as *mut VkPhysicalDeviceMemoryProperties).cast(),
            );
            let heaps = &mem.memory_heaps[..(mem.memory_heap_count as usize).min(16)];
            let total: u64 = heaps
                .iter()
                .filter(|h| h.flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT != 0)
                .map(|h| h.size)
                .sum();
            out.push(GpuInfo {
                backend: "vulkan".into(),
                index: i as u32,
                name,
                total_bytes: total,
                free_bytes: None,
                compute_capability: None,
                device_type: Some(vk_device_type(u32_at(b, OFF_DEVICE_TYPE)).into()),
                driver: Some(format!(
                    "Vulkan {}.{}.{}, driver {}",
                    api >> 22,
                    (api >> 12) & 0x3ff,
                    api & 0xfff,
                    vulkan_driver_version(vendor, u32_at(b, OFF_DRIVER_VERSION))
                )),
            });
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- all

/// Metal needs the Objective-C runtime; not probed yet (see module docs).
pub fn probe_metal() -> Result<Vec<GpuInfo>, String> {
    if cfg!(target_os = "macos") {
        Err("metal: device probing not implemented".into())
    } else {
        Ok(Vec::new())
    }
}

/// Every backend's devices plus one note per backend that failed.
pub fn probe_all_with_notes() -> (Vec<GpuInfo>, Vec<String>) {
    let mut gpus = Vec::new();
    let mut notes = Vec::new();
    for r in [probe_cuda(), probe_vulkan(), probe_metal()] {
        match r {
            Ok(g) => gpus.extend(g),
            Err(e) => notes.push(e),
        }
    }
    (gpus, notes)
}

/// Every GPU any backend can see; failures are silently empty.
pub fn probe_all() -> Vec<GpuInfo> {
    probe_all_with_notes().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libraries_mean_no_gpus() {
        let bogus = [
            "libdefinitely-not-cuda-h-hw.so.9",
            "/nonexistent/libcuda.so",
        ];
        assert_eq!(probe_cuda_with(&bogus), Ok(vec![]));
        assert_eq!(
            probe_vulkan_with(&["libdefinitely-not-vulkan-h-hw.so.1"]),
            Ok(vec![])
        );
        assert_eq!(probe_cuda_with(&[]), Ok(vec![]));
        // Interior NUL cannot be passed to dlopen: skipped, not a panic.
        assert_eq!(probe_cuda_with(&["lib\0cuda.so"]), Ok(vec![]));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn library_without_symbols_is_an_error_not_a_crash() {
        // libc loads fine but has no cuInit / vkGetInstanceProcAddr.
        let e = probe_cuda_with(&["libc.so.6"]).unwrap_err();
        assert!(e.contains("cuInit"), "{e}");
        let e = probe_vulkan_with(&["libc.so.6"]).unwrap_err();
        assert!(e.contains("vkGetInstanceProcAddr"), "{e}");
    }

    #[test]
    fn probe_all_does_not_panic() {
        let (gpus, notes) = probe_all_with_notes();
        for g in &gpus {
            assert!(["cuda", "vulkan", "metal"].contains(&g.backend.as_str()));
            assert!(g.free_bytes.is_none_or(|f| f <= g.total_bytes));
        }
        for n in &notes {
            assert!(!n.is_empty());
        }
        assert_eq!(probe_all().len(), gpus.len());
    }

    #[test]
    fn struct_layouts_match_vulkan_headers() {
        // Sizes from vulkan_core.h on LP64.
        assert_eq!(std::mem::size_of::<VkApplicationInfo>(), 48);
        assert_eq!(std::mem::size_of::<VkInstanceCreateInfo>(), 64);
        assert_eq!(std::mem::size_of::<VkPhysicalDeviceMemoryProperties>(), 520);
        assert!(std::mem::size_of::<PropsBuf>() >= 824);
    }

    #[test]
    fn version_decoding() {
        // NVIDIA 535.104.5 packs as 10.8.8.6 bits.
        let nv = (535 << 22) | (104 << 14) | (5 << 6);
        assert_eq!(vulkan_driver_version(0x10de, nv), "535.104.5");
        let mesa = (23 << 22) | (2 << 12) | 1;
        assert_eq!(vulkan_driver_version(0x1002, mesa), "23.2.1");
        assert_eq!(c_buf_to_string(b"NVIDIA H100\0garbage"), "NVIDIA H100");
        assert_eq!(c_buf_to_string(b"no nul"), "no nul");
    }
}
