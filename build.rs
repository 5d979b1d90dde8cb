use std::path::PathBuf;

fn main() {
    // The C++ shim that catches exceptions thrown by llama.cpp (src/engine/shim.cpp).
    // llama-cpp-sys-2 installs llama.cpp's headers next to the ggml CMake package it
    // announces (DEP_LLAMA_GGML_CMAKE_DIR = <out>/lib/cmake).
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/engine/shim.cpp");
    let cmake_dir = std::env::var("DEP_LLAMA_GGML_CMAKE_DIR")
        .expect("llama-cpp-sys-2 did not announce its install directory");
    let include = PathBuf::from(cmake_dir)
        .ancestors()
        .nth(2)
        .map(|out| out.join("include"))
        .filter(|inc| inc.join("llama.h").is_file())
        .expect("llama.h not found in llama-cpp-sys-2's install directory");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(&include)
        .file("src/engine/shim.cpp")
        .warnings(true)
        .extra_warnings(true)
        .compile("tabagent_shim");

    // The portable build links llama.cpp and ggml as shared libraries and loads a CPU
    // variant at run time (src/engine/backends.rs). The library and programs find
    // both beside themselves ($ORIGIN), so the folder can be moved or packaged.
    if std::env::var_os("CARGO_FEATURE_PORTABLE").is_some() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN");
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
        if let Ok(dir) = std::env::var("DEP_LLAMA_BACKENDS_DIR") {
            stage_beside_outputs(&PathBuf::from(dir));
        }
    }
}

/// Put what the library loads beside what cargo builds (target/<profile>/): the
/// llama.cpp and ggml shared libraries (llama-cpp-sys-2 hard-links only their
/// unversioned symlinks there, which then dangle) and the CPU variant modules. One
/// folder then holds a library that runs. Test programs live in deps/: they get a
/// copy too. Copies only what changed, so a rebuild replaces stale files.
fn stage_beside_outputs(backends: &std::path::Path) {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let libs = backends.parent().map(|o| o.join("lib"));
    for dir in libs.iter().map(PathBuf::as_path).chain([backends]) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().contains(".so") {
                continue;
            }
            for to in [profile_dir.to_path_buf(), profile_dir.join("deps")] {
                if let Err(err) = stage(&e.path(), &to.join(&name)) {
                    println!(
                        "cargo:warning=could not stage {}: {err}",
                        e.path().display()
                    );
                }
            }
        }
    }
}

/// Mirror one file: a symlink as the same symlink, a file as a copy.
fn stage(src: &std::path::Path, dst: &std::path::Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(src)?;
        if std::fs::read_link(dst).ok().as_ref() == Some(&target) {
            return Ok(());
        }
        let _ = std::fs::remove_file(dst);
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, dst)?;
        return Ok(());
    }
    let same = std::fs::symlink_metadata(dst)
        .map(|d| d.is_file() && d.len() == meta.len())
        .unwrap_or(false)
        && std::fs::read(src)? == std::fs::read(dst)?;
    if !same {
        let _ = std::fs::remove_file(dst);
        std::fs::copy(src, dst)?;
    }
    Ok(())
}
