//! The JS → MessagePack walk: a JavaScript value written straight into MessagePack, as
//! msgpack-lite 0.1.26's `encode` writes it: a Buffer is bin, an array (a Proxy of one too) is
//! an array, and any other object is written according to the name of its constructor, as
//! msgpack-lite picks its extension packers: typed arrays, DataView, ArrayBuffer, boxed
//! primitives, RegExp, Date and the Error classes become their extension types, anything else
//! a map of its own enumerable keys.
//!
//! Every encoding carries a byte budget, the 10 MiB frame cap: lengths are checked against it
//! before a loop starts, so `new Array(2 ** 32 - 1)` or a subtree shared a billion times over
//! fails at once instead of growing a buffer for minutes.
//!
//! The walk runs the caller's JavaScript: `napi_get_property`, `napi_get_named_property` and
//! `napi_get_element` call getters and `Proxy` traps (on `globalThis` too, for `Buffer`, `Date`,
//! `Array`, `Map`), `napi_get_all_property_names` a Proxy's `ownKeys`, `napi_instanceof` a
//! `Symbol.hasInstance` (`Buffer.isBuffer`), `napi_coerce_to_*` `valueOf`, `toString` and
//! `Symbol.toPrimitive`, and `napi_call_function` and `napi_new_instance` whatever they are
//! given. Any of it may shrink or detach an ArrayBuffer (`resize`, `transfer`,
//! `structuredClone(.., {transfer})`), so no slice of an ArrayBuffer's memory is held across
//! such a call: [`Encoder::with_bytes`] reads a view's bytes after the last of them and hands
//! them to a copy that makes no Node-API call. The calls that only inspect a value
//! (`napi_typeof`, `napi_is_*`, `napi_strict_equals`, `napi_get_*_info`, `napi_get_value_*`,
//! `napi_get_date_value`) run no JavaScript; strings are primitives, read into Rust memory
//! (`read.rs`).

use std::ffi::c_char;
use std::ptr;

use bytes::BytesMut;
use napi::{check_status, sys};

use super::known::{buffer_and_date, known, Known};
use super::read::{put_utf8, read_short, read_string, SHORT_STRING};
use super::{
    element_size, global, property, EncodeError, Walk, ERROR_COLUMNS, EXT_ARRAY_BUFFER,
    EXT_DATA_VIEW, EXT_REGEXP,
};
use crate::protocol::value::{
    write_array_header, write_binary, write_bool, write_date, write_ext, write_map_header,
    write_nil, write_number, write_str, write_str_header, MAX_DEPTH,
};
use crate::protocol::{decode, Value, MAX_BUFFER};

/// How many maps enclose every JavaScript value the protocol carries: each is a field of a
/// message's map (an id, a bundle, an action's parameters).
pub const FIELD_DEPTH: usize = 1;

/// `value` as a [`Value`]: encoded by [`encode`] and decoded again, so it is exactly what
/// the wire will carry and there is one walk of JavaScript values, not two to keep alike.
///
/// # Safety
///
/// `env` is current on this, its JavaScript thread, inside a handle scope (a call from
/// JavaScript); `value` is a handle of that scope.
pub unsafe fn to_value(env: sys::napi_env, value: sys::napi_value) -> Walk<Value> {
    // A string (an action's id, nearly always) is read as it is: what encoding and decoding
    // it would give, without the round trip. Long ones take the walk, which bounds them.
    let mut kind = 0;
    // SAFETY: `env` is current and `value` a live handle (the caller's guarantee); the
    // out-pointer is a local. Runs no JavaScript.
    check_status!(unsafe { sys::napi_typeof(env, value, &mut kind) })?;
    if kind == sys::ValueType::napi_string {
        let mut short = [0u8; SHORT_STRING];
        // SAFETY: as above; the string is read into `short`, Rust memory.
        if let Some(len) = unsafe { read_short(env, value, &mut short) }? {
            return Ok(Value::String(
                String::from_utf8_lossy(&short[..len]).into_owned().into(),
            ));
        }
    }
    let mut body = BytesMut::with_capacity(64);
    // SAFETY: the caller's guarantee, passed on.
    unsafe { encode(env, value, FIELD_DEPTH, &mut body) }?;
    Ok(decode(&body.freeze())?)
}

/// Writes `value` into `out` as MessagePack, as msgpack-lite 0.1.26 writes it (see the module
/// documentation): straight from the caller's strings and Buffers, with no tree of [`Value`]s
/// in between. `depth` is how many arrays and maps already enclose it: a walk never opens more
/// than MessagePack decoding accepts (so a cyclic object ends in an error), and `out` never
/// grows past the frame cap ([`EncodeError::OverBudget`]). After an error, `out` holds a partial value.
///
/// # Safety
///
/// As [`to_value`]: `env` current on its JavaScript thread, inside a handle scope, and
/// `value` a handle of it. The walk calls getters, which may run any JavaScript.
pub unsafe fn encode(
    env: sys::napi_env,
    value: sys::napi_value,
    depth: usize,
    out: &mut BytesMut,
) -> Walk<()> {
    let mut encoder = Encoder::new(env, out, 0);
    // SAFETY: the caller's guarantee is the `Encoder`'s invariant, and `value` is a handle of
    // the caller's scope.
    unsafe { encoder.value(value, depth, out) }
}

/// How far JavaScript got with a bundle before handing it over (`lib/encode.js`, which
/// writes plain objects of primitives as this walk does, and stops where it would differ).
pub enum Resumed {
    /// All of it: the first `len` bytes of the Uint8Array `scratch` are the bundle, written
    /// as [`encode`] writes it.
    Whole {
        scratch: sys::napi_value,
        len: usize,
    },
    /// Its `constructor`, read as [`encode`] reads it, is `class`, not `Object`; the value
    /// is not an array.
    Class(sys::napi_value),
    /// A plain object whose keys, listed by `Object.keys`, are `keys` (`len` of them), and
    /// whose map header and entries before `start` are the first `written` bytes of the
    /// Uint8Array `scratch`; `first` is the value of key `start` when it was read already.
    Entries {
        keys: sys::napi_value,
        len: u32,
        scratch: sys::napi_value,
        written: usize,
        start: u32,
        first: Option<sys::napi_value>,
    },
}

/// Appends the first `len` bytes of the Uint8Array `scratch` to `out`, within `limit`.
///
/// # Safety
///
/// `env` is current on its JavaScript thread, inside a handle scope, and `scratch` a handle
/// of it.
unsafe fn append_scratch(
    env: sys::napi_env,
    scratch: sys::napi_value,
    len: usize,
    limit: usize,
    out: &mut BytesMut,
) -> Walk<()> {
    let mut kind = 0;
    let mut length = 0;
    let mut data = ptr::null_mut();
    let mut buffer = ptr::null_mut();
    let mut offset = 0;
    // SAFETY: `env` is current and `scratch` a live handle (the caller's guarantee); the
    // out-pointers are locals. Inspecting a value runs no JavaScript.
    check_status!(unsafe {
        sys::napi_get_typedarray_info(
            env,
            scratch,
            &mut kind,
            &mut length,
            &mut data,
            &mut buffer,
            &mut offset,
        )
    })?;
    if kind != sys::TypedarrayType::uint8_array || len > length || (data.is_null() && len > 0) {
        return Err(EncodeError::Napi(napi::Error::from_reason(
            "the bundle's bytes are not where JavaScript said",
        )));
    }
    if out.len().saturating_add(len) > limit {
        return Err(EncodeError::OverBudget);
    }
    if len > 0 {
        // SAFETY: `data` points at the view's `length >= len` bytes, as the info call above
        // reported them, and no JavaScript runs between that call and the end of this copy
        // (`extend_from_slice` makes no Node-API call), so nothing can shrink or detach the
        // memory meanwhile; no other thread can (the view is `lib/encode.js`'s own, on an
        // ArrayBuffer that is not shared), nor any other program (V8's heap and array buffers
        // are this process's private memory), and the slice does not outlive the block.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        out.extend_from_slice(bytes);
    }
    Ok(())
}

/// Writes `value` into `out` as [`encode`] does, from where JavaScript handed it over:
/// nothing is read twice, so each getter runs once, in the walk's order.
///
/// # Safety
///
/// As [`encode`], and the values of `resumed` are handles of the caller's scope (`keys` an
/// array made by `Object.keys`, whose elements are data: reading them runs no JavaScript);
/// `value` is an object unless `resumed` is [`Resumed::Whole`].
pub unsafe fn encode_resumed(
    env: sys::napi_env,
    value: sys::napi_value,
    resumed: Resumed,
    depth: usize,
    out: &mut BytesMut,
) -> Walk<()> {
    if let Resumed::Whole { scratch, len } = resumed {
        // SAFETY: the caller's guarantee.
        return unsafe { append_scratch(env, scratch, len, MAX_BUFFER, out) };
    }
    // The bundle itself was visited in JavaScript.
    let mut encoder = Encoder::new(env, out, 1);
    // SAFETY: the caller's guarantee is the `Encoder`'s invariant, and the values are
    // handles of the caller's scope.
    unsafe {
        match resumed {
            Resumed::Whole { .. } => Ok(()),
            Resumed::Class(class) => encoder.object_of_class(value, class, depth, out),
            Resumed::Entries {
                keys,
                len,
                scratch,
                written,
                start,
                first,
            } => {
                if depth >= MAX_DEPTH {
                    return Err(too_deep());
                }
                let written = Some((scratch, written));
                encoder.map_entries(value, keys, len, written, start, first, depth, out)
            }
        }
    }
}

fn too_deep() -> EncodeError {
    EncodeError::Refused("Value is nested too deeply (or is circular).".to_owned())
}

/// Above this a Buffer's bytes get room for a little more after them, so that the fields
/// that follow a large Buffer do not make the frame grow, and copy it, again.
const LARGE_BUFFER: usize = 64 * 1024;
const AFTER_LARGE_BUFFER: usize = 4096;

/// The extension types of msgpack-lite 0.1.26 (its `ext-packer.js`), by constructor name.
const EXT_CLASSES: &[(&[u8], i8)] = &[
    (b"Error", 0x0E),
    (b"EvalError", 0x01),
    (b"RangeError", 0x02),
    (b"ReferenceError", 0x03),
    (b"SyntaxError", 0x04),
    (b"TypeError", 0x05),
    (b"URIError", 0x06),
    (b"RegExp", 0x0A),
    (b"Boolean", 0x0B),
    (b"String", 0x0C),
    (b"Date", 0x0D),
    (b"Number", 0x0F),
    (b"Int8Array", 0x11),
    (b"Uint8Array", 0x12),
    (b"Int16Array", 0x13),
    (b"Uint16Array", 0x14),
    (b"Int32Array", 0x15),
    (b"Uint32Array", 0x16),
    (b"Float32Array", 0x17),
    (b"Float64Array", 0x18),
    (b"Uint8ClampedArray", 0x19),
    (b"ArrayBuffer", 0x1A),
    (b"DataView", 0x1D),
];
const EXT_DATE: i8 = 0x0D;

fn is_error_kind(kind: i8) -> bool {
    matches!(kind, 0x01..=0x06 | 0x0E)
}

fn is_typed_array_kind(kind: i8) -> bool {
    matches!(kind, 0x11..=0x19)
}

/// A constructor's name, as far as it matters here: the longest msgpack-lite knows has 17
/// bytes, so a longer one is kept cut short (it then matches nothing).
struct ClassName {
    bytes: [u8; 24],
    len: usize,
}

impl ClassName {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// What an object is a view of bytes as (the bytes themselves are read by
/// [`Encoder::with_bytes`], after the last JavaScript the encoder runs for that object).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Viewed {
    Typed(sys::napi_typedarray_type),
    DataView,
    ArrayBuffer,
}

/// One walk of a JavaScript value into MessagePack.
///
/// Its invariant, on which every `unsafe` block of its methods relies: an `Encoder` lives
/// only inside [`encode`] or [`encode_resumed`], whose caller guarantees that `env` is current on this, its
/// JavaScript thread, inside a handle scope that outlives the walk; and every `napi_value`
/// it keeps (`buffer_class`, `known`, `memo`) was read or made into that scope during the
/// walk. The `# Safety` of its methods: each `napi_value` argument is a handle of that scope.
struct Encoder {
    env: sys::napi_env,
    /// The most bytes `out` may hold.
    limit: usize,
    /// `globalThis.Buffer` (null when the host has none), looked up when first needed.
    buffer_class: Option<sys::napi_value>,
    /// What every object is compared with, resolved at the first object.
    known: Option<Known>,
    /// Values walked so far.
    visited: usize,
    /// Containers already written into the top buffer, from [`MEMO_AFTER`] values on.
    memo: Option<Memo>,
    /// The buffer `encode` writes into, which the memo's ranges refer to.
    top: *const BytesMut,
}

/// After this many values, containers written once are remembered (in a JavaScript `Map`,
/// by identity) and written again by copying their bytes: a subtree shared many times over
/// (`x = {a: y, b: y}`, 30 levels deep) reaches the budget in milliseconds instead of being
/// walked a billion times. Smaller bundles, nearly all, never pay for the `Map`.
const MEMO_AFTER: usize = 100_000;

struct Memo {
    map: sys::napi_value,
    get: sys::napi_value,
    set: sys::napi_value,
    /// What a `Map` value (an index here) stands for: the bytes' range in the top buffer,
    /// and the depth they were written at (copied only as deep or shallower).
    written: Vec<(usize, usize, usize)>,
}

impl Encoder {
    /// A walk into `out` (the top buffer) that has visited `visited` values already.
    fn new(env: sys::napi_env, out: &BytesMut, visited: usize) -> Encoder {
        Encoder {
            env,
            limit: MAX_BUFFER,
            buffer_class: None,
            known: None,
            visited,
            memo: None,
            top: out,
        }
    }

    /// What every object is compared with, resolved at the first object of the walk.
    ///
    /// # Safety
    ///
    /// The invariant of `Encoder`: `env` is current, in the walk's scope, where the values
    /// are read. Reading them may run getters of `globalThis`, with no pointer held.
    unsafe fn known(&mut self) -> Walk<Known> {
        match self.known {
            Some(known) => Ok(known),
            // SAFETY: the invariant of `Encoder` (see above).
            None => Ok(*self.known.insert(unsafe { known(self.env) }?)),
        }
    }

    fn room(&self, out: &BytesMut, need: usize) -> Walk<()> {
        if out.len().saturating_add(need) > self.limit {
            return Err(EncodeError::OverBudget);
        }
        Ok(())
    }

    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn value(
        &mut self,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        self.visited += 1;
        let mut kind = 0;
        // SAFETY: `env` is current and `value` a handle of the walk's scope (the invariant of
        // `Encoder`, and the caller's guarantee); the out-pointer is a local. Inspecting a
        // value runs no JavaScript.
        check_status!(unsafe { sys::napi_typeof(env, value, &mut kind) })?;
        match kind {
            sys::ValueType::napi_boolean => {
                let mut b = false;
                // SAFETY: as above.
                check_status!(unsafe { sys::napi_get_value_bool(env, value, &mut b) })?;
                write_bool(b, out);
            }
            sys::ValueType::napi_number => {
                let mut n = 0.0;
                // SAFETY: as above.
                check_status!(unsafe { sys::napi_get_value_double(env, value, &mut n) })?;
                write_number(n, out);
            }
            sys::ValueType::napi_string => {
                // SAFETY: as above; the string is read into `out`, Rust memory.
                unsafe { put_utf8(env, value, out, self.limit, write_str_header) }?
            }
            // SAFETY: as above.
            sys::ValueType::napi_object => unsafe { self.object(value, depth, out) }?,
            sys::ValueType::napi_bigint => {
                // msgpack-lite throws `Unsupported type "bigint": 1` (and the original's
                // send then never called back): here the send fails through its callback.
                let mut text = ptr::null_mut();
                // SAFETY: as above; a BigInt's `toString` is V8's own (coercing a primitive
                // reads no property of a program's), and the text is read into Rust memory.
                let shown = unsafe {
                    if sys::napi_coerce_to_string(env, value, &mut text) == sys::Status::napi_ok {
                        read_string(env, text).unwrap_or_default()
                    } else {
                        String::new()
                    }
                };
                return Err(EncodeError::Refused(format!(
                    "Unsupported type \"bigint\": {shown}"
                )));
            }
            // undefined, null, functions, symbols: nil, as msgpack-lite writes them.
            _ => {
                self.room(out, 1)?;
                write_nil(out);
            }
        }
        Ok(())
    }

    /// # Safety
    ///
    /// `value` is an object, a handle of the walk's scope (see [`Encoder`]).
    unsafe fn object(
        &mut self,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        let mut flag = false;
        // SAFETY: `env` is current and `value` a handle of the walk's scope (the invariant of
        // `Encoder`, and the caller's guarantee); the out-pointers are locals. Runs no
        // JavaScript.
        check_status!(unsafe { sys::napi_is_array(env, value, &mut flag) })?;
        if flag {
            let mut len = 0u32;
            // SAFETY: as above; `value` is an array.
            check_status!(unsafe { sys::napi_get_array_length(env, value, &mut len) })?;
            // SAFETY: as above.
            return unsafe { self.array(value, len, depth, out) };
        }
        // SAFETY: as above; `known` reads into the walk's scope.
        let known = unsafe { self.known() }?;
        let mut class = ptr::null_mut();
        // SAFETY: as above; `known.constructor` is a handle of the walk's scope. Reading
        // `constructor` may run a getter or a Proxy trap; no pointer into a JavaScript object
        // is held here.
        check_status!(unsafe {
            sys::napi_get_property(env, value, known.constructor, &mut class)
        })?;
        // SAFETY: as above; `class` was just read into the walk's scope.
        unsafe { self.object_of_class(value, class, depth, out) }
    }

    /// An object that is not an array (for `napi_is_array`), whose `constructor` was read
    /// already as `class`: what the rest of [`Encoder::object`] makes of it.
    ///
    /// # Safety
    ///
    /// `value` is an object and `class` a value, both handles of the walk's scope (see
    /// [`Encoder`]).
    unsafe fn object_of_class(
        &mut self,
        value: sys::napi_value,
        class: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        let mut flag = false;
        // SAFETY: `env` is current (the invariant of `Encoder`); `known` reads into the walk's
        // scope, and may run getters of `globalThis` with no pointer held.
        let known = unsafe { self.known() }?;
        // SAFETY: `env` is current and `class` and `known.object` handles of the walk's scope
        // (the invariant of `Encoder`, and the caller's guarantee); the out-pointer is a local.
        // Comparing runs no JavaScript.
        check_status!(unsafe { sys::napi_strict_equals(env, class, known.object, &mut flag) })?;
        if flag {
            // SAFETY: as above.
            return unsafe { self.map(value, depth, out) };
        }
        // Buffers and Dates, common in bundles, by identity too.
        // SAFETY: as above.
        let (buffer, date) = unsafe { self.buffer_and_date() }?;
        let name: &[u8];
        let read;
        // SAFETY: as above.
        check_status!(unsafe { sys::napi_strict_equals(env, class, buffer, &mut flag) })?;
        if flag {
            name = b"Buffer";
        } else {
            // SAFETY: as above.
            check_status!(unsafe { sys::napi_strict_equals(env, class, date, &mut flag) })?;
            if flag {
                name = b"Date";
            } else {
                // SAFETY: as above; the name is read into Rust memory.
                let Some(found) = unsafe { self.class_name(class) }? else {
                    // SAFETY: as above.
                    return unsafe { self.map(value, depth, out) };
                };
                read = found;
                name = read.as_bytes();
            }
        }
        if name == b"Object" {
            // SAFETY: as above.
            return unsafe { self.map(value, depth, out) };
        }
        let kind = EXT_CLASSES
            .iter()
            .find(|(class, _)| *class == name)
            .map(|(_, kind)| *kind);
        // msgpack-lite asks `Buffer.isBuffer` before anything else, and views are the only
        // objects that can be Buffers.
        let view = match kind {
            Some(kind)
                if !is_typed_array_kind(kind)
                    && kind != EXT_DATA_VIEW
                    && kind != EXT_ARRAY_BUFFER =>
            {
                None
            }
            // SAFETY: as above.
            _ => unsafe { self.view(value) }?,
        };
        // `Buffer.isBuffer` runs JavaScript (`Buffer[Symbol.hasInstance]`), which may shrink
        // or detach the view's memory: the bytes are read after it, in `with_bytes`.
        if let Some(view @ Viewed::Typed(sys::TypedarrayType::uint8_array)) = view {
            // SAFETY: as above.
            if kind != Some(0x12) && unsafe { self.is_buffer(value, name) }? {
                // SAFETY: as above; `binary` copies the bytes into `out` and makes no
                // Node-API call, as `with_bytes` requires.
                return unsafe { self.with_bytes(value, view, |bytes| self.binary(bytes, out)) }?;
            }
        }
        match (kind, view) {
            (Some(kind), Some(view @ Viewed::Typed(_))) if is_typed_array_kind(kind) => {
                // SAFETY: as above; `ext` copies the bytes and makes no Node-API call.
                unsafe { self.with_bytes(value, view, |bytes| self.ext(kind, bytes, out)) }?
            }
            (Some(EXT_DATA_VIEW), Some(Viewed::DataView)) => {
                // SAFETY: as above.
                unsafe {
                    self.with_bytes(value, Viewed::DataView, |bytes| {
                        self.ext(EXT_DATA_VIEW, bytes, out)
                    })
                }?
            }
            (Some(EXT_ARRAY_BUFFER), Some(Viewed::ArrayBuffer)) => {
                // SAFETY: as above.
                unsafe {
                    self.with_bytes(value, Viewed::ArrayBuffer, |bytes| {
                        self.ext(EXT_ARRAY_BUFFER, bytes, out)
                    })
                }?
            }
            (Some(EXT_DATE), _) => {
                // msgpack-lite writes `Number(date)`.
                let mut ms = 0.0;
                // SAFETY: as above; `number` is read into the walk's scope. Coercing runs
                // the object's `valueOf` (or `Symbol.toPrimitive`), with no pointer held.
                unsafe {
                    check_status!(sys::napi_is_date(env, value, &mut flag))?;
                    if flag {
                        check_status!(sys::napi_get_date_value(env, value, &mut ms))?;
                    } else {
                        let mut number = ptr::null_mut();
                        check_status!(sys::napi_coerce_to_number(env, value, &mut number))?;
                        check_status!(sys::napi_get_value_double(env, number, &mut ms))?;
                    }
                }
                self.room(out, 12)?;
                write_date(ms, out);
                Ok(())
            }
            (Some(kind), _) if is_error_kind(kind) => {
                // SAFETY: as above.
                unsafe { self.error(kind, value, depth, out) }
            }
            // SAFETY: as above.
            (Some(EXT_REGEXP), _) => unsafe { self.regexp(value, out) },
            (Some(kind @ (0x0B | 0x0C | 0x0F)), _) => {
                // `new Boolean`, `new String`, `new Number`: their `valueOf()`.
                let mut primitive = ptr::null_mut();
                // SAFETY: as above; `method` and `primitive` are read into the walk's scope.
                // Reading and calling `valueOf` runs JavaScript, with no pointer held.
                unsafe {
                    let method = property(env, value, c"valueOf")?;
                    check_status!(sys::napi_call_function(
                        env,
                        value,
                        method,
                        0,
                        ptr::null(),
                        &mut primitive
                    ))?;
                }
                self.nested(kind, depth, out, |encoder, payload| {
                    // SAFETY: as above; `primitive` is a handle of the walk's scope.
                    unsafe { encoder.value(primitive, depth + 1, payload) }
                })
            }
            // SAFETY: as above.
            _ if name == b"Array" && unsafe { self.is_array(value) }? => {
                // A Proxy of an array: an array to `Array.isArray`, read through the proxy.
                let mut len = 0u32;
                // SAFETY: as above; reading `length` through the Proxy runs its trap, with no
                // pointer held.
                unsafe {
                    let length = property(env, value, c"length")?;
                    check_status!(sys::napi_get_value_uint32(env, length, &mut len))?;
                    self.array(value, len, depth, out)
                }
            }
            // SAFETY: as above.
            _ => unsafe { self.map(value, depth, out) },
        }
    }

    /// `Buffer` and `Date` (see [`Known`]), looked up once per encoding; only after `known`.
    ///
    /// # Safety
    ///
    /// The `Encoder`'s invariant (there is no other precondition).
    unsafe fn buffer_and_date(&mut self) -> Walk<(sys::napi_value, sys::napi_value)> {
        if let Some(Known {
            more: Some(more), ..
        }) = self.known
        {
            return Ok(more);
        }
        // SAFETY: `env` is current, inside the walk's scope, where the values are read
        // (the invariant of `Encoder`).
        let more = unsafe { buffer_and_date(self.env) }?;
        if let Some(known) = self.known.as_mut() {
            known.more = Some(more);
        }
        Ok(more)
    }

    /// `class.name` for an object's `constructor`, as msgpack-lite finds a packer: `None`
    /// when the constructor is missing or has no string name.
    ///
    /// # Safety
    ///
    /// `class` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn class_name(&mut self, class: sys::napi_value) -> Walk<Option<ClassName>> {
        let env = self.env;
        let mut kind = 0;
        // SAFETY: `env` is current and `class` a handle of the walk's scope (the invariant of
        // `Encoder`, and the caller's guarantee); the out-pointer is a local.
        check_status!(unsafe { sys::napi_typeof(env, class, &mut kind) })?;
        if kind != sys::ValueType::napi_function && kind != sys::ValueType::napi_object {
            return Ok(None);
        }
        // SAFETY: as above; reading `name` may run a getter, with no pointer held.
        let name = unsafe { property(env, class, c"name") }?;
        // SAFETY: as above; `name` was read into the walk's scope.
        check_status!(unsafe { sys::napi_typeof(env, name, &mut kind) })?;
        if kind != sys::ValueType::napi_string {
            return Ok(None);
        }
        let mut out = ClassName {
            bytes: [0; 24],
            len: 0,
        };
        // SAFETY: as above; Node writes at most `out.bytes.len()` bytes into `out.bytes`, Rust
        // memory, and the count into `out.len`. Reading a string runs no JavaScript.
        check_status!(unsafe {
            sys::napi_get_value_string_utf8(
                env,
                name,
                out.bytes.as_mut_ptr().cast::<c_char>(),
                out.bytes.len(),
                &mut out.len,
            )
        })?;
        Ok(Some(out))
    }

    /// Whether `value` is a typed array (of which type), a DataView or an ArrayBuffer; `None`
    /// for any other object. None of these calls runs JavaScript, and none reads the bytes.
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn view(&self, value: sys::napi_value) -> Walk<Option<Viewed>> {
        let env = self.env;
        let mut flag = false;
        // SAFETY: `env` is current and `value` a handle of the walk's scope (the invariant of
        // `Encoder`, and the caller's guarantee); the out-pointers are locals. The data
        // pointer the info call gives is not kept (see `with_bytes`).
        unsafe {
            check_status!(sys::napi_is_typedarray(env, value, &mut flag))?;
            if flag {
                let (mut kind, mut len, mut offset) = (0, 0, 0);
                let (mut data, mut buffer) = (ptr::null_mut(), ptr::null_mut());
                check_status!(sys::napi_get_typedarray_info(
                    env,
                    value,
                    &mut kind,
                    &mut len,
                    &mut data,
                    &mut buffer,
                    &mut offset
                ))?;
                return Ok(Some(Viewed::Typed(kind)));
            }
            check_status!(sys::napi_is_dataview(env, value, &mut flag))?;
            if flag {
                return Ok(Some(Viewed::DataView));
            }
            check_status!(sys::napi_is_arraybuffer(env, value, &mut flag))?;
        }
        Ok(flag.then_some(Viewed::ArrayBuffer))
    }

    /// Calls `write` with the bytes that `value`, a `view` (see [`Encoder::view`]), covers now:
    /// after whatever JavaScript ran before (a getter, `Buffer[Symbol.hasInstance]`, a Proxy
    /// trap) shrank or detached its ArrayBuffer, so none (a detached or out-of-bounds view) or
    /// fewer than before. `write` must not call into JavaScript: the slice points into the
    /// ArrayBuffer's memory, which JavaScript could free.
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]) that [`Encoder::view`] found
    /// to be a `view`; `write` makes no Node-API call (so runs no JavaScript).
    unsafe fn with_bytes<R>(
        &self,
        value: sys::napi_value,
        view: Viewed,
        write: impl FnOnce(&[u8]) -> R,
    ) -> Walk<R> {
        let env = self.env;
        let (mut data, mut len) = (ptr::null_mut(), 0);
        let (mut buffer, mut offset) = (ptr::null_mut(), 0);
        // SAFETY: `env` is current and `value` a handle of the walk's scope, a view of the
        // kind `view` says (the invariant of `Encoder`, and the caller's guarantee); the
        // out-pointers are locals. The info calls run no JavaScript.
        unsafe {
            match view {
                Viewed::Typed(_) => {
                    let mut kind = 0;
                    check_status!(sys::napi_get_typedarray_info(
                        env,
                        value,
                        &mut kind,
                        &mut len,
                        &mut data,
                        &mut buffer,
                        &mut offset
                    ))?;
                    len = len.saturating_mul(element_size(kind));
                }
                Viewed::DataView => check_status!(sys::napi_get_dataview_info(
                    env,
                    value,
                    &mut len,
                    &mut data,
                    &mut buffer,
                    &mut offset
                ))?,
                Viewed::ArrayBuffer => check_status!(sys::napi_get_arraybuffer_info(
                    env, value, &mut data, &mut len
                ))?,
            }
        }
        let bytes: &[u8] = if len == 0 || data.is_null() {
            &[]
        } else {
            // SAFETY: Node just said that `len` bytes live at `data`: the ArrayBuffer's memory
            // as it is now (V8 gives a detached or out-of-bounds view 0 bytes). It stays so
            // while `bytes` lives, because no JavaScript runs until `write` returns: the info
            // call above runs none, and `write` (the encoder's `binary` or `ext`, which copy
            // into `out`) makes no Node-API call. Finalizers the collector queues meanwhile run
            // later, from the event loop. No other thread can shrink or detach an ArrayBuffer
            // (a SharedArrayBuffer, the only kind shared, never shrinks), and no other program
            // can reach this process's heap. A worker may write a SharedArrayBuffer's bytes
            // during the copy: the memory stays valid and the bytes sent may then be a mix of
            // before and after, as with any unsynchronised reader.
            unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
        };
        Ok(write(bytes))
    }

    /// `Buffer.isBuffer(value)` for a Uint8Array-typed view: an instance of the host's
    /// `Buffer`, or, in a host without a global one, a view whose class is named so.
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn is_buffer(&mut self, value: sys::napi_value, name: &[u8]) -> Walk<bool> {
        let env = self.env;
        let class = match self.buffer_class {
            Some(class) => class,
            None => {
                let class = match self.known {
                    // SAFETY: the invariant of `Encoder`.
                    Some(_) => unsafe { self.buffer_and_date() }?.0,
                    // SAFETY: `env` is current, inside the walk's scope (the invariant of
                    // `Encoder`); reading `globalThis.Buffer` may run a getter, with no
                    // pointer held.
                    None => unsafe { global(env, c"Buffer") }?,
                };
                let mut kind = 0;
                // SAFETY: as above; `class` was read into the walk's scope, and the
                // out-pointer is a local.
                check_status!(unsafe { sys::napi_typeof(env, class, &mut kind) })?;
                let class = if kind == sys::ValueType::napi_function {
                    class
                } else {
                    ptr::null_mut()
                };
                self.buffer_class = Some(class);
                class
            }
        };
        if class.is_null() {
            return Ok(name == b"Buffer");
        }
        let mut result = false;
        // SAFETY: as above, and `value` is a handle of the walk's scope (the caller's
        // guarantee). `instanceof` runs `Buffer[Symbol.hasInstance]`: no pointer into a
        // JavaScript object is held across it (the bytes are read after, by `with_bytes`).
        check_status!(unsafe { sys::napi_instanceof(env, value, class, &mut result) })?;
        Ok(result)
    }

    /// `Array.isArray(value)`, which sees through a Proxy where Node-API does not.
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn is_array(&self, value: sys::napi_value) -> Walk<bool> {
        let env = self.env;
        let mut flag = false;
        // SAFETY: `env` is current and `value` a handle of the walk's scope (the invariant of
        // `Encoder`, and the caller's guarantee); the values read and made live there, the
        // out-pointers are locals, and `&value` outlives the call that reads it. Reading
        // `Array.isArray` and calling it may run JavaScript, with no pointer held.
        unsafe {
            let array = global(env, c"Array")?;
            let is_array = property(env, array, c"isArray")?;
            let mut result = ptr::null_mut();
            check_status!(sys::napi_call_function(
                env,
                array,
                is_array,
                1,
                &value,
                &mut result
            ))?;
            check_status!(sys::napi_get_value_bool(env, result, &mut flag))?;
        }
        Ok(flag)
    }

    fn binary(&self, bytes: &[u8], out: &mut BytesMut) -> Walk<()> {
        self.room(out, bytes.len().saturating_add(5))?;
        if bytes.len() > LARGE_BUFFER {
            out.reserve(bytes.len() + AFTER_LARGE_BUFFER);
        }
        write_binary(bytes, out);
        Ok(())
    }

    fn ext(&self, kind: i8, bytes: &[u8], out: &mut BytesMut) -> Walk<()> {
        self.room(out, bytes.len().saturating_add(6))?;
        if bytes.len() > LARGE_BUFFER {
            out.reserve(bytes.len() + AFTER_LARGE_BUFFER);
        }
        write_ext(kind, bytes, out);
        Ok(())
    }

    /// An extension whose data is the MessagePack of what `payload` writes, as msgpack-lite's
    /// packers that `encode` a value first.
    fn nested(
        &mut self,
        kind: i8,
        depth: usize,
        out: &mut BytesMut,
        payload: impl FnOnce(&mut Encoder, &mut BytesMut) -> Walk<()>,
    ) -> Walk<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let limit = self.limit;
        self.limit = limit.saturating_sub(out.len() + 6);
        let mut data = BytesMut::new();
        let written = payload(self, &mut data);
        self.limit = limit;
        written?;
        self.ext(kind, &data, out)
    }

    /// An Error as msgpack-lite writes it: a map of six properties, missing ones as nil.
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn error(
        &mut self,
        kind: i8,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        self.nested(kind, depth, out, |encoder, payload| {
            write_map_header(ERROR_COLUMNS.len(), payload);
            for key in ERROR_COLUMNS {
                write_str(&key.to_string_lossy(), payload);
                // SAFETY: `env` is current and `value` a handle of the walk's scope (the
                // invariant of `Encoder`, and the caller's guarantee); `item` is read into
                // that scope. Reading may run a getter, with no pointer held.
                unsafe {
                    let item = property(env, value, key)?;
                    encoder.value(item, depth + 1, payload)?;
                }
            }
            Ok(())
        })
    }

    /// A RegExp as msgpack-lite writes it: `[source, flags]`, from its `toString()` parts.
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn regexp(&mut self, value: sys::napi_value, out: &mut BytesMut) -> Walk<()> {
        let env = self.env;
        self.nested(EXT_REGEXP, 0, out, |encoder, payload| {
            write_array_header(2, payload);
            for key in [c"source", c"flags"] {
                // SAFETY: `env` is current and `value` a handle of the walk's scope (the
                // invariant of `Encoder`, and the caller's guarantee); `part` and `text` are
                // read into that scope, and the string into `payload`, Rust memory. Reading
                // and coercing may run JavaScript, with no pointer held.
                unsafe {
                    let part = property(env, value, key)?;
                    let mut text = ptr::null_mut();
                    check_status!(sys::napi_coerce_to_string(env, part, &mut text))?;
                    put_utf8(env, text, payload, encoder.limit, write_str_header)?;
                }
            }
            Ok(())
        })
    }

    /// Writes the container `value` with `walk`, or copies what an earlier walk of the same
    /// object wrote (see [`MEMO_AFTER`]).
    ///
    /// # Safety
    ///
    /// `value` is a handle of the walk's scope (see [`Encoder`]).
    unsafe fn memoized(
        &mut self,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
        walk: impl FnOnce(&mut Encoder, &mut BytesMut) -> Walk<()>,
    ) -> Walk<()> {
        if self.visited < MEMO_AFTER || !ptr::eq(&*out, self.top) {
            return walk(self, out);
        }
        let env = self.env;
        if self.memo.is_none() {
            // SAFETY: `env` is current, inside the walk's scope, where the `Map` and its
            // methods are read and made (the invariant of `Encoder`); the out-pointer is a
            // local. Reading `globalThis.Map` and constructing it may run JavaScript, with no
            // pointer held.
            self.memo = Some(unsafe {
                let class = global(env, c"Map")?;
                let mut map = ptr::null_mut();
                check_status!(sys::napi_new_instance(env, class, 0, ptr::null(), &mut map))?;
                let get = property(env, map, c"get")?;
                let set = property(env, map, c"set")?;
                Memo {
                    map,
                    get,
                    set,
                    written: Vec::new(),
                }
            });
        }
        let Some(memo) = self.memo.as_ref() else {
            return walk(self, out);
        };
        let (map, get, set) = (memo.map, memo.get, memo.set);
        let mut found = ptr::null_mut();
        let mut index = 0u32;
        // SAFETY: as above, and `value` is a handle of the walk's scope (the caller's
        // guarantee); `&value` outlives the call that reads it. `get` may run JavaScript (a
        // program's `Map.prototype.get`), with no pointer held.
        let got = unsafe {
            check_status!(sys::napi_call_function(
                env, map, get, 1, &value, &mut found
            ))?;
            sys::napi_get_value_uint32(env, found, &mut index) == sys::Status::napi_ok
        };
        if got {
            let earlier = memo.written.get(index as usize).copied();
            if let Some((start, len, _)) = earlier.filter(|(_, _, at)| depth <= *at) {
                self.room(out, len)?;
                let bytes = out[start..start + len].to_vec();
                out.extend_from_slice(&bytes);
                return Ok(());
            }
        }
        let start = out.len();
        walk(self, out)?;
        if let Some(memo) = self.memo.as_mut() {
            let mut key = ptr::null_mut();
            // SAFETY: as above.
            check_status!(unsafe {
                sys::napi_create_uint32(env, memo.written.len() as u32, &mut key)
            })?;
            memo.written.push((start, out.len() - start, depth));
            let mut ignored = ptr::null_mut();
            // SAFETY: as above; the arguments outlive the call that reads them.
            check_status!(unsafe {
                sys::napi_call_function(env, map, set, 2, [value, key].as_ptr(), &mut ignored)
            })?;
        }
        Ok(())
    }

    /// # Safety
    ///
    /// `value` is an array (or a Proxy of one) of `len` items, a handle of the walk's scope
    /// (see [`Encoder`]).
    unsafe fn array(
        &mut self,
        value: sys::napi_value,
        len: u32,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe {
            self.memoized(value, depth, out, |encoder, out| {
                encoder.array_walk(value, len, depth, out)
            })
        }
    }

    /// # Safety
    ///
    /// As [`Encoder::array`].
    unsafe fn array_walk(
        &mut self,
        value: sys::napi_value,
        len: u32,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        // Every item takes at least a byte. (Saturating: on 32-bit machines 2^32 - 1 items would
        // wrap to a few bytes and be walked one by one.)
        self.room(out, (len as usize).saturating_add(5))?;
        write_array_header(len as usize, out);
        for i in 0..len {
            let mut item = ptr::null_mut();
            // SAFETY: `env` is current and `value` a handle of the walk's scope (the
            // invariant of `Encoder`, and the caller's guarantee); `item` is read into that
            // scope. Reading may run a getter or a Proxy trap, with no pointer held.
            unsafe {
                check_status!(sys::napi_get_element(self.env, value, i, &mut item))?;
                self.value(item, depth + 1, out)?;
            }
            self.room(out, 0)?;
        }
        Ok(())
    }

    /// # Safety
    ///
    /// `value` is an object, a handle of the walk's scope (see [`Encoder`]).
    unsafe fn map(&mut self, value: sys::napi_value, depth: usize, out: &mut BytesMut) -> Walk<()> {
        // SAFETY: the caller's guarantee, passed on.
        unsafe {
            self.memoized(value, depth, out, |encoder, out| {
                encoder.map_walk(value, depth, out)
            })
        }
    }

    /// An object's own enumerable string keys, in property order (`Object.keys`).
    ///
    /// # Safety
    ///
    /// As [`Encoder::map`].
    unsafe fn map_walk(
        &mut self,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        if depth >= MAX_DEPTH {
            return Err(too_deep());
        }
        let env = self.env;
        let mut keys = ptr::null_mut();
        let mut len = 0u32;
        // SAFETY: `env` is current and `value` a handle of the walk's scope (the invariant of
        // `Encoder`, and the caller's guarantee); `keys` is read into that scope, and the
        // out-pointers are locals. Listing the keys may run a Proxy's `ownKeys` trap, with no
        // pointer held; `keys` is a fresh array, so its length runs nothing.
        unsafe {
            check_status!(sys::napi_get_all_property_names(
                env,
                value,
                sys::KeyCollectionMode::own_only,
                sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
                sys::KeyConversion::numbers_to_strings,
                &mut keys
            ))?;
            check_status!(sys::napi_get_array_length(env, keys, &mut len))?;
        }
        // SAFETY: as above; `keys` is a fresh array of `len` strings.
        unsafe { self.map_entries(value, keys, len, None, 0, None, depth, out) }
    }

    /// The map of `value`'s entries for `keys` (an array of `len` strings, listed as
    /// `Object.keys` lists them): its header and the entries before `start`, or, when given,
    /// `written` instead (a Uint8Array and how many of its bytes: that header and those
    /// entries as this walk writes them), then the entries from `start` on, the first of them
    /// with the value `first` when it was read already.
    ///
    /// # Safety
    ///
    /// `value` is an object and `keys` an array of `len` strings made by `Object.keys` or
    /// `napi_get_all_property_names` (own data elements: reading them runs no JavaScript),
    /// `first` a value, `written` a Uint8Array; all handles of the walk's scope (see
    /// [`Encoder`]).
    #[allow(clippy::too_many_arguments)]
    unsafe fn map_entries(
        &mut self,
        value: sys::napi_value,
        keys: sys::napi_value,
        len: u32,
        written: Option<(sys::napi_value, usize)>,
        start: u32,
        mut first: Option<sys::napi_value>,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        // Every entry takes at least two bytes.
        self.room(out, (len as usize).saturating_mul(2).saturating_add(5))?;
        if let Some((scratch, written)) = written {
            // SAFETY: `env` is current and `scratch` a handle of the walk's scope (the
            // invariant of `Encoder`, and the caller's guarantee); the bytes are copied into
            // `out` before any JavaScript runs below.
            unsafe { append_scratch(env, scratch, written, self.limit, out) }?;
        } else {
            write_map_header(len as usize, out);
        }
        for i in start..len {
            let mut key = ptr::null_mut();
            // SAFETY: `env` is current and `value`, `keys` and `first` handles of the walk's
            // scope (the invariant of `Encoder`, and the caller's guarantee); `key` and `item`
            // are read into that scope, and the key into `out`, Rust memory. Reading the item
            // may run a getter or a Proxy trap, with no pointer held.
            unsafe {
                check_status!(sys::napi_get_element(env, keys, i, &mut key))?;
                let item = match first.take() {
                    Some(item) => item,
                    None => {
                        let mut item = ptr::null_mut();
                        check_status!(sys::napi_get_property(env, value, key, &mut item))?;
                        item
                    }
                };
                put_utf8(env, key, out, self.limit, write_str_header)?;
                self.value(item, depth + 1, out)?;
            }
            self.room(out, 0)?;
        }
        Ok(())
    }
}
