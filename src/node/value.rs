//! JavaScript values and the wire, following docs/PROTOCOL.md section 5 (MessagePack mapping):
//! a JS value is written straight into MessagePack ([`encode`]), and a wire [`Value`] becomes a
//! JS value ([`write`]). Raw Node-API calls, so a bundle is walked once with no intermediate
//! JSON, serde or [`Value`] layer.
//!
//! The authority is msgpack-lite 0.1.26's `encode`, which the original client used and the
//! gateway decodes with: a Buffer is bin, an array (a Proxy of one too) is an array, and any
//! other object is written according to the name of its constructor, as msgpack-lite picks
//! its extension packers: typed arrays, DataView, ArrayBuffer, boxed primitives, RegExp, Date
//! and the Error classes become their extension types, anything else a map of its own
//! enumerable keys. Decoding turns those extension types back into the same classes, as
//! msgpack-lite's `decode` does.
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
//! `napi_get_date_value`) run no JavaScript; strings are primitives, read into Rust memory.

use std::ffi::{c_char, c_void, CStr};
use std::ptr;

use bytes::{BufMut, Bytes, BytesMut};
use napi::bindgen_prelude::{ToNapiValue, TypeName};
use napi::{check_status, sys, Error, Result, ValueType};

use crate::errors::ErrorCode;
use crate::protocol::text::{units, Units};
use crate::protocol::value::{
    write_array_header, write_binary, write_bool, write_date, write_ext, write_map_header,
    write_nil, write_number, write_str, write_str_header, MAX_DEPTH, SHARED_TEXT_FROM,
};
use crate::protocol::{decode, DecodeError, Text, Value, MAX_BUFFER};

/// A [`Value`] on its way to JavaScript.
pub struct JsValue(pub Value);

/// Both value types are any JavaScript value to napi's type checks.
macro_rules! any_js_type {
    ($($ty:ty),*) => {$(
        impl TypeName for $ty {
            fn type_name() -> &'static str {
                "unknown"
            }
            fn value_type() -> ValueType {
                ValueType::Unknown
            }
        }
    )*};
}
any_js_type!(JsValue, JsValueCopy);

impl ToNapiValue for JsValue {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        write(env, &val.0)
    }
}

/// A [`Value`] that goes to JavaScript with every binary copied: for values whose bytes Rust
/// still reads after handing them over (the bundled Server echoes an event's bundle), since
/// JavaScript may write into a Buffer it is given.
pub struct JsValueCopy(pub Value);

impl ToNapiValue for JsValueCopy {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let borrowing = BORROW.with(|b| b.replace(false));
        let made = write(env, &val.0);
        BORROW.with(|b| b.set(borrowing));
        made
    }
}

thread_local! {
    /// Large binaries may go to JavaScript as Buffers over the received bytes (see
    /// [`write_buffer`]); cleared while a [`JsValueCopy`] is written.
    static BORROW: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// How many maps enclose every JavaScript value the protocol carries: each is a field of a
/// message's map (an id, a bundle, an action's parameters).
pub const FIELD_DEPTH: usize = 1;

/// Why a JavaScript value was not encoded. The calls made from JavaScript throw it as an
/// `Error` whose `code` is [`EncodeError::code`] (see `node::client::run_call`).
#[derive(Debug)]
pub enum EncodeError {
    /// The frame would pass the 10 MiB cap: `IM491`, `Maximum buffer size exceeded.`
    OverBudget,
    /// Not a value the wire can carry: nested too deeply (or circular), a `BigInt`.
    Refused(String),
    /// A Node-API call failed, or JavaScript run by the walk (a getter, a Proxy trap) threw,
    /// and that exception is pending: it is what JavaScript gets.
    Napi(Error),
    /// The durable outbox refused the event: `EQUEUEFULL`, `ENOSPC`, ... (not a value's fault).
    Stored(ErrorCode, String),
}

impl EncodeError {
    /// The `code` of the `Error` JavaScript gets.
    pub fn code(&self) -> ErrorCode {
        match self {
            EncodeError::OverBudget => ErrorCode::BufferExceeded,
            EncodeError::Refused(_) => ErrorCode::InvalidValue,
            EncodeError::Napi(_) => ErrorCode::Internal,
            EncodeError::Stored(code, _) => code.clone(),
        }
    }
}

impl From<Error> for EncodeError {
    fn from(err: Error) -> EncodeError {
        EncodeError::Napi(err)
    }
}

/// What cannot be decoded was refused: an argument's fault, as when it nests too deeply.
impl From<DecodeError> for EncodeError {
    fn from(err: DecodeError) -> EncodeError {
        EncodeError::Refused(err.0)
    }
}

/// The `Error` JavaScript gets: the code, and the message alone.
impl From<EncodeError> for Error<ErrorCode> {
    fn from(err: EncodeError) -> Error<ErrorCode> {
        let code = err.code();
        let message = match err {
            EncodeError::OverBudget => "Maximum buffer size exceeded.".to_owned(),
            EncodeError::Refused(message) => message,
            EncodeError::Napi(err) => err.reason,
            EncodeError::Stored(_, message) => message,
        };
        Error::new(code, message)
    }
}

type Walk<T> = std::result::Result<T, EncodeError>;

/// `value` as a [`Value`]: encoded by [`encode`] and decoded again, so it is exactly what
/// the wire will carry and there is one walk of JavaScript values, not two to keep alike.
///
/// # Safety
///
/// `env` is live and this runs on its JavaScript thread inside a handle scope (a call from
/// JavaScript); `value` is a handle of that scope.
pub unsafe fn to_value(env: sys::napi_env, value: sys::napi_value) -> Walk<Value> {
    // A string (an action's id, nearly always) is read as it is: what encoding and decoding
    // it would give, without the round trip. Long ones take the walk, which bounds them.
    let mut kind = 0;
    check_status!(sys::napi_typeof(env, value, &mut kind))?;
    if kind == sys::ValueType::napi_string {
        let mut short = [0u8; SHORT_STRING];
        if let Some(len) = read_short(env, value, &mut short)? {
            return Ok(Value::String(
                String::from_utf8_lossy(&short[..len]).into_owned().into(),
            ));
        }
    }
    let mut body = BytesMut::with_capacity(64);
    encode(env, value, FIELD_DEPTH, &mut body)?;
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
/// As [`to_value`]: a live `env`, its JavaScript thread, a handle scope, and `value` a handle
/// of it. The walk calls getters, which may run any JavaScript.
pub unsafe fn encode(
    env: sys::napi_env,
    value: sys::napi_value,
    depth: usize,
    out: &mut BytesMut,
) -> Walk<()> {
    let mut encoder = Encoder {
        env,
        limit: MAX_BUFFER,
        buffer_class: None,
        known: None,
        visited: 0,
        memo: None,
        top: &*out,
    };
    encoder.value(value, depth, out)
}

fn too_deep() -> EncodeError {
    EncodeError::Refused("Value is nested too deeply (or is circular).".to_owned())
}

/// Strings this long or shorter are read with one Node-API call instead of two.
pub(super) const SHORT_STRING: usize = 256;

/// Reads the string `value` into `buffer` with one call: `Some(len)` when `buffer[..len]` is the
/// whole string (valid UTF-8 as Node writes it: lone surrogates become U+FFFD), `None` when the
/// string is longer.
///
/// # Safety
///
/// As [`read_string`].
unsafe fn read_short(
    env: sys::napi_env,
    value: sys::napi_value,
    buffer: &mut [u8; SHORT_STRING],
) -> Walk<Option<usize>> {
    let mut written = 0;
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        buffer.as_mut_ptr().cast::<c_char>(),
        buffer.len(),
        &mut written
    ))?;
    // Node stops before a character that does not fit whole, so a result more than 4 bytes
    // short of the room (one byte of it is the terminating NUL) is the whole string.
    Ok((written + 4 < buffer.len() - 1).then_some(written))
}

/// Appends the UTF-8 of the string `value` to `out`, after what `before(len, out)` writes
/// once its length is known, unless `out` would then hold more than `limit` bytes. A short
/// string (ids, types, keys: nearly all) is read with one call into a buffer on the stack, a
/// long one straight into `out`. Node writes valid UTF-8 (lone surrogates become U+FFFD).
unsafe fn put_utf8(
    env: sys::napi_env,
    value: sys::napi_value,
    out: &mut BytesMut,
    limit: usize,
    before: impl FnOnce(usize, &mut BytesMut),
) -> Walk<()> {
    let mut short = [0u8; SHORT_STRING];
    if let Some(written) = read_short(env, value, &mut short)? {
        if out.len() + written + 5 > limit {
            return Err(EncodeError::OverBudget);
        }
        before(written, out);
        out.put_slice(&short[..written]);
        return Ok(());
    }
    let (mut len, mut written) = (0, 0);
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        ptr::null_mut(),
        0,
        &mut len
    ))?;
    if out.len().saturating_add(len).saturating_add(5) > limit {
        return Err(EncodeError::OverBudget);
    }
    before(len, out);
    out.reserve(len + 1);
    let room = out.spare_capacity_mut();
    check_status!(sys::napi_get_value_string_utf8(
        env,
        value,
        room.as_mut_ptr().cast::<c_char>(),
        len + 1,
        &mut written
    ))?;
    if written != len {
        return Err(EncodeError::Refused(
            "A string changed while being read.".to_owned(),
        ));
    }
    // SAFETY: Node initialised these `len` bytes, inside the capacity reserved above (Rust
    // memory: reading a string primitive runs no JavaScript).
    out.set_len(out.len() + len);
    Ok(())
}

/// The JavaScript string `value` as UTF-8 in `buffer` when it fits there whole (event types,
/// nearly always), so that reading it allocates nothing; `None` when it does not (then use
/// [`read_string`]).
///
/// # Safety
///
/// As [`read_string`].
pub(super) unsafe fn short_string(
    env: sys::napi_env,
    value: sys::napi_value,
    buffer: &mut [u8; SHORT_STRING],
) -> Walk<Option<&str>> {
    let len = read_short(env, value, buffer)?;
    Ok(len.and_then(|len| std::str::from_utf8(&buffer[..len]).ok()))
}

/// The JavaScript string `value` as UTF-8.
///
/// # Safety
///
/// `env` is live and this runs on its JavaScript thread; `value` is a handle of the current
/// handle scope.
pub(super) unsafe fn read_string(env: sys::napi_env, value: sys::napi_value) -> Walk<String> {
    let mut bytes = BytesMut::new();
    put_utf8(env, value, &mut bytes, usize::MAX, |_, _| {})?;
    // Valid UTF-8, and a BytesMut of its own: no copy either way.
    Ok(String::from_utf8(Vec::from(bytes))
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
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

const EXT_REGEXP: i8 = 0x0A;
const EXT_DATE: i8 = 0x0D;
const EXT_ARRAY_BUFFER: i8 = 0x1A;
const EXT_BUFFER: i8 = 0x1B;
const EXT_DATA_VIEW: i8 = 0x1D;

/// The properties msgpack-lite writes (and reads back) for an Error, in its order.
const ERROR_COLUMNS: [&CStr; 6] = [
    c"name",
    c"message",
    c"stack",
    c"columnNumber",
    c"fileName",
    c"lineNumber",
];

fn is_error_kind(kind: i8) -> bool {
    matches!(kind, 0x01..=0x06 | 0x0E)
}

fn is_typed_array_kind(kind: i8) -> bool {
    matches!(kind, 0x11..=0x19)
}

/// What the encoder looks at on every object, made once per encoding so that no property
/// name is made from UTF-8 per object: the key `constructor`, and the classes told apart by
/// identity without reading their names, `Object`, and (`more`, looked up at the first object
/// of another class) `Buffer` and `Date` (undefined when the host has no such function); the
/// classes are kept by reference per environment.
#[derive(Clone, Copy)]
struct Known {
    constructor: sys::napi_value,
    object: sys::napi_value,
    more: Option<(sys::napi_value, sys::napi_value)>,
}

thread_local! {
    /// References to `Object`, `Buffer` and `Date` (null when there is no function to refer
    /// to) and to a one-element array holding the key `constructor` as V8 interns it, for one
    /// environment of this thread, the first to encode.
    static KNOWN: std::cell::RefCell<Option<(usize, [sys::napi_ref; 4])>> =
        const { std::cell::RefCell::new(None) };
}

/// The key `constructor` as V8 keeps property names (internalized), in a one-element array
/// (Node-API 8 refers to objects only, not to strings): a key made from UTF-8 on every
/// encoding would be hashed and looked up in V8's string table by every property read with it.
unsafe fn constructor_key_holder(env: sys::napi_env) -> Result<sys::napi_value> {
    let mut object = ptr::null_mut();
    check_status!(sys::napi_create_object(env, &mut object))?;
    let mut undefined = ptr::null_mut();
    check_status!(sys::napi_get_undefined(env, &mut undefined))?;
    check_status!(sys::napi_set_named_property(
        env,
        object,
        c"constructor".as_ptr(),
        undefined
    ))?;
    let mut keys = ptr::null_mut();
    check_status!(sys::napi_get_all_property_names(
        env,
        object,
        sys::KeyCollectionMode::own_only,
        sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
        sys::KeyConversion::keep_numbers,
        &mut keys
    ))?;
    Ok(keys)
}

/// The cached references of `env`, if it is the environment [`KNOWN`] serves.
fn known_refs(env: sys::napi_env) -> Option<[sys::napi_ref; 4]> {
    KNOWN.with(|k| {
        k.borrow()
            .as_ref()
            .filter(|(owner, _)| *owner == env as usize)
            .map(|(_, refs)| *refs)
    })
}

/// The value `reference` holds, or undefined for a null one (no such function).
unsafe fn referred(env: sys::napi_env, reference: sys::napi_ref) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    if reference.is_null() {
        check_status!(sys::napi_get_undefined(env, &mut value))?;
    } else {
        check_status!(sys::napi_get_reference_value(env, reference, &mut value))?;
    }
    Ok(value)
}

/// The key `constructor` and `Object`: what every object is compared with.
unsafe fn known(env: sys::napi_env) -> Result<Known> {
    if let Some(refs) = known_refs(env) {
        let object = referred(env, refs[0])?;
        let holder = referred(env, refs[3])?;
        let mut constructor = ptr::null_mut();
        check_status!(sys::napi_get_element(env, holder, 0, &mut constructor))?;
        return Ok(Known {
            constructor,
            object,
            more: None,
        });
    }
    let constructor = string(env, "constructor")?;
    let classes = [
        global(env, c"Object")?,
        global(env, c"Buffer")?,
        global(env, c"Date")?,
    ];
    if KNOWN.with(|k| k.borrow().is_none()) {
        let mut refs = [ptr::null_mut(); 4];
        for (reference, value) in refs.iter_mut().zip(classes) {
            let mut kind = 0;
            check_status!(sys::napi_typeof(env, value, &mut kind))?;
            if kind == sys::ValueType::napi_function {
                check_status!(sys::napi_create_reference(env, value, 1, reference))?;
            }
        }
        let holder = constructor_key_holder(env)?;
        check_status!(sys::napi_create_reference(env, holder, 1, &mut refs[3]))?;
        KNOWN.with(|k| *k.borrow_mut() = Some((env as usize, refs)));
        check_status!(sys::napi_add_env_cleanup_hook(
            env,
            Some(forget_known),
            env.cast()
        ))?;
    }
    let [object, buffer, date] = classes;
    Ok(Known {
        constructor,
        object,
        more: Some((buffer, date)),
    })
}

/// `Buffer` and `Date` (undefined when the host has no such function), needed only for an
/// object whose class is not `Object`.
unsafe fn buffer_and_date(env: sys::napi_env) -> Result<(sys::napi_value, sys::napi_value)> {
    match known_refs(env) {
        Some(refs) => Ok((referred(env, refs[1])?, referred(env, refs[2])?)),
        None => Ok((global(env, c"Buffer")?, global(env, c"Date")?)),
    }
}

/// The environment that made [`KNOWN`] is going away: its references go with it.
unsafe extern "C" fn forget_known(env: *mut c_void) {
    let env: sys::napi_env = env.cast();
    let taken = KNOWN.with(|k| {
        let mut k = k.borrow_mut();
        match k.as_ref() {
            Some((owner, _)) if *owner == env as usize => k.take(),
            _ => None,
        }
    });
    if let Some((_, refs)) = taken {
        for reference in refs.into_iter().filter(|r| !r.is_null()) {
            sys::napi_delete_reference(env, reference);
        }
    }
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

fn element_size(kind: sys::napi_typedarray_type) -> usize {
    use sys::TypedarrayType as T;
    if kind == T::int16_array || kind == T::uint16_array {
        2
    } else if kind == T::int32_array || kind == T::uint32_array || kind == T::float32_array {
        4
    } else if kind == T::float64_array || kind == T::bigint64_array || kind == T::biguint64_array {
        8
    } else {
        1
    }
}

/// One walk of a JavaScript value into MessagePack.
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
    fn room(&self, out: &BytesMut, need: usize) -> Walk<()> {
        if out.len().saturating_add(need) > self.limit {
            return Err(EncodeError::OverBudget);
        }
        Ok(())
    }

    unsafe fn value(
        &mut self,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        self.visited += 1;
        let mut kind = 0;
        check_status!(sys::napi_typeof(env, value, &mut kind))?;
        match kind {
            sys::ValueType::napi_boolean => {
                let mut b = false;
                check_status!(sys::napi_get_value_bool(env, value, &mut b))?;
                write_bool(b, out);
            }
            sys::ValueType::napi_number => {
                let mut n = 0.0;
                check_status!(sys::napi_get_value_double(env, value, &mut n))?;
                write_number(n, out);
            }
            sys::ValueType::napi_string => put_utf8(env, value, out, self.limit, write_str_header)?,
            sys::ValueType::napi_object => self.object(value, depth, out)?,
            sys::ValueType::napi_bigint => {
                // msgpack-lite throws `Unsupported type "bigint": 1` (and the original's
                // send then never called back): here the send fails through its callback.
                let mut text = ptr::null_mut();
                let shown =
                    if sys::napi_coerce_to_string(env, value, &mut text) == sys::Status::napi_ok {
                        read_string(env, text).unwrap_or_default()
                    } else {
                        String::new()
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

    unsafe fn object(
        &mut self,
        value: sys::napi_value,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        let env = self.env;
        let mut flag = false;
        check_status!(sys::napi_is_array(env, value, &mut flag))?;
        if flag {
            let mut len = 0u32;
            check_status!(sys::napi_get_array_length(env, value, &mut len))?;
            return self.array(value, len, depth, out);
        }
        let known = match self.known {
            Some(known) => known,
            None => *self.known.insert(known(env)?),
        };
        let mut class = ptr::null_mut();
        check_status!(sys::napi_get_property(
            env,
            value,
            known.constructor,
            &mut class
        ))?;
        check_status!(sys::napi_strict_equals(env, class, known.object, &mut flag))?;
        if flag {
            return self.map(value, depth, out);
        }
        // Buffers and Dates, common in bundles, by identity too.
        let (buffer, date) = self.buffer_and_date()?;
        let name: &[u8];
        let read;
        check_status!(sys::napi_strict_equals(env, class, buffer, &mut flag))?;
        if flag {
            name = b"Buffer";
        } else {
            check_status!(sys::napi_strict_equals(env, class, date, &mut flag))?;
            if flag {
                name = b"Date";
            } else {
                let Some(found) = self.class_name(class)? else {
                    return self.map(value, depth, out);
                };
                read = found;
                name = read.as_bytes();
            }
        }
        if name == b"Object" {
            return self.map(value, depth, out);
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
            _ => self.view(value)?,
        };
        // `Buffer.isBuffer` runs JavaScript (`Buffer[Symbol.hasInstance]`), which may shrink
        // or detach the view's memory: the bytes are read after it, in `with_bytes`.
        if let Some(view @ Viewed::Typed(sys::TypedarrayType::uint8_array)) = view {
            if kind != Some(0x12) && self.is_buffer(value, name)? {
                return self.with_bytes(value, view, |bytes| self.binary(bytes, out))?;
            }
        }
        match (kind, view) {
            (Some(kind), Some(view @ Viewed::Typed(_))) if is_typed_array_kind(kind) => {
                self.with_bytes(value, view, |bytes| self.ext(kind, bytes, out))?
            }
            (Some(EXT_DATA_VIEW), Some(Viewed::DataView)) => {
                self.with_bytes(value, Viewed::DataView, |bytes| {
                    self.ext(EXT_DATA_VIEW, bytes, out)
                })?
            }
            (Some(EXT_ARRAY_BUFFER), Some(Viewed::ArrayBuffer)) => {
                self.with_bytes(value, Viewed::ArrayBuffer, |bytes| {
                    self.ext(EXT_ARRAY_BUFFER, bytes, out)
                })?
            }
            (Some(EXT_DATE), _) => {
                // msgpack-lite writes `Number(date)`.
                let mut ms = 0.0;
                check_status!(sys::napi_is_date(env, value, &mut flag))?;
                if flag {
                    check_status!(sys::napi_get_date_value(env, value, &mut ms))?;
                } else {
                    let mut number = ptr::null_mut();
                    check_status!(sys::napi_coerce_to_number(env, value, &mut number))?;
                    check_status!(sys::napi_get_value_double(env, number, &mut ms))?;
                }
                self.room(out, 12)?;
                write_date(ms, out);
                Ok(())
            }
            (Some(kind), _) if is_error_kind(kind) => self.error(kind, value, depth, out),
            (Some(EXT_REGEXP), _) => self.regexp(value, out),
            (Some(kind @ (0x0B | 0x0C | 0x0F)), _) => {
                // `new Boolean`, `new String`, `new Number`: their `valueOf()`.
                let method = property(env, value, c"valueOf")?;
                let mut primitive = ptr::null_mut();
                check_status!(sys::napi_call_function(
                    env,
                    value,
                    method,
                    0,
                    ptr::null(),
                    &mut primitive
                ))?;
                self.nested(kind, depth, out, |encoder, payload| {
                    encoder.value(primitive, depth + 1, payload)
                })
            }
            _ if name == b"Array" && self.is_array(value)? => {
                // A Proxy of an array: an array to `Array.isArray`, read through the proxy.
                let length = property(env, value, c"length")?;
                let mut len = 0u32;
                check_status!(sys::napi_get_value_uint32(env, length, &mut len))?;
                self.array(value, len, depth, out)
            }
            _ => self.map(value, depth, out),
        }
    }

    /// `Buffer` and `Date` (see [`Known`]), looked up once per encoding; only after `known`.
    unsafe fn buffer_and_date(&mut self) -> Walk<(sys::napi_value, sys::napi_value)> {
        if let Some(Known {
            more: Some(more), ..
        }) = self.known
        {
            return Ok(more);
        }
        let more = buffer_and_date(self.env)?;
        if let Some(known) = self.known.as_mut() {
            known.more = Some(more);
        }
        Ok(more)
    }

    /// `class.name` for an object's `constructor`, as msgpack-lite finds a packer: `None`
    /// when the constructor is missing or has no string name.
    unsafe fn class_name(&mut self, class: sys::napi_value) -> Walk<Option<ClassName>> {
        let env = self.env;
        let mut kind = 0;
        check_status!(sys::napi_typeof(env, class, &mut kind))?;
        if kind != sys::ValueType::napi_function && kind != sys::ValueType::napi_object {
            return Ok(None);
        }
        let name = property(env, class, c"name")?;
        check_status!(sys::napi_typeof(env, name, &mut kind))?;
        if kind != sys::ValueType::napi_string {
            return Ok(None);
        }
        let mut out = ClassName {
            bytes: [0; 24],
            len: 0,
        };
        check_status!(sys::napi_get_value_string_utf8(
            env,
            name,
            out.bytes.as_mut_ptr().cast::<c_char>(),
            out.bytes.len(),
            &mut out.len
        ))?;
        Ok(Some(out))
    }

    /// Whether `value` is a typed array (of which type), a DataView or an ArrayBuffer; `None`
    /// for any other object. None of these calls runs JavaScript, and none reads the bytes.
    unsafe fn view(&self, value: sys::napi_value) -> Walk<Option<Viewed>> {
        let env = self.env;
        let mut flag = false;
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
        Ok(flag.then_some(Viewed::ArrayBuffer))
    }

    /// Calls `write` with the bytes that `value`, a `view` (see [`Encoder::view`]), covers now:
    /// after whatever JavaScript ran before (a getter, `Buffer[Symbol.hasInstance]`, a Proxy
    /// trap) shrank or detached its ArrayBuffer, so none (a detached or out-of-bounds view) or
    /// fewer than before. `write` must not call into JavaScript: the slice points into the
    /// ArrayBuffer's memory, which JavaScript could free.
    unsafe fn with_bytes<R>(
        &self,
        value: sys::napi_value,
        view: Viewed,
        write: impl FnOnce(&[u8]) -> R,
    ) -> Walk<R> {
        let env = self.env;
        let (mut data, mut len) = (ptr::null_mut(), 0);
        let (mut buffer, mut offset) = (ptr::null_mut(), 0);
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
            std::slice::from_raw_parts(data.cast::<u8>(), len)
        };
        Ok(write(bytes))
    }

    /// `Buffer.isBuffer(value)` for a Uint8Array-typed view: an instance of the host's
    /// `Buffer`, or, in a host without a global one, a view whose class is named so.
    unsafe fn is_buffer(&mut self, value: sys::napi_value, name: &[u8]) -> Walk<bool> {
        let env = self.env;
        let class = match self.buffer_class {
            Some(class) => class,
            None => {
                let class = match self.known {
                    Some(_) => self.buffer_and_date()?.0,
                    None => global(env, c"Buffer")?,
                };
                let mut kind = 0;
                check_status!(sys::napi_typeof(env, class, &mut kind))?;
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
        check_status!(sys::napi_instanceof(env, value, class, &mut result))?;
        Ok(result)
    }

    /// `Array.isArray(value)`, which sees through a Proxy where Node-API does not.
    unsafe fn is_array(&self, value: sys::napi_value) -> Walk<bool> {
        let env = self.env;
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
        let mut flag = false;
        check_status!(sys::napi_get_value_bool(env, result, &mut flag))?;
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
    unsafe fn nested(
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
                let item = property(env, value, key)?;
                encoder.value(item, depth + 1, payload)?;
            }
            Ok(())
        })
    }

    /// A RegExp as msgpack-lite writes it: `[source, flags]`, from its `toString()` parts.
    unsafe fn regexp(&mut self, value: sys::napi_value, out: &mut BytesMut) -> Walk<()> {
        let env = self.env;
        self.nested(EXT_REGEXP, 0, out, |encoder, payload| {
            write_array_header(2, payload);
            for key in [c"source", c"flags"] {
                let part = property(env, value, key)?;
                let mut text = ptr::null_mut();
                check_status!(sys::napi_coerce_to_string(env, part, &mut text))?;
                put_utf8(env, text, payload, encoder.limit, write_str_header)?;
            }
            Ok(())
        })
    }

    /// Writes the container `value` with `walk`, or copies what an earlier walk of the same
    /// object wrote (see [`MEMO_AFTER`]).
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
            let class = global(env, c"Map")?;
            let mut map = ptr::null_mut();
            check_status!(sys::napi_new_instance(env, class, 0, ptr::null(), &mut map))?;
            let get = property(env, map, c"get")?;
            let set = property(env, map, c"set")?;
            self.memo = Some(Memo {
                map,
                get,
                set,
                written: Vec::new(),
            });
        }
        let Some(memo) = self.memo.as_ref() else {
            return walk(self, out);
        };
        let (map, get, set) = (memo.map, memo.get, memo.set);
        let mut found = ptr::null_mut();
        check_status!(sys::napi_call_function(
            env, map, get, 1, &value, &mut found
        ))?;
        let mut index = 0u32;
        if sys::napi_get_value_uint32(env, found, &mut index) == sys::Status::napi_ok {
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
            check_status!(sys::napi_create_uint32(
                env,
                memo.written.len() as u32,
                &mut key
            ))?;
            memo.written.push((start, out.len() - start, depth));
            let mut ignored = ptr::null_mut();
            check_status!(sys::napi_call_function(
                env,
                map,
                set,
                2,
                [value, key].as_ptr(),
                &mut ignored
            ))?;
        }
        Ok(())
    }

    unsafe fn array(
        &mut self,
        value: sys::napi_value,
        len: u32,
        depth: usize,
        out: &mut BytesMut,
    ) -> Walk<()> {
        self.memoized(value, depth, out, |encoder, out| {
            encoder.array_walk(value, len, depth, out)
        })
    }

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
            check_status!(sys::napi_get_element(self.env, value, i, &mut item))?;
            self.value(item, depth + 1, out)?;
            self.room(out, 0)?;
        }
        Ok(())
    }

    unsafe fn map(&mut self, value: sys::napi_value, depth: usize, out: &mut BytesMut) -> Walk<()> {
        self.memoized(value, depth, out, |encoder, out| {
            encoder.map_walk(value, depth, out)
        })
    }

    /// An object's own enumerable string keys, in property order (`Object.keys`).
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
        check_status!(sys::napi_get_all_property_names(
            env,
            value,
            sys::KeyCollectionMode::own_only,
            sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
            sys::KeyConversion::numbers_to_strings,
            &mut keys
        ))?;
        let mut len = 0u32;
        check_status!(sys::napi_get_array_length(env, keys, &mut len))?;
        // Every entry takes at least two bytes.
        self.room(out, (len as usize).saturating_mul(2).saturating_add(5))?;
        write_map_header(len as usize, out);
        for i in 0..len {
            let mut key = ptr::null_mut();
            check_status!(sys::napi_get_element(env, keys, i, &mut key))?;
            let mut item = ptr::null_mut();
            check_status!(sys::napi_get_property(env, value, key, &mut item))?;
            put_utf8(env, key, out, self.limit, write_str_header)?;
            self.value(item, depth + 1, out)?;
            self.room(out, 0)?;
        }
        Ok(())
    }
}

/// `value` as a JavaScript value, with the extension types msgpack-lite knows made into the
/// same classes again.
///
/// # Safety
///
/// `env` is live and this runs on its JavaScript thread inside a handle scope, in which the
/// values made here live.
pub(super) unsafe fn write(env: sys::napi_env, value: &Value) -> Result<sys::napi_value> {
    write_at(env, value, 0)
}

/// [`write`] of a value `depth` containers and extensions deep: an extension's data is a
/// value of its own, so nesting them is bounded here, where decoding does not see it.
unsafe fn write_at(env: sys::napi_env, value: &Value, depth: usize) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    match value {
        Value::Nil => check_status!(sys::napi_get_null(env, &mut out))?,
        Value::Bool(b) => check_status!(sys::napi_get_boolean(env, *b, &mut out))?,
        Value::Number(n) => check_status!(sys::napi_create_double(env, *n, &mut out))?,
        Value::String(text) => out = shared_string(env, text)?,
        Value::Binary(bytes) => out = write_buffer(env, bytes)?,
        Value::Date(ms) => check_status!(sys::napi_create_date(env, *ms, &mut out))?,
        Value::Array(items) => {
            check_status!(sys::napi_create_array_with_length(
                env,
                items.len(),
                &mut out
            ))?;
            for (i, item) in items.iter().enumerate() {
                let element = write_at(env, item, depth + 1)?;
                check_status!(sys::napi_set_element(env, out, i as u32, element))?;
            }
        }
        Value::Map(entries) => {
            check_status!(sys::napi_create_object(env, &mut out))?;
            for (key, item) in entries {
                let k = string(env, key)?;
                let v = write_at(env, item, depth + 1)?;
                check_status!(sys::napi_set_property(env, out, k, v))?;
            }
        }
        Value::Ext(kind, bytes) => {
            out = match known_ext(env, *kind, bytes, depth)? {
                Some(made) => made,
                None => unknown_ext(env, *kind, bytes)?,
            }
        }
    }
    Ok(out)
}

/// Non-ASCII strings this long (in UTF-8 bytes) or longer are transcoded here; shorter
/// ones are left to V8's UTF-8 decoder, which costs more per byte (it is a few times slower
/// than this outside ASCII) but needs no buffer of its own.
const TRANSCODE_FROM: usize = 256;

/// The JavaScript string of `s`. ASCII, nearly every string, is already Latin-1: V8 copies it
/// into a one-byte string without decoding it (several times faster than its UTF-8 path for a
/// large string). A long string with other characters is transcoded here, to Latin-1 when
/// every character fits one (a one-byte string again) or else to UTF-16.
unsafe fn string(env: sys::napi_env, s: &str) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if s.is_ascii() {
        check_status!(sys::napi_create_string_latin1(
            env,
            s.as_ptr().cast::<c_char>(),
            s.len() as isize,
            &mut out
        ))?;
    } else if s.len() >= TRANSCODE_FROM {
        match units(s) {
            Units::Latin1(bytes) => check_status!(sys::napi_create_string_latin1(
                env,
                bytes.as_ptr().cast::<c_char>(),
                bytes.len() as isize,
                &mut out
            ))?,
            Units::Utf16(units) => check_status!(sys::napi_create_string_utf16(
                env,
                units.as_ptr(),
                units.len() as isize,
                &mut out
            ))?,
        }
    } else {
        check_status!(sys::napi_create_string_utf8(
            env,
            s.as_ptr().cast::<c_char>(),
            s.len() as isize,
            &mut out
        ))?;
    }
    Ok(out)
}

/// The JavaScript string of a [`Text`]: [`string`] below [`SHARED_TEXT_FROM`] (256 KiB, where
/// the decoder starts leaving strings in their frame), and from there in Node.js an external
/// string, whose characters V8 uses where they are instead of allocating and copying its own
/// (a fresh 8 MB V8 string costs more in page faults than in copying). An ASCII one is the
/// `Text`'s own bytes, kept alive by the string (unless values may not borrow frames,
/// [`JsValueCopy`]); any other is transcoded by `units` first.
unsafe fn shared_string(env: sys::napi_env, text: &Text) -> Result<sys::napi_value> {
    if text.len() < SHARED_TEXT_FROM {
        return string(env, text.as_str());
    }
    let Some(external) = external_strings(env) else {
        return string(env, text.as_str());
    };
    if !text.is_ascii() {
        return match units(text.as_str()) {
            Units::Latin1(bytes) => external.make(env, bytes),
            Units::Utf16(units) => external.make(env, units),
        };
    }
    if BORROW.with(std::cell::Cell::get) {
        external.make(env, text.bytes().clone())
    } else {
        string(env, text.as_str())
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
unsafe fn external_strings(env: sys::napi_env) -> Option<&'static ExternalStrings> {
    static FOUND: std::sync::OnceLock<Option<ExternalStrings>> = std::sync::OnceLock::new();
    FOUND.get_or_init(|| find_external_strings(env)).as_ref()
}

#[cfg(unix)]
unsafe fn find_external_strings(env: sys::napi_env) -> Option<ExternalStrings> {
    if !super::host::is_node(env) {
        return None;
    }
    let find = |name: &CStr| libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
    let latin1 = find(c"node_api_create_external_string_latin1");
    let utf16 = find(c"node_api_create_external_string_utf16");
    if latin1.is_null() || utf16.is_null() {
        return None;
    }
    // SAFETY: Node.js exports both under these names with exactly these signatures.
    Some(ExternalStrings {
        latin1: std::mem::transmute::<*mut c_void, MakeExternal<c_char>>(latin1),
        utf16: std::mem::transmute::<*mut c_void, MakeExternal<u16>>(utf16),
    })
}

/// Elsewhere the functions would have to be looked up in the host executable by other means;
/// the copying path serves.
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
    /// and allocating little else kept every one of them (1.2 GB after 300 actions of 4 MB,
    /// against 106 MB when copying; 171 MB with the report).
    unsafe fn make<U: Unit, O: AsRef<[U]>>(
        &self,
        env: sys::napi_env,
        owner: O,
    ) -> Result<sys::napi_value> {
        let units = owner.as_ref();
        let (data, len, size) = (units.as_ptr(), units.len(), size_of_val(units) as i64);
        let owner = Box::into_raw(Box::new(owner));
        let mut total = 0;
        sys::napi_adjust_external_memory(env, size, &mut total);
        let mut out = ptr::null_mut();
        let mut copied = false;
        let status = U::external(self)(
            env,
            data.cast_mut().cast(),
            len as isize,
            Some(release::<U, O>),
            owner.cast(),
            &mut out,
            &mut copied,
        );
        if status == sys::Status::napi_ok {
            return Ok(out);
        }
        sys::napi_adjust_external_memory(env, -size, &mut total);
        // Copied while `owner` still holds the units.
        let made = check_status!(U::COPY(env, data.cast(), len as isize, &mut out));
        drop(Box::from_raw(owner));
        made.map(|()| out)
    }
}

/// The finalizer of an external string: `hint` is the boxed owner of its units.
unsafe extern "C" fn release<U, O: AsRef<[U]>>(
    env: sys::napi_env,
    _data: *mut c_void,
    hint: *mut c_void,
) {
    let owner = Box::from_raw(hint.cast::<O>());
    let mut total = 0;
    sys::napi_adjust_external_memory(env, -(size_of_val((*owner).as_ref()) as i64), &mut total);
}

/// An extension type nobody here knows: `{type, buffer}`, as msgpack-lite's ExtBuffer.
unsafe fn unknown_ext(env: sys::napi_env, kind: i8, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    check_status!(sys::napi_create_object(env, &mut out))?;
    let mut t = ptr::null_mut();
    check_status!(sys::napi_create_int32(env, i32::from(kind), &mut t))?;
    check_status!(sys::napi_set_named_property(env, out, c"type".as_ptr(), t))?;
    let b = write_buffer(env, bytes)?;
    check_status!(sys::napi_set_named_property(
        env,
        out,
        c"buffer".as_ptr(),
        b
    ))?;
    Ok(out)
}

/// A global constructor or function by name.
unsafe fn global(env: sys::napi_env, name: &CStr) -> Result<sys::napi_value> {
    let mut global = ptr::null_mut();
    check_status!(sys::napi_get_global(env, &mut global))?;
    property(env, global, name)
}

/// `object[name]`.
unsafe fn property(
    env: sys::napi_env,
    object: sys::napi_value,
    name: &CStr,
) -> Result<sys::napi_value> {
    let mut value = ptr::null_mut();
    check_status!(sys::napi_get_named_property(
        env,
        object,
        name.as_ptr(),
        &mut value
    ))?;
    Ok(value)
}

/// A copy of `bytes` in a new ArrayBuffer.
unsafe fn array_buffer(env: sys::napi_env, bytes: &[u8]) -> Result<sys::napi_value> {
    let mut data = ptr::null_mut();
    let mut out = ptr::null_mut();
    check_status!(sys::napi_create_arraybuffer(
        env,
        bytes.len(),
        &mut data,
        &mut out
    ))?;
    if !bytes.is_empty() && !data.is_null() {
        // SAFETY: Node just allocated `bytes.len()` bytes at `data`, the memory of an
        // ArrayBuffer no JavaScript has seen yet (nothing runs between its making and this
        // copy), and `bytes` is Rust memory, so the two do not overlap.
        ptr::copy_nonoverlapping(bytes.as_ptr(), data.cast::<u8>(), bytes.len());
    }
    Ok(out)
}

/// The class msgpack-lite's `decode` makes of extension `kind`, or `None` when the data does
/// not make one (the caller then gives `{type, buffer}`, and a JavaScript exception that
/// making it raised is cleared).
unsafe fn known_ext(
    env: sys::napi_env,
    kind: i8,
    bytes: &Bytes,
    depth: usize,
) -> Result<Option<sys::napi_value>> {
    if depth >= MAX_DEPTH {
        return Ok(None);
    }
    let made = match kind {
        0x11..=0x19 => typed_array(env, kind, bytes),
        EXT_ARRAY_BUFFER => array_buffer(env, bytes).map(Some),
        EXT_DATA_VIEW => array_buffer(env, bytes).and_then(|buffer| {
            let mut out = ptr::null_mut();
            check_status!(sys::napi_create_dataview(
                env,
                bytes.len(),
                buffer,
                0,
                &mut out
            ))?;
            Ok(Some(out))
        }),
        EXT_BUFFER => write_buffer(env, bytes).map(Some),
        0x0B | 0x0C | 0x0F | EXT_REGEXP | 0x01..=0x06 | 0x0E => {
            let Ok(inner) = decode(bytes) else {
                return Ok(None);
            };
            made_of(env, kind, &inner, depth)
        }
        _ => Ok(None),
    };
    match made {
        Ok(made) => Ok(made),
        Err(err) => {
            let mut pending = false;
            sys::napi_is_exception_pending(env, &mut pending);
            if !pending {
                return Err(err);
            }
            let mut exception = ptr::null_mut();
            sys::napi_get_and_clear_last_exception(env, &mut exception);
            Ok(None)
        }
    }
}

unsafe fn typed_array(
    env: sys::napi_env,
    kind: i8,
    bytes: &Bytes,
) -> Result<Option<sys::napi_value>> {
    use sys::TypedarrayType::*;
    let class = match kind {
        0x11 => int8_array,
        0x12 => uint8_array,
        0x13 => int16_array,
        0x14 => uint16_array,
        0x15 => int32_array,
        0x16 => uint32_array,
        0x17 => float32_array,
        0x18 => float64_array,
        _ => uint8_clamped_array,
    };
    let size = element_size(class);
    if !bytes.len().is_multiple_of(size) {
        // msgpack-lite throws here; the bytes still reach the application.
        return Ok(None);
    }
    let buffer = array_buffer(env, bytes)?;
    let mut out = ptr::null_mut();
    check_status!(sys::napi_create_typedarray(
        env,
        class,
        bytes.len() / size,
        buffer,
        0,
        &mut out
    ))?;
    Ok(Some(out))
}

/// The classes whose extension data is a MessagePack value: boxed primitives, RegExp and
/// the Error classes, made as msgpack-lite's unpackers make them.
unsafe fn made_of(
    env: sys::napi_env,
    kind: i8,
    inner: &Value,
    depth: usize,
) -> Result<Option<sys::napi_value>> {
    let mut out = ptr::null_mut();
    match kind {
        0x0B | 0x0C | 0x0F => {
            let class = global(
                env,
                match kind {
                    0x0B => c"Boolean",
                    0x0C => c"String",
                    _ => c"Number",
                },
            )?;
            let argument = write_at(env, inner, depth + 1)?;
            check_status!(sys::napi_new_instance(env, class, 1, &argument, &mut out))?;
        }
        EXT_REGEXP => {
            // `RegExp.apply(null, [source, flags])`.
            let Value::Array(items) = inner else {
                return Ok(None);
            };
            let arguments = items
                .iter()
                .map(|item| write_at(env, item, depth + 1))
                .collect::<Result<Vec<_>>>()?;
            let class = global(env, c"RegExp")?;
            let mut undefined = ptr::null_mut();
            check_status!(sys::napi_get_undefined(env, &mut undefined))?;
            check_status!(sys::napi_call_function(
                env,
                undefined,
                class,
                arguments.len(),
                arguments.as_ptr(),
                &mut out
            ))?;
        }
        _ => {
            // `new Class()`, then each of the six columns set from the data (`undefined` from
            // data that is not a map; from nil, msgpack-lite throws).
            if let Value::Nil = inner {
                return Ok(None);
            }
            let class = global(
                env,
                match kind {
                    0x01 => c"EvalError",
                    0x02 => c"RangeError",
                    0x03 => c"ReferenceError",
                    0x04 => c"SyntaxError",
                    0x05 => c"TypeError",
                    0x06 => c"URIError",
                    _ => c"Error",
                },
            )?;
            check_status!(sys::napi_new_instance(env, class, 0, ptr::null(), &mut out))?;
            for key in ERROR_COLUMNS {
                let item = match inner.get(&key.to_string_lossy()) {
                    Some(item) => write_at(env, item, depth + 1)?,
                    None => {
                        let mut undefined = ptr::null_mut();
                        check_status!(sys::napi_get_undefined(env, &mut undefined))?;
                        undefined
                    }
                };
                check_status!(sys::napi_set_named_property(env, out, key.as_ptr(), item))?;
            }
        }
    }
    Ok(Some(out))
}

/// Below this a Buffer is copied; above it the JS Buffer borrows the received bytes, so a large
/// action reaches JavaScript without being copied again, unless Rust still reads them (see
/// [`JsValueCopy`]).
const BORROW_ABOVE: usize = 64 * 1024;

unsafe fn write_buffer(env: sys::napi_env, bytes: &Bytes) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if bytes.len() > BORROW_ABOVE && BORROW.with(std::cell::Cell::get) {
        let owner = Box::into_raw(Box::new(bytes.clone()));
        let status = sys::napi_create_external_buffer(
            env,
            bytes.len(),
            bytes.as_ptr() as *mut c_void,
            Some(release_bytes),
            owner.cast(),
            &mut out,
        );
        if status == sys::Status::napi_ok {
            return Ok(out);
        }
        // Runtimes whose memory cage forbids external buffers: copy after all.
        drop(Box::from_raw(owner));
    }
    let mut data = ptr::null_mut();
    check_status!(sys::napi_create_buffer_copy(
        env,
        bytes.len(),
        bytes.as_ptr().cast(),
        &mut data,
        &mut out
    ))?;
    Ok(out)
}

/// The garbage collector freed a borrowing Buffer: release the bytes it kept alive.
unsafe extern "C" fn release_bytes(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    drop(Box::from_raw(hint.cast::<Bytes>()));
}
