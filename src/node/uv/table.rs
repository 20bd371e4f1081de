//! The libuv functions this driver calls, found at run time in the host process, and the
//! checks that they are the libuv that runs Node's event loop.

use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

use napi::{sys, Env};

use crate::node::host;

/// libuv's handle type numbers and poll event bits, stable across libuv 1.x.
pub(super) const UV_ASYNC: c_int = 1;
pub(super) const UV_POLL: c_int = 8;
pub(super) const UV_IDLE: c_int = 6;
pub(super) const UV_READABLE: c_int = 1;
pub(super) const UV_WRITABLE: c_int = 2;

pub(super) type PollCb = unsafe extern "C" fn(*mut c_void, c_int, c_int);

/// What libuv watches a socket by: a descriptor on unix (`uv_poll_init`), a `SOCKET` on
/// Windows (`uv_os_sock_t`, pointer-sized, for `uv_poll_init_socket`).
#[cfg(unix)]
pub(super) type OsSocket = c_int;
#[cfg(not(unix))]
pub(super) type OsSocket = usize;
pub(super) type AsyncCb = unsafe extern "C" fn(*mut c_void);
pub(super) type CloseCb = unsafe extern "C" fn(*mut c_void);

/// The few libuv functions used here, as the host process exports them.
pub(super) struct Uv {
    pub(super) handle_size: unsafe extern "C" fn(c_int) -> usize,
    /// `uv_poll_init` on unix, `uv_poll_init_socket` on Windows (where `uv_poll_init` takes a
    /// C runtime file descriptor, not a socket).
    pub(super) poll_init: unsafe extern "C" fn(*mut c_void, *mut c_void, OsSocket) -> c_int,
    pub(super) poll_start: unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int,
    pub(super) poll_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub(super) async_init: unsafe extern "C" fn(*mut c_void, *mut c_void, AsyncCb) -> c_int,
    pub(super) async_send: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub(super) idle_init: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    pub(super) idle_start: unsafe extern "C" fn(*mut c_void, AsyncCb) -> c_int,
    pub(super) idle_stop: unsafe extern "C" fn(*mut c_void) -> c_int,
    pub(super) close: unsafe extern "C" fn(*mut c_void, Option<CloseCb>),
    pub(super) unref: unsafe extern "C" fn(*mut c_void),
    pub(super) version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
}

#[cfg(unix)]
fn find_uv() -> Option<Uv> {
    /// The image (executable or library) that holds `address`: its base and file name.
    ///
    /// # Safety
    ///
    /// `address` is null or a value from `dlsym`. The name is the loader's copy, valid while
    /// the image stays mapped: it is only read by `find_uv` while it runs, and the images
    /// asked about here (the host executable, a shared libuv it links) are never unloaded.
    unsafe fn image(address: *mut c_void) -> Option<(usize, &'static std::ffi::CStr)> {
        // SAFETY: `Dl_info` is a C struct of pointers and integers, for which all zeroes is a
        // valid value (null names, null addresses).
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        if address.is_null() {
            return None;
        }
        // SAFETY: `dladdr` takes any address (it reports 0 for one in no image) and fills the
        // local `info`.
        if unsafe { libc::dladdr(address, &mut info) } == 0 || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: `dli_fname` is non-null: the loader's NUL-terminated copy of the image's file
        // name, valid while the image stays mapped, which the caller guarantees for as long as
        // the name is used (see `# Safety`).
        let name = unsafe { std::ffi::CStr::from_ptr(info.dli_fname) };
        Some((info.dli_fbase as usize, name))
    }
    // SAFETY: `dlsym` gets a NUL-terminated name and the `RTLD_DEFAULT` pseudo-handle, and
    // `image` accepts what it returns, null included (see its `# Safety`).
    let (node, _) = unsafe {
        image(libc::dlsym(
            libc::RTLD_DEFAULT,
            c"napi_get_uv_event_loop".as_ptr(),
        ))
    }?;
    // libuv is in the image that runs Node-API (Node's own build), or is a shared libuv
    // (distributions build Node with --shared-libuv): not a library of some other addon,
    // whose loops are not Node's.
    // SAFETY: as above: a NUL-terminated name for `dlsym`, whose result `image` accepts.
    let (uv, name) = unsafe {
        image(libc::dlsym(
            libc::RTLD_DEFAULT,
            c"uv_version_string".as_ptr(),
        ))
    }?;
    let shared = name
        .to_bytes()
        .rsplit(|&b| b == b'/')
        .next()
        .is_some_and(|file| file.starts_with(b"libuv."));
    if uv != node && !shared {
        return None;
    }
    /// The function `name` of the image at `uv`, as a `T`.
    ///
    /// # Safety
    ///
    /// `T` is a function pointer type (pointer-sized) whose signature is the C signature of
    /// `name`; the returned pointer is never null (a null or foreign `dlsym` result is `None`).
    unsafe fn symbol<T: Copy>(name: &std::ffi::CStr, uv: usize) -> Option<T> {
        // SAFETY: `dlsym` gets a NUL-terminated name and the `RTLD_DEFAULT` pseudo-handle.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        // Every function from that same image.
        // SAFETY: `image` accepts a `dlsym` result, null included; the name it returns is
        // not kept.
        let (base, _) = unsafe { image(found) }?;
        // SAFETY: `found` is non-null (`image` gave `None` for null) and is the address of
        // `name` in the image at `uv`; `T` is a pointer-sized function pointer type with
        // `name`'s C signature (the caller's guarantee), so the bits make a valid `T`.
        (base == uv).then(|| unsafe { std::mem::transmute_copy(&found) })
    }
    // SAFETY: each `T` here is the type of the `Uv` field, an `extern "C"` function pointer
    // with the signature libuv 1.x's `uv.h` declares for that symbol (stable across 1.x), and
    // every symbol comes from the image checked above to be Node's libuv or a shared libuv.
    unsafe {
        Some(Uv {
            version_string: symbol(c"uv_version_string", uv)?,
            handle_size: symbol(c"uv_handle_size", uv)?,
            poll_init: symbol(c"uv_poll_init", uv)?,
            poll_start: symbol(c"uv_poll_start", uv)?,
            poll_stop: symbol(c"uv_poll_stop", uv)?,
            async_init: symbol(c"uv_async_init", uv)?,
            async_send: symbol(c"uv_async_send", uv)?,
            idle_init: symbol(c"uv_idle_init", uv)?,
            idle_start: symbol(c"uv_idle_start", uv)?,
            idle_stop: symbol(c"uv_idle_stop", uv)?,
            close: symbol(c"uv_close", uv)?,
            unref: symbol(c"uv_unref", uv)?,
        })
    }
}

#[cfg(windows)]
fn find_uv() -> Option<Uv> {
    use windows_sys::Win32::Foundation::HMODULE;
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};

    /// The address of the function `name` that `module` exports, or null.
    ///
    /// # Safety
    ///
    /// `module` is a module loaded in this process that stays loaded while `find_uv` runs.
    unsafe fn export(module: HMODULE, name: &std::ffi::CStr) -> *mut c_void {
        // SAFETY: `module` is a loaded module (the caller's guarantee) and `name` a
        // NUL-terminated name; `GetProcAddress` only reads both, and returns `None` (null)
        // for a name the module does not export. `name` is a C-string literal in this
        // library's read-only data: nothing, JavaScript or another program, can write to it,
        // and no JavaScript runs during the call (it is made from Rust, not a JS callback).
        unsafe { GetProcAddress(module, name.as_ptr().cast()) }
            .map_or(std::ptr::null_mut(), |f| f as *mut c_void)
    }
    // The image that runs Node-API, as napi-rs itself finds it: the executable (node.exe,
    // Electron), else a libnode.dll or node.dll already loaded by an embedder. Nothing is
    // loaded here, and a module found stays loaded for the life of the process: it runs the
    // JavaScript that loaded this addon.
    let node = [None, Some("libnode"), Some("node")]
        .into_iter()
        .find_map(|name| {
            let wide: Option<Vec<u16>> = name.map(|n| n.encode_utf16().chain([0]).collect());
            // SAFETY: `GetModuleHandleW` takes null (the executable) or a NUL-terminated UTF-16
            // name, which `wide` is and which outlives the call; it loads nothing and takes no
            // reference, and returns null for a module that is not loaded. `wide` is a Vec of
            // this function's own, in this process's private heap, which no JavaScript (none
            // runs during the call) and no other program can change while it is read.
            let module =
                unsafe { GetModuleHandleW(wide.as_ref().map_or(std::ptr::null(), |w| w.as_ptr())) };
            // SAFETY: a non-null result is a module loaded in this process; the executable and a
            // Node library that runs JavaScript stay loaded (see above).
            (!module.is_null() && !unsafe { export(module, c"napi_get_uv_event_loop") }.is_null())
                .then_some(module)
        })?;
    /// The function `name` that the Node image exports, as a `T`.
    ///
    /// # Safety
    ///
    /// As [`export`] for `module`; `T` is a function pointer type (pointer-sized) whose
    /// signature is the C signature of `name`.
    unsafe fn symbol<T: Copy>(module: HMODULE, name: &std::ffi::CStr) -> Option<T> {
        // SAFETY: the caller's guarantee for `module`.
        let found = unsafe { export(module, name) };
        // SAFETY: `found` is non-null, the address of `name` in the Node image; `T` is a
        // pointer-sized function pointer type with `name`'s C signature (the caller's
        // guarantee; libuv's exports use the C calling convention, as `uv.h`'s `UV_EXTERN`
        // names no other, and that is Rust's `extern "C"`), so the bits make a valid `T`.
        (!found.is_null()).then(|| unsafe { std::mem::transmute_copy(&found) })
    }
    // libuv comes from that same image only (Node for Windows links it statically and exports
    // it): never from another module, whose loops are not Node's.
    // SAFETY: each `T` here is the type of the `Uv` field, an `extern "C"` function pointer
    // with the signature libuv 1.x's `uv.h` declares for that symbol on Windows (stable across
    // 1.x; `uv_poll_init_socket` takes a `uv_os_sock_t`, a pointer-sized `SOCKET`), and
    // `node` is the loaded module found above.
    unsafe {
        Some(Uv {
            version_string: symbol(node, c"uv_version_string")?,
            handle_size: symbol(node, c"uv_handle_size")?,
            poll_init: symbol(node, c"uv_poll_init_socket")?,
            poll_start: symbol(node, c"uv_poll_start")?,
            poll_stop: symbol(node, c"uv_poll_stop")?,
            async_init: symbol(node, c"uv_async_init")?,
            async_send: symbol(node, c"uv_async_send")?,
            idle_init: symbol(node, c"uv_idle_init")?,
            idle_start: symbol(node, c"uv_idle_start")?,
            idle_stop: symbol(node, c"uv_idle_stop")?,
            close: symbol(node, c"uv_close")?,
            unref: symbol(node, c"uv_unref")?,
        })
    }
}

#[cfg(not(any(unix, windows)))]
fn find_uv() -> Option<Uv> {
    None
}

pub(super) fn uv() -> Option<&'static Uv> {
    static UV: OnceLock<Option<Uv>> = OnceLock::new();
    UV.get_or_init(|| {
        let wanted = std::env::var("IMT_GATEWAY_IO").map_or(true, |v| v != "tokio");
        wanted.then(find_uv).flatten()
    })
    .as_ref()
}

/// Whether the host that runs `env` is Node with the libuv found by [`uv`]: Node.js (see
/// `node::host`, asked before any libuv function is called, since Bun's abort), and
/// `uv_version_string()` equal to `process.versions.uv`. Asked once per process.
pub(super) fn node_libuv(env: &Env, uv: &Uv) -> bool {
    static NODE: OnceLock<bool> = OnceLock::new();
    // SAFETY: `env` is the environment of the Node-API call running on this thread (an
    // `Env` is only handed to code that napi-rs calls from JavaScript), which also opened
    // the handle scope the values made here belong to; `uv` came from `uv()`.
    *NODE.get_or_init(|| unsafe { is_node_libuv(env.raw(), uv) }.unwrap_or(false))
}

/// # Safety
///
/// `env` is live and this runs on its JavaScript thread inside a handle scope (a call from
/// JavaScript); `uv`'s functions are libuv's (see `find_uv`). Only `uv_version_string` is
/// called, and only once the host has been found to be Node.js.
unsafe fn is_node_libuv(env: sys::napi_env, uv: &Uv) -> Option<bool> {
    // SAFETY: `env` is current on its JavaScript thread, inside a handle scope (the caller's
    // guarantee).
    if !unsafe { host::is_node(env) } {
        return Some(false);
    }
    let mut global = std::ptr::null_mut();
    // SAFETY: as above; the out-pointer is a local.
    if unsafe { sys::napi_get_global(env, &mut global) } != sys::Status::napi_ok {
        return None;
    }
    // SAFETY: as above; each object read from is a handle of the caller's scope, `global` or
    // read from it. A getter this runs holds no pointer of ours, and the string is read into
    // Rust memory.
    let node = unsafe {
        let versions = host::property(env, host::property(env, global, c"process")?, c"versions")?;
        crate::node::value::read_string(env, host::property(env, versions, c"uv")?).ok()?
    };
    // SAFETY: `version_string` is libuv's `uv_version_string` (the caller's guarantee), which
    // takes nothing and returns a static string, and the host was just found to be Node.js,
    // whose libuv exports it.
    let ours = unsafe { (uv.version_string)() };
    if ours.is_null() {
        return Some(false);
    }
    // SAFETY: non-null, and libuv's version string is a static NUL-terminated string.
    Some(unsafe { std::ffi::CStr::from_ptr(ours) }.to_bytes() == node.as_bytes())
}

/// Allocates a libuv handle of `kind`; freed by [`free_handle`] (from its close callback, or
/// directly when its `*_init` failed). Both use this crate's own C runtime (`calloc` and `free`
/// of the CRT this library links: on Windows, the one CRT DLL it imports both from), never
/// libuv's or Node's allocator: libuv only fills the memory and calls the close callback, and
/// never allocates or frees a handle itself.
pub(super) fn alloc_handle(uv: &Uv, kind: c_int) -> *mut c_void {
    // SAFETY: `uv_handle_size` takes any handle type and only returns a size; `kind` is one
    // of the `UV_*` handle types above. `calloc` has no precondition, and every caller checks
    // its result for null. Zeroed memory is what libuv's `*_init` functions expect to fill.
    unsafe { libc::calloc(1, (uv.handle_size)(kind)) }
}

/// Frees a handle made by [`alloc_handle`]: the close callback given to `uv_close`, and what
/// frees a handle whose `*_init` failed.
///
/// # Safety
///
/// `handle` is null or was returned by [`alloc_handle`], and libuv is done with it: either its
/// close callback is running (libuv no longer refers to a closed handle) or it was never
/// initialized (a failed `*_init` returns before it registers the handle with the loop).
pub(super) unsafe extern "C" fn free_handle(handle: *mut c_void) {
    // SAFETY: `handle` is null (which `free` ignores) or came from `calloc` in
    // `alloc_handle`, of the same C runtime as this `free` (both are this library's imports,
    // on Windows as on unix), and nothing refers to it any more (the caller's guarantee), so
    // it is freed once.
    unsafe { libc::free(handle) };
}
