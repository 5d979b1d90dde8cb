//! System memory, honoring container (cgroup v1/v2) limits.
//!
//! Everything reads from a root directory passed in, so tests can build fake
//! /proc and /sys trees; [`detect`] uses "/". Unreadable or malformed files are
//! treated as absent: this module never panics and never returns an error.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Memory sizes in bytes. `total_bytes`/`available_bytes` are what this process can
/// actually use (host values clipped by a cgroup limit); `host_*` are the machine's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub host_total_bytes: u64,
    pub host_available_bytes: u64,
    /// Smallest memory limit over this process's cgroup and its ancestors; None = unlimited.
    pub cgroup_limit_bytes: Option<u64>,
    pub swap_total_bytes: u64,
}

/// The /proc/meminfo values we use, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
}

/// Parse /proc/meminfo. None when MemTotal is missing. Kernels before 3.14 lack
/// MemAvailable, so it falls back to MemFree + Buffers + Cached.
pub fn parse_meminfo(text: &str) -> Option<Meminfo> {
    let mut total = None;
    let mut available = None;
    let mut swap_total = 0;
    let (mut free, mut buffers, mut cached) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some("kB") => n.saturating_mul(1024),
            _ => n,
        };
        match key.trim() {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "MemFree" => free = bytes,
            "Buffers" => buffers = bytes,
            "Cached" => cached = bytes,
            "SwapTotal" => swap_total = bytes,
            _ => {}
        }
    }
    let total = total?;
    let available =
        available.unwrap_or_else(|| free.saturating_add(buffers).saturating_add(cached));
    Some(Meminfo {
        total,
        available: available.min(total),
        swap_total,
    })
}

/// cgroup v1 reports "no limit" as a huge page-rounded number near i64::MAX.
const V1_UNLIMITED: u64 = 1 << 62;

/// Parse a cgroup limit file. Outer None = unreadable/garbage; Some(None) = unlimited.
pub fn parse_limit(text: &str) -> Option<Option<u64>> {
    let t = text.trim();
    if t == "max" {
        return Some(None);
    }
    let n: u64 = t.parse().ok()?;
    Some(if n >= V1_UNLIMITED { None } else { Some(n) })
}

/// What the cgroup hierarchy allows this process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupMemory {
    /// Smallest limit over all levels; None = unlimited (or no cgroup info).
    pub limit: Option<u64>,
    /// Smallest (limit - usage) over limited levels, usage minus reclaimable
    /// inactive file cache; None when no level has both a limit and a usage.
    pub headroom: Option<u64>,
}

impl CgroupMemory {
    fn merge_level(&mut self, limit: u64, usage: Option<u64>) {
        self.limit = Some(self.limit.map_or(limit, |l| l.min(limit)));
        if let Some(u) = usage {
            let h = limit.saturating_sub(u);
            self.headroom = Some(self.headroom.map_or(h, |x| x.min(h)));
        }
    }
}

/// Join a path from /proc/self/cgroup below `base` without letting ".." escape it
/// (paths outside our cgroup namespace show up as "/../..").
fn join_inside(base: &Path, rel: &str) -> PathBuf {
    let mut p = base.to_path_buf();
    for c in Path::new(rel).components() {
        if let Component::Normal(s) = c {
            p.push(s);
        }
    }
    p
}

fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok()
}

/// Value of `key` in a memory.stat file.
fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Walk from `base/rel` up to `base`, folding every level's limit into `acc`.
/// Missing directories are skipped: without a cgroup namespace the path names a
/// directory that is not mounted in the container, and its mount root is ours.
fn walk(
    acc: &mut CgroupMemory,
    base: &Path,
    rel: &str,
    limit_file: &str,
    usage_file: &str,
    inactive_key: &str,
) {
    if !base.is_dir() {
        return;
    }
    let mut dir = join_inside(base, rel);
    loop {
        if let Some(Some(limit)) = read(&dir.join(limit_file)).and_then(|t| parse_limit(&t)) {
            let usage = read(&dir.join(usage_file)).and_then(|t| t.trim().parse::<u64>().ok());
            let inactive = read(&dir.join("memory.stat"))
                .and_then(|s| stat_value(&s, inactive_key))
                .unwrap_or(0);
            acc.merge_level(limit, usage.map(|u| u.saturating_sub(inactive)));
        }
        if dir == base || !dir.pop() || !dir.starts_with(base) {
            break;
        }
    }
}

/// Memory limits from the cgroup hierarchy under `root` (v2 and v1; the tighter wins).
pub fn cgroup_memory(root: &Path) -> CgroupMemory {
    let mut acc = CgroupMemory::default();
    let Some(text) = read(&root.join("proc/self/cgroup")) else {
        return acc;
    };
    let cg = root.join("sys/fs/cgroup");
    for line in text.lines() {
        // "hierarchy-id:controllers:path"; the path may itself contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            // v2 unified hierarchy: pure v2 mounts at /sys/fs/cgroup, hybrid at .../unified.
            for base in [cg.clone(), cg.join("unified")] {
                walk(
                    &mut acc,
                    &base,
                    path,
                    "memory.max",
                    "memory.current",
                    "inactive_file",
                );
            }
        } else if ctrls.split(',').any(|c| c == "memory") {
            walk(
                &mut acc,
                &cg.join("memory"),
                path,
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
                "total_inactive_file",
            );
        }
    }
    acc
}

/// Combine host numbers with cgroup limits.
pub fn combine(host: Meminfo, cg: CgroupMemory) -> MemoryInfo {
    let total = match (host.total, cg.limit) {
        (0, Some(l)) => l,
        (h, Some(l)) => h.min(l),
        (h, None) => h,
    };
    let mut available = host.available;
    if let Some(h) = cg.headroom {
        available = if host.total == 0 { h } else { available.min(h) };
    }
    MemoryInfo {
        total_bytes: total,
        available_bytes: available.min(total),
        host_total_bytes: host.total,
        host_available_bytes: host.available,
        cgroup_limit_bytes: cg.limit,
        swap_total_bytes: host.swap_total,
    }
}

/// Memory as seen from a (possibly fake) root directory: `root`/proc/meminfo,
/// `root`/proc/self/cgroup and `root`/sys/fs/cgroup.
pub fn detect_at(root: &Path) -> MemoryInfo {
    let host = read(&root.join("proc/meminfo"))
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or_default();
    combine(host, cgroup_memory(root))
}

/// Memory of this machine/container.
#[cfg(not(target_os = "macos"))]
pub fn detect() -> MemoryInfo {
    detect_at(Path::new("/"))
}

/// Memory of this Mac: hw.memsize, and free pages as "available" (an
/// underestimate: macOS also reclaims inactive and purgeable pages).
#[cfg(target_os = "macos")]
pub fn detect() -> MemoryInfo {
    fn sysctl_u64(name: &std::ffi::CStr) -> Option<u64> {
        let mut buf = [0u8; 8];
        let mut len: libc::size_t = buf.len();
        // SAFETY: name is NUL-terminated; buf is writable for `len` bytes and the
        // kernel writes at most `len` bytes, reporting how many in `len`.
        let rc = unsafe {
            libc::sysctlbyname(
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                &mut len,
                std::ptr::null_mut(),
                0,
            )
        };
        match (rc, len) {
            (0, 8) => Some(u64::from_ne_bytes(buf)),
            (0, 4) => Some(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as u64),
            _ => None,
        }
    }
    let total = sysctl_u64(c"hw.memsize").unwrap_or(0);
    let page = sysctl_u64(c"hw.pagesize").unwrap_or(4096);
    let free = sysctl_u64(c"vm.page_free_count").unwrap_or(0);
    combine(
        Meminfo {
            total,
            available: free.saturating_mul(page).min(total),
            swap_total: 0,
        },
        CgroupMemory::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A throwaway root directory with files written by the test.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Tree {
            let p = std::env::temp_dir().join(format!("hw-mem-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Tree(p)
        }
        fn write(&self, rel: &str, text: &str) -> &Self {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
            self
        }
        fn meminfo(&self, total_kb: u64, avail_kb: u64) -> &Self {
            self.write(
                "proc/meminfo",
                &format!(
                    "MemTotal:       {total_kb} kB\nMemFree:        1000 kB\n\
                     MemAvailable:   {avail_kb} kB\nSwapTotal:      2048 kB\n"
                ),
            )
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn meminfo_parsing() {
        let m = parse_meminfo(
            "MemTotal:       16384000 kB\nMemFree: 100 kB\nMemAvailable:   8192000 kB\n\
             SwapTotal:      1024 kB\n",
        )
        .unwrap();
        assert_eq!(m.total, 16384000 * 1024);
        assert_eq!(m.available, 8192000 * 1024);
        assert_eq!(m.swap_total, 1024 * 1024);
        // Old kernels: no MemAvailable.
        let m =
            parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 40 kB\n")
                .unwrap();
        assert_eq!(m.available, 150 * 1024);
        assert_eq!(parse_meminfo("garbage\n\0\nMemFree: x kB"), None);
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn limit_parsing() {
        assert_eq!(parse_limit("max\n"), Some(None));
        assert_eq!(parse_limit("4294967296\n"), Some(Some(4 * GIB)));
        assert_eq!(parse_limit("9223372036854771712"), Some(None));
        assert_eq!(parse_limit("lots"), None);
        assert_eq!(parse_limit(""), None);
    }

    #[test]
    fn cgroup_v2_limited() {
        let t = Tree::new("v2");
        t.meminfo(16 * 1024 * 1024, 12 * 1024 * 1024)
            .write("proc/self/cgroup", "0::/app.slice/job\n")
            .write("sys/fs/cgroup/app.slice/job/memory.max", "4294967296\n")
            .write("sys/fs/cgroup/app.slice/job/memory.current", "1073741824\n")
            .write(
                "sys/fs/cgroup/app.slice/job/memory.stat",
                "anon 1\ninactive_file 536870912\nactive_file 3\n",
            );
        let m = detect_at(&t.0);
        assert_eq!(m.total_bytes, 4 * GIB);
        assert_eq!(m.cgroup_limit_bytes, Some(4 * GIB));
        assert_eq!(m.host_total_bytes, 16 * GIB);
        assert_eq!(m.host_available_bytes, 12 * GIB);
        // 4 GiB limit - (1 GiB usage - 0.5 GiB reclaimable cache).
        assert_eq!(m.available_bytes, 4 * GIB - GIB / 2);
        assert_eq!(m.swap_total_bytes, 2048 * 1024);
    }

    #[test]
    fn cgroup_v2_unlimited() {
        let t = Tree::new("v2max");
        t.meminfo(8 * 1024 * 1024, 6 * 1024 * 1024)
            .write("proc/self/cgroup", "0::/user.slice\n")
            .write("sys/fs/cgroup/user.slice/memory.max", "max\n")
            .write("sys/fs/cgroup/user.slice/memory.current", "123456\n");
        let m = detect_at(&t.0);
        assert_eq!(m.cgroup_limit_bytes, None);
        assert_eq!(m.total_bytes, 8 * GIB);
        assert_eq!(m.available_bytes, 6 * GIB);
    }

    #[test]
    fn cgroup_v2_nested_parent_is_tighter() {
        let t = Tree::new("v2nest");
        t.meminfo(64 * 1024 * 1024, 60 * 1024 * 1024)
            .write("proc/self/cgroup", "0::/a/b/c\n")
            .write("sys/fs/cgroup/a/memory.max", "2147483648\n")
            .write("sys/fs/cgroup/a/memory.current", "1073741824\n")
            .write("sys/fs/cgroup/a/b/memory.max", "max\n")
            .write("sys/fs/cgroup/a/b/c/memory.max", "8589934592\n")
            .write("sys/fs/cgroup/a/b/c/memory.current", "536870912\n");
        let m = detect_at(&t.0);
        assert_eq!(m.cgroup_limit_bytes, Some(2 * GIB));
        assert_eq!(m.total_bytes, 2 * GIB);
        // Parent has 1 GiB left even though the child alone would allow 7.5 GiB.
        assert_eq!(m.available_bytes, GIB);
    }

    #[test]
    fn cgroup_v1_limited_and_hybrid() {
        let t = Tree::new("v1");
        t.meminfo(32 * 1024 * 1024, 30 * 1024 * 1024)
            .write(
                "proc/self/cgroup",
                "9:name=systemd:/\n4:memory:/docker/abc\n2:cpu,cpuacct:/\n0::/\n",
            )
            .write(
                "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "3221225472\n",
            )
            .write(
                "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes",
                "1073741824\n",
            )
            .write(
                "sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            )
            .write("sys/fs/cgroup/unified/cgroup.procs", "1\n");
        let m = detect_at(&t.0);
        assert_eq!(m.cgroup_limit_bytes, Some(3 * GIB));
        assert_eq!(m.total_bytes, 3 * GIB);
        assert_eq!(m.available_bytes, 2 * GIB);
    }

    #[test]
    fn cgroup_v1_path_not_mounted_uses_mount_root() {
        // Containers without a cgroup namespace: our path is absent, the mount root is ours.
        let t = Tree::new("v1root");
        t.meminfo(32 * 1024 * 1024, 30 * 1024 * 1024)
            .write("proc/self/cgroup", "4:memory:/kubepods/pod1/ctr\n")
            .write("sys/fs/cgroup/memory/memory.limit_in_bytes", "1073741824\n")
            .write("sys/fs/cgroup/memory/memory.usage_in_bytes", "2147483648\n");
        let m = detect_at(&t.0);
        assert_eq!(m.total_bytes, GIB);
        // Usage above the limit saturates to zero instead of wrapping.
        assert_eq!(m.available_bytes, 0);
    }

    #[test]
    fn dotdot_path_cannot_escape() {
        let t = Tree::new("dotdot");
        t.meminfo(4 * 1024 * 1024, 4 * 1024 * 1024)
            .write("proc/self/cgroup", "0::/../../../../etc\n")
            .write("sys/fs/cgroup/etc/memory.max", "1048576\n");
        // "/../../etc" is confined to sys/fs/cgroup/etc, never the real /etc.
        assert_eq!(detect_at(&t.0).cgroup_limit_bytes, Some(1 << 20));
    }

    #[test]
    fn garbage_is_ignored() {
        let t = Tree::new("garbage");
        t.write("proc/meminfo", "\u{0}\u{1}not meminfo at all\n:::\n")
            .write("proc/self/cgroup", "nonsense\n0::\n::::\n4:memory\n0::/x\n")
            .write("sys/fs/cgroup/x/memory.max", "lots and lots\n")
            .write("sys/fs/cgroup/x/memory.current", "-5\n")
            .write("sys/fs/cgroup/x/memory.stat", "inactive_file many\n");
        let m = detect_at(&t.0);
        assert_eq!(m, MemoryInfo::default());
        // A directory with no files at all.
        let empty = Tree::new("empty");
        assert_eq!(detect_at(&empty.0), MemoryInfo::default());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_machine() {
        let m = detect();
        let host = parse_meminfo(&fs::read_to_string("/proc/meminfo").unwrap()).unwrap();
        assert_eq!(m.host_total_bytes, host.total);
        assert!(m.total_bytes > 0 && m.total_bytes <= m.host_total_bytes);
        assert!(m.available_bytes <= m.total_bytes);
        if let Some(l) = m.cgroup_limit_bytes {
            assert!(m.total_bytes <= l);
        }
    }
}
