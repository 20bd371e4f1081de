//! Panics are caught before they reach Node (and become `EINTERNAL` errors), but Rust's
//! default hook would still print each one to stderr. This package prints nothing unless the
//! `DEBUG` environment variable enables it, as the `debug` package reads it, so the hook of
//! this addon (its own, not the host's or another addon's) follows the same rule, under the
//! namespace `imt:gateway:native`.

const NAMESPACE: &str = "imt:gateway:native";

/// `*` matches any run of characters, as in the `debug` package.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            let Some(rest) = name.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| rest.is_char_boundary(i) && glob(tail, &rest[i..]))
        }
    }
}

/// Whether `spec` (the value of DEBUG) enables `name`: a list separated by commas or spaces,
/// where an entry starting with `-` excludes.
fn enabled(spec: &str, name: &str) -> bool {
    let entries: Vec<&str> = spec
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .collect();
    let excluded = entries
        .iter()
        .filter_map(|e| e.strip_prefix('-'))
        .any(|e| glob(e, name));
    !excluded
        && entries
            .iter()
            .filter(|e| !e.starts_with('-'))
            .any(|e| glob(e, name))
}

#[napi_derive::module_init]
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let spec = std::env::var("DEBUG").unwrap_or_default();
        if enabled(&spec, NAMESPACE) {
            eprintln!("{NAMESPACE} {info}");
        }
    }));
}
