//! Link flags for the Node addon; nothing to do for the plain Rust library.
fn main() {
    // Windows builds link against the import library found in LIBNODE_PATH
    // (scripts/test-windows.sh): a build made with another path must not be reused.
    println!("cargo:rerun-if-env-changed=LIBNODE_PATH");
    if std::env::var_os("CARGO_FEATURE_NODE").is_some() {
        napi_build::setup();
    }
}
