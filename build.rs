fn main() {
    // Nothing to generate: llama.cpp is built by llama-cpp-sys-2, the header by
    // cbindgen in tests/header.rs. Declared so cargo does not rerun this needlessly.
    println!("cargo:rerun-if-changed=build.rs");
}
