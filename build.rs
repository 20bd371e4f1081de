//! Link flags for the Node addon; nothing to do for the plain Rust library.
fn main() {
    if std::env::var_os("CARGO_FEATURE_NODE").is_some() {
        napi_build::setup();
    }
}
