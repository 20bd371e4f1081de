//! External strings: a string of 256 KiB or more (a received one is left in its frame, see
//! [`Text`]) made into a V8 string that uses the characters where they are, when the runtime is Node.js and
//! exports `node_api_create_external_string_latin1`/`..._utf16` (found with `dlsym`, once per
//! process); V8 is told of the memory with `napi_adjust_external_memory`, so it collects such
//! strings in time. Anywhere else the string is copied (`to_js::string`).
//!
//! None of the calls made here runs JavaScript; the units handed to V8 are Rust memory (a
//! frame's bytes or a transcoded copy), owned by the string from then on.

use std::ffi::{c_char, c_void};
use std::ptr;

use napi::{check_status, sys, Result};

use super::to_js::{string, BORROW};
use crate::protocol::text::{units, Units};
use crate::protocol::value::SHARED_TEXT_FROM;
use crate::protocol::Text;

/// The JavaScript string of a [`Text`]: `to_js::string` below [`SHARED_TEXT_FROM`] (256 KiB,
/// where the decoder starts leaving strings in their frame), and from there in Node.js an
/// external string, whose characters V8 uses where they are instead of allocating and
/// copying its own (a fresh large V8 string costs more in page faults than in copying). An
/// ASCII one is the `Text`'s own bytes, kept alive by the string (unless values may not
/// borrow frames, [`JsValueCopy`](super::JsValueCopy)); any other is transcoded by `units`
/// first.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope, where the string
/// made lives.
pub(super) unsafe fn shared_string(env: sys::napi_env, text: &Text) -> Result<sys::napi_value> {
    if text.len() < SHARED_TEXT_FROM {
        // SAFETY: `env` is current on its JavaScript thread, in a handle scope (the caller's
        // guarantee); `string` copies the text and runs no JavaScript.
        return unsafe { string(env, text.as_str()) };
    }
    // SAFETY: `env` is current on its JavaScript thread, in a handle scope (the caller's
    // guarantee), in this block and in each below; no call here runs JavaScript.
    let Some(external) = (unsafe { external_strings(env) }) else {
        // SAFETY: as above; `string` copies the text.
        return unsafe { string(env, text.as_str()) };
    };
    if !text.is_ascii() {
        return match units(text.as_str()) {
            // SAFETY: as above; `make` hands V8 the transcoded copy, owned by the string.
            Units::Latin1(bytes) => unsafe { external.make(env, bytes) },
            // SAFETY: as above.
            Units::Utf16(units) => unsafe { external.make(env, units) },
        };
    }
    if BORROW.with(std::cell::Cell::get) {
        // SAFETY: as above; `make` hands V8 a count of the frame's bytes, never written.
        unsafe { external.make(env, text.bytes().clone()) }
    } else {
        // SAFETY: as above; `string` copies the text.
        unsafe { string(env, text.as_str()) }
    }
}

/// `node_api_create_external_string_latin1` and `..._utf16`: Node-API 10, and exported (as
/// experimental) since Node.js 18.18 and 20.4.
type MakeExternal<C> = unsafe extern "C" fn(
    sys::napi_env,
    *mut C,
    isize,
    sys::napi_finalize,
    *mut c_void,
    *mut sys::napi_value,
    *mut bool,
) -> sys::napi_status;

/// The runtime's two external string makers (never found outside Unix).
#[cfg_attr(not(unix), allow(dead_code))]
struct ExternalStrings {
    latin1: MakeExternal<c_char>,
    utf16: MakeExternal<u16>,
}

/// Found once per process, by name in the running executable: an addon that linked them would
/// not load where they are missing. Used in Node.js only: Bun and Deno implement the two calls
/// their own way, and the copying path is right everywhere.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope.
unsafe fn external_strings(env: sys::napi_env) -> Option<&'static ExternalStrings> {
    static FOUND: std::sync::OnceLock<Option<ExternalStrings>> = std::sync::OnceLock::new();
    // SAFETY: the caller's guarantee, passed on.
    FOUND
        .get_or_init(|| unsafe { find_external_strings(env) })
        .as_ref()
}

/// # Safety
///
/// As [`external_strings`].
#[cfg(unix)]
unsafe fn find_external_strings(env: sys::napi_env) -> Option<ExternalStrings> {
    // SAFETY: the caller's guarantee, passed on.
    if !unsafe { crate::node::host::is_node(env) } {
        return None;
    }
    // SAFETY: `dlsym` gets the `RTLD_DEFAULT` pseudo-handle and a NUL-terminated name, a
    // C-string literal in read-only data (no JavaScript or other program can change it), and
    // runs no JavaScript.
    let find = |name: &std::ffi::CStr| unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    let latin1 = find(c"node_api_create_external_string_latin1");
    let utf16 = find(c"node_api_create_external_string_utf16");
    if latin1.is_null() || utf16.is_null() {
        return None;
    }
    // SAFETY: both are non-null addresses of functions that Node.js (the host, checked above)
    // exports under these names with exactly these signatures, and a function pointer has
    // the size of a data pointer on every platform Node.js runs on.
    Some(unsafe {
        ExternalStrings {
            latin1: std::mem::transmute::<*mut c_void, MakeExternal<c_char>>(latin1),
            utf16: std::mem::transmute::<*mut c_void, MakeExternal<u16>>(utf16),
        }
    })
}

/// Elsewhere the functions would have to be looked up in the host executable by other means;
/// the copying path serves.
///
/// # Safety
///
/// None needed; unsafe only to match the Unix version.
#[cfg(not(unix))]
unsafe fn find_external_strings(_env: sys::napi_env) -> Option<ExternalStrings> {
    None
}

/// A code unit of one of V8's two string representations, with what makes strings of it.
trait Unit: Sized {
    type C;
    fn external(strings: &ExternalStrings) -> MakeExternal<Self::C>;
    const COPY: unsafe extern "C" fn(
        sys::napi_env,
        *const Self::C,
        isize,
        *mut sys::napi_value,
    ) -> sys::napi_status;
}

/// `impl Unit` for a unit type: its C type, its external maker and its copying maker.
macro_rules! unit {
    ($unit:ty, $c:ty, $external:ident, $copy:path) => {
        impl Unit for $unit {
            type C = $c;
            fn external(strings: &ExternalStrings) -> MakeExternal<$c> {
                strings.$external
            }
            const COPY: unsafe extern "C" fn(
                sys::napi_env,
                *const $c,
                isize,
                *mut sys::napi_value,
            ) -> sys::napi_status = $copy;
        }
    };
}

unit!(u8, c_char, latin1, sys::napi_create_string_latin1);
unit!(u16, u16, utf16, sys::napi_create_string_utf16);

impl ExternalStrings {
    /// An external string over the units `owner` holds, which V8 keeps from here on:
    /// [`release`] drops it when the string is collected, or at once when the runtime copied
    /// the units after all (then it has called it already). If the call fails, the string is
    /// made by copying: Node.js fails it before taking the units (a bad argument, a pending
    /// exception), or when V8 refuses the length, which no string within a frame's 10 MiB
    /// reaches.
    ///
    /// V8 counts an external string's characters as external memory but does not start a
    /// collection for them; without the report made here, a client receiving large strings
    /// and allocating little else kept every one of them (docs/performance.md has the figures;
    /// `__test__/lifecycle.test.js` checks that strings nobody keeps are collected).
    ///
    /// # Safety
    ///
    /// `env` is current on this, its JavaScript thread, inside a handle scope, where the
    /// string made lives; `self` was found for this runtime ([`external_strings`]).
    unsafe fn make<U: Unit, O: AsRef<[U]>>(
        &self,
        env: sys::napi_env,
        owner: O,
    ) -> Result<sys::napi_value> {
        // The units are read where the box keeps them, so that they stay put until the box
        // is freed, whatever `O` is.
        let owner = Box::new(owner);
        let units = (*owner).as_ref();
        let (data, len, size) = (units.as_ptr(), units.len(), size_of_val(units) as i64);
        let owner = Box::into_raw(owner);
        let mut total = 0;
        // SAFETY: `env` is current (the caller's guarantee); `release` reports the same size
        // back. Runs no JavaScript (a collection it may start runs finalizers later).
        unsafe { sys::napi_adjust_external_memory(env, size, &mut total) };
        let mut out = ptr::null_mut();
        let mut copied = false;
        // SAFETY: `env` is current, in a handle scope (the caller's guarantee), and the maker
        // is the runtime's, with this signature (see `find_external_strings`). `data` and
        // `len` are the units inside the box `owner`, which nothing else reads or writes, and
        // which `release` frees when V8 is done with them (V8 only reads them); the
        // out-pointers are locals. They are Rust memory, not a JavaScript object's: no
        // JavaScript can write or free them while V8 holds the pointer (the call runs none,
        // and later code sees only the immutable string), and no other program can reach this
        // process's memory (a frame's is its heap or a private anonymous mapping).
        let status = unsafe {
            U::external(self)(
                env,
                data.cast_mut().cast(),
                len as isize,
                Some(release::<U, O>),
                owner.cast(),
                &mut out,
                &mut copied,
            )
        };
        if status == sys::Status::napi_ok {
            return Ok(out);
        }
        // SAFETY: as above: the size reported just before, taken back.
        unsafe { sys::napi_adjust_external_memory(env, -size, &mut total) };
        // Copied while `owner` still holds the units.
        // SAFETY: as above; `data` and `len` are the units `owner` still holds (V8 did not
        // take them), which V8 copies.
        let made = check_status!(unsafe { U::COPY(env, data.cast(), len as isize, &mut out) });
        // SAFETY: the failed call took no ownership of `owner` (no finalizer will run), so it
        // is freed here, once; it came from `Box::into_raw` above.
        drop(unsafe { Box::from_raw(owner) });
        made.map(|()| out)
    }
}

/// The finalizer of an external string: `hint` is the boxed owner of its units.
///
/// # Safety
///
/// Called by V8 once, as the finalizer of a string made by `ExternalStrings::make::<U, O>`,
/// with its environment and the `hint` given there.
unsafe extern "C" fn release<U, O: AsRef<[U]>>(
    env: sys::napi_env,
    _data: *mut c_void,
    hint: *mut c_void,
) {
    // SAFETY: `hint` is the `Box<O>` made in `make`, and this runs once (the caller's
    // guarantee): V8 no longer reads the units, which are freed here.
    let owner = unsafe { Box::from_raw(hint.cast::<O>()) };
    let mut total = 0;
    // SAFETY: a finalizer gets its environment's `env`, on its JavaScript thread; the size is
    // the one `make` reported.
    unsafe {
        sys::napi_adjust_external_memory(env, -(size_of_val((*owner).as_ref()) as i64), &mut total)
    };
}
