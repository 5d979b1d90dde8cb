//! The committed C header must equal a fresh cbindgen run over the sources.
//! Regenerate with `TABAGENT_BLESS=1 cargo test --release --test header`.

use std::path::Path;

#[test]
fn committed_header_matches_cbindgen() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen failed");
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    let fresh = String::from_utf8(fresh).unwrap();
    let path = root.join("include/tabagent.h");
    if std::env::var_os("TABAGENT_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/tabagent.h is stale: run `TABAGENT_BLESS=1 cargo test --release --test header` and commit it"
    );
    // The version string macro must follow Cargo.toml.
    assert!(fresh.contains(&format!(
        "#define TA_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION")
    )));
}
