fn main() {
    // The portable build's llama.cpp and ggml libraries sit beside the binary
    // (target/release, or wherever it is installed with them).
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN");
}
