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
}
