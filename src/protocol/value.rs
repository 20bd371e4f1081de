//! The MessagePack value model of docs/PROTOCOL.md section 5 (MessagePack mapping), written and
//! read exactly as the original client's MessagePack library does, so the vendor's server sees
//! the same bytes.
//!
//! Encoding copies msgpack-lite's choices, quirks included (a 255-byte bin or ext gets a
//! 16-bit length), because a server written against the original may compare bytes.
//! Decoding is the other way round: it accepts every MessagePack format, since other peers
//! may use other libraries, and it treats the body as hostile: it never panics, never
//! allocates for lengths the input cannot back, and bounds nesting so the stack cannot
//! overflow.

use bytes::{BufMut, Bytes};
use std::fmt::Write as _;

/// A JavaScript value as the protocol carries it.
#[derive(Debug, Clone)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Every MessagePack integer and float is a JavaScript number.
    Number(f64),
    String(String),
    /// A received string of [`SHARED_TEXT_FROM`] bytes or more, left where the frame holds
    /// it: the same JavaScript string as a `String` of it, and equal to one.
    Text(SharedText),
    /// A Node Buffer (MessagePack bin).
    Binary(Bytes),
    Array(Vec<Value>),
    /// A plain object: string keys in property order.
    Map(Vec<(String, Value)>),
    /// A Date, as epoch milliseconds (may be NaN for an invalid Date).
    Date(f64),
    /// Any other extension type, surfaced to JavaScript as `{type, buffer}`.
    Ext(i8, Bytes),
}

/// Received strings this long (in bytes) or longer are decoded as [`Value::Text`]: not copied
/// out of the frame, whose memory (see `reader.rs`) is then made a JavaScript string as it is.
pub const SHARED_TEXT_FROM: usize = 256 * 1024;

/// Valid UTF-8 shared with the frame it came in (made only by the decoder, which checked it),
/// and whether it is all ASCII, which the decoder learnt on the way.
#[derive(Debug, Clone)]
pub struct SharedText {
    bytes: Bytes,
    ascii: bool,
}

impl SharedText {
    pub fn as_str(&self) -> &str {
        // SAFETY: checked by the decoder, and `Bytes` never change.
        unsafe { std::str::from_utf8_unchecked(&self.bytes) }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn is_ascii(&self) -> bool {
        self.ascii
    }
}

impl PartialEq for Value {
    /// Structural, as derived, except that a [`Value::Text`] equals a [`Value::String`] of
    /// the same characters.
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Nil, Nil) => true,
            (Bool(a), Bool(b)) => a == b,
            (Number(a), Number(b)) | (Date(a), Date(b)) => a == b,
            (Binary(a), Binary(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            (Ext(k, a), Ext(l, b)) => k == l && a == b,
            _ => matches!((self.as_str(), other.as_str()), (Some(a), Some(b)) if a == b),
        }
    }
}

impl Value {
    /// The characters of a string, whichever way it is held.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Text(t) => Some(t.as_str()),
            _ => None,
        }
    }

    /// The same value in memory of its own: binaries, extension data and shared strings, which
    /// the decoder leaves as slices of the frame, are copied, so that keeping the result keeps
    /// no frame alive, and no Buffer handed to JavaScript over the frame's bytes (a binary over
    /// 64 KiB, see `node::value`) can change it.
    pub fn detached(&self) -> Value {
        match self {
            Value::Nil => Value::Nil,
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(n) => Value::Number(*n),
            Value::Date(ms) => Value::Date(*ms),
            Value::String(s) => Value::String(s.clone()),
            Value::Text(text) => Value::Text(SharedText {
                bytes: Bytes::copy_from_slice(&text.bytes),
                ascii: text.ascii,
            }),
            Value::Binary(bytes) => Value::Binary(Bytes::copy_from_slice(bytes)),
            Value::Ext(kind, bytes) => Value::Ext(*kind, Bytes::copy_from_slice(bytes)),
            Value::Array(items) => Value::Array(items.iter().map(Value::detached).collect()),
            Value::Map(entries) => Value::Map(
                entries
                    .iter()
                    .map(|(key, value)| (key.clone(), value.detached()))
                    .collect(),
            ),
        }
    }

    /// A property of a map, looked up the way JavaScript sees the decoded object: a peer may
    /// repeat a key, and then the last one wins (as when msgpack-lite assigns it again).
    /// `None` for a missing key or a value that is not a map.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Why a MessagePack body could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// The extension type msgpack-lite gives a JavaScript Date.
const EXT_DATE: i8 = 0x0D;
/// The standard MessagePack timestamp extension type.
const EXT_TIMESTAMP: i8 = -1;
/// Deepest array/map nesting a body may have: far beyond any real event, and shallow enough
/// that everything that walks a decoded value recursively (encoding it again, dropping it,
/// turning it into JavaScript) stays well inside a thread's stack.
pub(crate) const MAX_DEPTH: usize = 512;
/// Preallocation cap for arrays and maps: an announced count only proves the input has that
/// many bytes left, and nested containers could otherwise each reserve that much again.
const MAX_PREALLOC: usize = 1024;

pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    write_value(value, out);
}

pub fn decode(body: &Bytes) -> Result<Value, DecodeError> {
    if body.is_empty() {
        // A frame of length 0 carries `null` (docs/PROTOCOL.md section 2, Frames).
        return Ok(Value::Nil);
    }
    let mut reader = Reader {
        buf: body,
        pos: 0,
        max_depth: MAX_DEPTH,
        outer: 0,
    };
    let value = reader.value()?;
    reader.finish()?;
    Ok(value)
}

/// The fields `names` of a body that is a map, as [`decode`] then [`Value::get`] would give
/// them (the last of a repeated key wins, a missing one is nil), without building the map: a
/// message's few fields are read with no String per key. `Ok(None)` if the body is not a
/// map. Every other entry is read too, so this accepts and refuses exactly what `decode` does.
/// The names are ASCII, as every name of the protocol is.
pub fn decode_fields<const N: usize>(
    body: &Bytes,
    names: [&str; N],
) -> Result<Option<[Value; N]>, DecodeError> {
    debug_assert!(names.iter().all(|name| name.is_ascii()));
    if body.is_empty() {
        // Null, as for `decode`.
        return Ok(None);
    }
    let mut reader = Reader {
        buf: body,
        pos: 0,
        max_depth: MAX_DEPTH,
        outer: 0,
    };
    let count = match reader.item()? {
        Item::Map(count) => count,
        other => {
            reader.value_from(other)?;
            reader.finish()?;
            return Ok(None);
        }
    };
    reader.outer = 1;
    let mut fields = [const { Value::Nil }; N];
    for _ in 0..count {
        // A key that is not valid UTF-8 reads with U+FFFD in it, so it equals an ASCII name
        // exactly when its bytes do.
        let wanted = match reader.item()? {
            Item::Str(key) => names.iter().position(|name| name.as_bytes() == key),
            other => {
                let key = js_string(&reader.value_from(other)?);
                names.iter().position(|name| *name == key)
            }
        };
        let value = reader.value()?;
        if let Some(i) = wanted {
            fields[i] = value;
        }
    }
    reader.finish()?;
    Ok(Some(fields))
}

// ---------------------------------------------------------------------------------------
// Encoding. Generic over `BufMut` so that a message body can be written straight into the
// connection's output buffer (see `message.rs`) as well as into a `Vec`.

pub(super) fn write_value<B: BufMut>(value: &Value, out: &mut B) {
    match value {
        Value::Nil => write_nil(out),
        Value::Bool(b) => write_bool(*b, out),
        Value::Number(n) => write_number(*n, out),
        Value::String(s) => write_str(s, out),
        Value::Text(t) => write_str(t.as_str(), out),
        Value::Binary(data) => write_binary(data, out),
        Value::Array(items) => {
            write_array_header(items.len(), out);
            for item in items {
                write_value(item, out);
            }
        }
        Value::Map(entries) => {
            write_map_header(entries.len(), out);
            for (key, item) in entries {
                write_str(key, out);
                write_value(item, out);
            }
        }
        Value::Date(ms) => write_date(*ms, out),
        Value::Ext(kind, data) => write_ext(*kind, data, out),
    }
}

/// `value` as an encoder that cannot fail, for what takes encoders of the caller's own (see
/// [`super::Message::encode_event`]).
pub fn value_writer<B: BufMut, E>(value: &Value) -> impl FnOnce(&mut B) -> Result<(), E> + '_ {
    move |out| {
        write_value(value, out);
        Ok(())
    }
}

// One writer per kind of value, for `write_value` and for encoders that walk values of their
// own (JavaScript's, in `node::value`) straight into MessagePack: the mapping stays here.

pub(crate) fn write_nil<B: BufMut>(out: &mut B) {
    out.put_u8(0xc0);
}

pub(crate) fn write_bool<B: BufMut>(b: bool, out: &mut B) {
    out.put_u8(if b { 0xc3 } else { 0xc2 });
}

pub(crate) fn write_number<B: BufMut>(n: f64, out: &mut B) {
    let (bytes, len) = number_bytes(n);
    out.put_slice(&bytes[..len]);
}

pub(crate) fn write_binary<B: BufMut>(data: &[u8], out: &mut B) {
    let len = data.len();
    if len < 0xff {
        out.put_u8(0xc4);
        out.put_u8(len as u8);
    } else if len <= 0xffff {
        out.put_u8(0xc5);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0xc6);
        out.put_u32(wire_len(len));
    }
    out.put_slice(data);
}

pub(crate) fn write_date<B: BufMut>(ms: f64, out: &mut B) {
    let (bytes, len) = number_bytes(ms);
    write_ext(EXT_DATE, &bytes[..len], out);
}

pub(crate) fn write_str<B: BufMut>(s: &str, out: &mut B) {
    write_str_header(s.len(), out);
    out.put_slice(s.as_bytes());
}

/// The header of a string of `len` UTF-8 bytes, which the caller writes next.
pub(crate) fn write_str_header<B: BufMut>(len: usize, out: &mut B) {
    if len < 32 {
        out.put_u8(0xa0 | len as u8);
    } else if len <= 0xff {
        out.put_u8(0xd9);
        out.put_u8(len as u8);
    } else if len <= 0xffff {
        out.put_u8(0xda);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0xdb);
        out.put_u32(wire_len(len));
    }
}

pub(crate) fn write_map_header<B: BufMut>(len: usize, out: &mut B) {
    if len < 16 {
        out.put_u8(0x80 | len as u8);
    } else if len <= 0xffff {
        out.put_u8(0xde);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0xdf);
        out.put_u32(wire_len(len));
    }
}

pub(crate) fn write_array_header<B: BufMut>(len: usize, out: &mut B) {
    if len < 16 {
        out.put_u8(0x90 | len as u8);
    } else if len <= 0xffff {
        out.put_u8(0xdc);
        out.put_u16(len as u16);
    } else {
        out.put_u8(0xdd);
        out.put_u32(wire_len(len));
    }
}

pub(crate) fn write_ext<B: BufMut>(kind: i8, data: &[u8], out: &mut B) {
    let len = data.len();
    match len {
        1 => out.put_u8(0xd4),
        2 => out.put_u8(0xd5),
        4 => out.put_u8(0xd6),
        8 => out.put_u8(0xd7),
        16 => out.put_u8(0xd8),
        _ if len < 0xff => {
            out.put_u8(0xc7);
            out.put_u8(len as u8);
        }
        _ if len <= 0xffff => {
            out.put_u8(0xc8);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(0xc9);
            out.put_u32(wire_len(len));
        }
    }
    out.put_i8(kind);
    out.put_slice(data);
}

/// A 32-bit MessagePack length. Nothing near 4 GiB fits a frame (10 MiB cap), so saturating
/// only matters for a caller already past every limit; the peer then refuses the frame.
fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// A number the way msgpack-lite writes it: `value | 0 === value` picks the smallest int
/// format (so -0 is int 0 and only the int32 range qualifies), anything else is a float64.
/// Returned as bytes because a Date needs its length before writing them.
fn number_bytes(n: f64) -> ([u8; 9], usize) {
    let mut b = [0u8; 9];
    if n.fract() == 0.0 && (-2_147_483_648.0..2_147_483_648.0).contains(&n) {
        let i = n as i32;
        let len = match i {
            -32..=0x7f => {
                b[0] = i as u8;
                1
            }
            0x80..=0xff => {
                b[0] = 0xcc;
                b[1] = i as u8;
                2
            }
            0x100..=0xffff => {
                b[0] = 0xcd;
                b[1..3].copy_from_slice(&(i as u16).to_be_bytes());
                3
            }
            0x1_0000.. => {
                b[0] = 0xce;
                b[1..5].copy_from_slice(&(i as u32).to_be_bytes());
                5
            }
            -0x80..=-33 => {
                b[0] = 0xd0;
                b[1] = i as u8;
                2
            }
            -0x8000..=-0x81 => {
                b[0] = 0xd1;
                b[1..3].copy_from_slice(&(i as i16).to_be_bytes());
                3
            }
            _ => {
                b[0] = 0xd2;
                b[1..5].copy_from_slice(&i.to_be_bytes());
                5
            }
        };
        (b, len)
    } else {
        // JavaScript has one NaN; write it the way V8 does whatever payload we were given.
        let n = if n.is_nan() { f64::NAN } else { n };
        b[0] = 0xcb;
        b[1..9].copy_from_slice(&n.to_be_bytes());
        (b, 9)
    }
}

// ---------------------------------------------------------------------------------------
// Decoding.

fn err(msg: impl Into<String>) -> DecodeError {
    DecodeError(msg.into())
}

/// A cursor over one body. Every read goes through `take`, the only place that checks
/// bounds, so no other code indexes the input.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    /// How many arrays/maps may be open at once.
    max_depth: usize,
    /// How many are open around the value being read (by [`decode_fields`]).
    outer: usize,
}

/// What one format byte (with its length bytes) announces.
enum Item<'a> {
    Scalar(Value),
    /// A string's bytes, not yet made a `String` (a key may only need comparing).
    Str(&'a [u8]),
    Array(usize),
    Map(usize),
}

/// A container still being filled while decoding.
enum Open {
    Array {
        items: Vec<Value>,
        left: usize,
    },
    Map {
        entries: Vec<(String, Value)>,
        left: usize,
        key: Option<String>,
    },
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(err("Unexpected end of data."));
        }
        let buf: &'a [u8] = self.buf;
        let slice = &buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    /// Like `take`, but shares the input instead of copying (bin and ext payloads).
    fn take_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(err("Unexpected end of data."));
        }
        let slice = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn len8(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(self.u8()?))
    }

    fn len16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(self.u16()?))
    }

    fn len32(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.u32()?).map_err(|_| err("Length too large."))
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(err(format!(
                "{} trailing bytes after the value.",
                self.remaining()
            )))
        }
    }

    fn item(&mut self) -> Result<Item<'a>, DecodeError> {
        let marker = self.u8()?;
        let scalar = match marker {
            0x00..=0x7f => Value::Number(f64::from(marker)),
            0x80..=0x8f => return self.map(usize::from(marker & 0x0f)),
            0x90..=0x9f => return self.array_of(usize::from(marker & 0x0f)),
            0xa0..=0xbf => return Ok(Item::Str(self.take(usize::from(marker & 0x1f))?)),
            0xc0 => Value::Nil,
            0xc1 => return Err(err("Reserved format byte 0xc1.")),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.len8()?;
                Value::Binary(self.take_bytes(n)?)
            }
            0xc5 => {
                let n = self.len16()?;
                Value::Binary(self.take_bytes(n)?)
            }
            0xc6 => {
                let n = self.len32()?;
                Value::Binary(self.take_bytes(n)?)
            }
            0xc7 => {
                let n = self.len8()?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len16()?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len32()?;
                self.ext(n)?
            }
            0xca => Value::Number(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => Value::Number(f64::from_be_bytes(self.array()?)),
            0xcc => Value::Number(f64::from(self.u8()?)),
            0xcd => Value::Number(f64::from(self.u16()?)),
            0xce => Value::Number(f64::from(self.u32()?)),
            // Past 2^53 precision is lost, as in JavaScript.
            0xcf => Value::Number(u64::from_be_bytes(self.array()?) as f64),
            0xd0 => Value::Number(f64::from(i8::from_be_bytes(self.array()?))),
            0xd1 => Value::Number(f64::from(i16::from_be_bytes(self.array()?))),
            0xd2 => Value::Number(f64::from(i32::from_be_bytes(self.array()?))),
            0xd3 => Value::Number(i64::from_be_bytes(self.array()?) as f64),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len8()?;
                return Ok(Item::Str(self.take(n)?));
            }
            0xda => {
                let n = self.len16()?;
                return Ok(Item::Str(self.take(n)?));
            }
            0xdb => {
                let n = self.len32()?;
                return Ok(Item::Str(self.take(n)?));
            }
            0xdc => {
                let n = self.len16()?;
                return self.array_of(n);
            }
            0xdd => {
                let n = self.len32()?;
                return self.array_of(n);
            }
            0xde => {
                let n = self.len16()?;
                return self.map(n);
            }
            0xdf => {
                let n = self.len32()?;
                return self.map(n);
            }
            0xe0..=0xff => Value::Number(f64::from(marker as i8)),
        };
        Ok(Item::Scalar(scalar))
    }

    /// A string's bytes, which are a slice of `buf`: valid UTF-8 (nearly every string, checked
    /// once) as it is, shared with the frame from [`SHARED_TEXT_FROM`] bytes on (an ASCII one,
    /// seen first, needs no other check); anything else with U+FFFD where it is not valid.
    fn string(&self, bytes: &'a [u8]) -> Value {
        if bytes.len() >= SHARED_TEXT_FROM {
            let ascii = bytes.is_ascii();
            if ascii || super::text::utf8(bytes).is_some() {
                let bytes = self.buf.slice_ref(bytes);
                return Value::Text(SharedText { bytes, ascii });
            }
        } else if let Some(text) = super::text::utf8(bytes) {
            return Value::String(text.to_owned());
        }
        Value::String(String::from_utf8_lossy(bytes).into_owned())
    }

    /// One whole value. Iterative, with the open containers on a heap stack: recursion would
    /// tie the nesting a peer may send to the stack of whatever thread decodes (small on
    /// runtime workers, smaller in debug builds).
    fn value(&mut self) -> Result<Value, DecodeError> {
        let first = self.item()?;
        self.value_from(first)
    }

    /// [`Reader::value`] whose first item (format byte and length) is read already.
    fn value_from(&mut self, first: Item<'a>) -> Result<Value, DecodeError> {
        let mut stack: Vec<Open> = Vec::new();
        let mut next = Some(first);
        loop {
            let item = match next.take() {
                Some(item) => item,
                None => self.item()?,
            };
            let mut done = match item {
                Item::Scalar(value) => value,
                Item::Str(bytes) => self.string(bytes),
                Item::Array(_) | Item::Map(_) if self.outer + stack.len() >= self.max_depth => {
                    return Err(err(format!(
                        "Nesting deeper than {} levels.",
                        self.max_depth
                    )));
                }
                Item::Array(count) => {
                    if count == 0 {
                        Value::Array(Vec::new())
                    } else {
                        stack.push(Open::Array {
                            items: Vec::with_capacity(count.min(MAX_PREALLOC)),
                            left: count,
                        });
                        continue;
                    }
                }
                Item::Map(count) => {
                    if count == 0 {
                        Value::Map(Vec::new())
                    } else {
                        stack.push(Open::Map {
                            entries: Vec::with_capacity(count.min(MAX_PREALLOC)),
                            left: count,
                            key: None,
                        });
                        continue;
                    }
                }
            };
            // Hand the finished value to its container, closing every container it fills.
            loop {
                let Some(mut open) = stack.pop() else {
                    return Ok(done);
                };
                let still_open = match &mut open {
                    Open::Array { items, left } => {
                        items.push(done);
                        *left -= 1;
                        *left > 0
                    }
                    Open::Map { entries, left, key } => {
                        match key.take() {
                            None => {
                                *key = Some(match done {
                                    Value::String(s) => s,
                                    other => js_string(&other),
                                });
                            }
                            Some(k) => {
                                entries.push((k, done));
                                *left -= 1;
                            }
                        }
                        *left > 0
                    }
                };
                if still_open {
                    stack.push(open);
                    break;
                }
                done = match open {
                    Open::Array { items, .. } => Value::Array(items),
                    Open::Map { entries, .. } => Value::Map(entries),
                };
            }
        }
    }

    /// An array header; refused when its count cannot fit the bytes left (every element
    /// takes at least one), so that no count the input cannot back is ever allocated for.
    fn array_of(&self, count: usize) -> Result<Item<'a>, DecodeError> {
        if count > self.remaining() {
            return Err(err("Array length exceeds the data."));
        }
        Ok(Item::Array(count))
    }

    /// A map header, refused as [`Reader::array_of`] is (every entry takes at least two bytes).
    fn map(&self, count: usize) -> Result<Item<'a>, DecodeError> {
        if count > self.remaining() / 2 {
            return Err(err("Map length exceeds the data."));
        }
        Ok(Item::Map(count))
    }

    fn ext(&mut self, len: usize) -> Result<Value, DecodeError> {
        let kind = i8::from_be_bytes(self.array()?);
        let data = self.take_bytes(len)?;
        match kind {
            EXT_DATE => {
                let mut inner = Reader {
                    buf: &data,
                    pos: 0,
                    max_depth: 0,
                    outer: 0,
                };
                match inner.value() {
                    Ok(Value::Number(ms)) if inner.remaining() == 0 => Ok(Value::Date(ms)),
                    _ => Err(err("Date extension does not hold one number.")),
                }
            }
            EXT_TIMESTAMP => timestamp(&data).map(Value::Date),
            _ => Ok(Value::Ext(kind, data)),
        }
    }
}

/// The standard timestamp extension (32, 64 and 96-bit forms) as epoch milliseconds.
fn timestamp(data: &[u8]) -> Result<f64, DecodeError> {
    let (secs, nanos): (f64, u32) = match data.len() {
        4 => {
            let mut b = [0u8; 4];
            b.copy_from_slice(data);
            (f64::from(u32::from_be_bytes(b)), 0)
        }
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(data);
            let v = u64::from_be_bytes(b);
            ((v & 0x3_ffff_ffff) as f64, (v >> 34) as u32)
        }
        12 => {
            let mut n = [0u8; 4];
            n.copy_from_slice(&data[..4]);
            let mut s = [0u8; 8];
            s.copy_from_slice(&data[4..]);
            (i64::from_be_bytes(s) as f64, u32::from_be_bytes(n))
        }
        other => return Err(err(format!("Timestamp extension of {other} bytes."))),
    };
    Ok(secs * 1000.0 + f64::from(nanos) / 1e6)
}

// ---------------------------------------------------------------------------------------
// JavaScript's String(), for map keys that are not strings: the original decodes a map into
// a plain object, and assigning a property converts its key this way.

pub(super) fn js_string(value: &Value) -> String {
    match value {
        Value::Nil => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => js_number(*n),
        Value::String(s) => s.clone(),
        Value::Text(t) => t.as_str().to_owned(),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned(),
        // Array.prototype.join: null and undefined elements are empty.
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Nil => String::new(),
                other => js_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Map(_) | Value::Ext(..) => "[object Object]".to_owned(),
        Value::Date(ms) => js_date(*ms),
    }
}

/// ECMAScript Number::toString(10). Rust's `{:e}` gives the same shortest round-trip digits
/// JavaScript uses; only the layout rules differ.
fn js_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".to_owned();
    }
    if n.is_infinite() {
        return if n > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if n == 0.0 {
        return "0".to_owned();
    }
    let sci = format!("{:e}", n.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let k = digits.len() as i64;
    let e = exp + 1; // the decimal point sits after `e` digits
    let mut out = String::new();
    if n < 0.0 {
        out.push('-');
    }
    if k <= e && e <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (e - k) as usize));
    } else if 0 < e && e <= 21 {
        out.push_str(&digits[..e as usize]);
        out.push('.');
        out.push_str(&digits[e as usize..]);
    } else if -6 < e && e <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-e) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{}",
            if e - 1 < 0 { '-' } else { '+' },
            (e - 1).abs()
        );
    }
    out
}

/// Date.prototype.toString as Node prints it in UTC, so a Date key names its instant.
fn js_date(ms: f64) -> String {
    // TimeClip: beyond ±8.64e15 ms (and NaN) a Date is invalid; fractions are dropped.
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return "Invalid Date".to_owned();
    }
    let ms = ms.trunc() as i64;
    let days = ms.div_euclid(86_400_000);
    let secs_of_day = ms.rem_euclid(86_400_000) / 1000;
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[(days + 4).rem_euclid(7) as usize];
    let month = MONTHS[(month - 1) as usize];
    let sign = if year < 0 { "-" } else { "" };
    format!(
        "{weekday} {month} {day:02} {sign}{:04} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        year.abs(),
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian (year, month 1..=12, day) of a day count since 1970-01-01, by the
/// usual 400-year-era arithmetic (eras start on March 1st so the leap day comes last).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn long_strings_stay_in_the_frame_and_equal_their_copies() {
        for text in [
            "x".repeat(SHARED_TEXT_FROM),
            "жé€".repeat(SHARED_TEXT_FROM / 6 + 1),
        ] {
            let value = Value::Map(vec![("s".into(), Value::String(text.clone()))]);
            let body = Bytes::from(encode(&value));
            let decoded = decode(&body).unwrap();
            let Some(Value::Text(shared)) = decoded.get("s") else {
                panic!(
                    "not shared: {:?}",
                    decoded.get("s").map(|v| v.as_str().map(str::len))
                );
            };
            let start = body.as_ptr() as usize;
            let at = shared.bytes().as_ptr() as usize;
            assert!(
                at > start && at < start + body.len(),
                "a slice of the frame"
            );
            assert_eq!(shared.as_str(), text);
            assert_eq!(shared.is_ascii(), text.is_ascii());
            assert_eq!(decoded, value);
            assert_eq!(encode(&decoded), &body[..]);
            assert_eq!(js_string(decoded.get("s").unwrap()), text);
        }
        // One byte shorter: copied, as every shorter string is.
        let body = Bytes::from(encode(&Value::String("x".repeat(SHARED_TEXT_FROM - 1))));
        assert!(matches!(decode(&body).unwrap(), Value::String(_)));
        // Invalid UTF-8 is not shared: replaced, as in short strings.
        let mut raw = encode(&Value::String("x".repeat(SHARED_TEXT_FROM)));
        raw[10] = 0xff;
        let decoded = decode(&Bytes::from(raw)).unwrap();
        let Value::String(replaced) = &decoded else {
            panic!("{:?}", decoded.as_str().map(str::len));
        };
        assert_eq!(replaced.chars().filter(|&c| c == '\u{fffd}').count(), 1);
        assert_ne!(decoded, Value::Binary(Bytes::new()));
    }

    fn enc(v: &Value) -> String {
        hex(&encode(v))
    }

    fn num(n: f64) -> String {
        enc(&Value::Number(n))
    }

    fn dec(bytes: &[u8]) -> Result<Value, DecodeError> {
        decode(&Bytes::copy_from_slice(bytes))
    }

    fn s(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    /// Section 5, integers: the smallest format at every boundary, int32 range only.
    #[test]
    fn integers_take_the_smallest_format() {
        let table: &[(f64, &str)] = &[
            (0.0, "00"),
            (-0.0, "00"),
            (1.0, "01"),
            (127.0, "7f"),
            (128.0, "cc 80"),
            (255.0, "cc ff"),
            (256.0, "cd 01 00"),
            (65535.0, "cd ff ff"),
            (65536.0, "ce 00 01 00 00"),
            (2_147_483_647.0, "ce 7f ff ff ff"),
            (-1.0, "ff"),
            (-32.0, "e0"),
            (-33.0, "d0 df"),
            (-128.0, "d0 80"),
            (-129.0, "d1 ff 7f"),
            (-32768.0, "d1 80 00"),
            (-32769.0, "d2 ff ff 7f ff"),
            (-2_147_483_648.0, "d2 80 00 00 00"),
        ];
        for (n, bytes) in table {
            assert_eq!(num(*n), *bytes, "{n}");
        }
    }

    /// Section 5: everything outside the int32 range or not an integer is a float64.
    #[test]
    fn other_numbers_are_float64() {
        let table: &[(f64, &str)] = &[
            (2_147_483_648.0, "cb 41 e0 00 00 00 00 00 00"),
            (-2_147_483_649.0, "cb c1 e0 00 00 00 20 00 00"),
            (4_294_967_296.0, "cb 41 f0 00 00 00 00 00 00"),
            (0.5, "cb 3f e0 00 00 00 00 00 00"),
            (1.5, "cb 3f f8 00 00 00 00 00 00"),
            (-1.5, "cb bf f8 00 00 00 00 00 00"),
            (f64::NAN, "cb 7f f8 00 00 00 00 00 00"),
            (f64::INFINITY, "cb 7f f0 00 00 00 00 00 00"),
            (f64::NEG_INFINITY, "cb ff f0 00 00 00 00 00 00"),
        ];
        for (n, bytes) in table {
            assert_eq!(num(*n), *bytes, "{n}");
        }
        // A NaN with a payload is still JavaScript's one NaN.
        assert_eq!(
            num(f64::from_bits(0x7ff0_0000_0000_0001)),
            "cb 7f f8 00 00 00 00 00 00"
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(enc(&Value::Nil), "c0");
        assert_eq!(enc(&Value::Bool(false)), "c2");
        assert_eq!(enc(&Value::Bool(true)), "c3");
    }

    fn header(v: &Value, n: usize) -> String {
        let bytes = encode(v);
        hex(&bytes[..n.min(bytes.len())])
    }

    #[test]
    fn string_headers_follow_the_utf8_length() {
        assert_eq!(enc(&s("")), "a0");
        assert_eq!(enc(&s("a")), "a1 61");
        assert_eq!(header(&s(&"x".repeat(31)), 1), "bf");
        assert_eq!(header(&s(&"x".repeat(32)), 2), "d9 20");
        assert_eq!(header(&s(&"x".repeat(255)), 2), "d9 ff");
        assert_eq!(header(&s(&"x".repeat(256)), 3), "da 01 00");
        assert_eq!(header(&s(&"x".repeat(65535)), 3), "da ff ff");
        assert_eq!(header(&s(&"x".repeat(65536)), 5), "db 00 01 00 00");
        // Bytes, not characters: 16 two-byte characters are 32 bytes.
        assert_eq!(header(&s(&"é".repeat(16)), 2), "d9 20");
        assert_eq!(encode(&s(&"x".repeat(256))).len(), 3 + 256);
    }

    #[test]
    fn binary_headers_keep_the_msgpack_lite_quirk() {
        let bin = |n: usize| Value::Binary(Bytes::from(vec![7u8; n]));
        assert_eq!(enc(&bin(0)), "c4 00");
        assert_eq!(enc(&bin(2)), "c4 02 07 07");
        assert_eq!(header(&bin(254), 2), "c4 fe");
        // 255 bytes would fit bin8, but msgpack-lite switches at `< 0xff`.
        assert_eq!(header(&bin(255), 3), "c5 00 ff");
        assert_eq!(header(&bin(65535), 3), "c5 ff ff");
        assert_eq!(header(&bin(65536), 5), "c6 00 01 00 00");
        assert_eq!(encode(&bin(255)).len(), 3 + 255);
    }

    #[test]
    fn array_and_map_headers() {
        let arr = |n: usize| Value::Array(vec![Value::Nil; n]);
        let map = |n: usize| Value::Map((0..n).map(|i| (format!("k{i}"), Value::Nil)).collect());
        assert_eq!(enc(&arr(0)), "90");
        assert_eq!(header(&arr(15), 1), "9f");
        assert_eq!(header(&arr(16), 3), "dc 00 10");
        assert_eq!(header(&arr(65535), 3), "dc ff ff");
        assert_eq!(header(&arr(65536), 5), "dd 00 01 00 00");
        assert_eq!(enc(&map(0)), "80");
        assert_eq!(header(&map(15), 1), "8f");
        assert_eq!(header(&map(16), 3), "de 00 10");
        assert_eq!(header(&map(65536), 5), "df 00 01 00 00");
    }

    #[test]
    fn undefined_property_is_kept_as_nil() {
        let v = Value::Map(vec![("a".into(), Value::Nil)]);
        assert_eq!(enc(&v), "81 a1 61 c0");
    }

    #[test]
    fn nested_maps_and_arrays() {
        let v = Value::Map(vec![
            ("id".into(), Value::Number(1.0)),
            (
                "list".into(),
                Value::Array(vec![
                    Value::Bool(true),
                    Value::Map(vec![("x".into(), s("y"))]),
                ]),
            ),
        ]);
        assert_eq!(
            enc(&v),
            "82 a2 69 64 01 a4 6c 69 73 74 92 c3 81 a1 78 a1 79"
        );
        assert_eq!(decode(&Bytes::from(encode(&v))).unwrap(), v);
    }

    #[test]
    fn dates_are_ext_0x0d_around_the_number() {
        assert_eq!(enc(&Value::Date(0.0)), "d4 0d 00");
        assert_eq!(enc(&Value::Date(200.0)), "d5 0d cc c8");
        assert_eq!(enc(&Value::Date(-1.0)), "d4 0d ff");
        assert_eq!(enc(&Value::Date(70000.0)), "c7 05 0d ce 00 01 11 70");
        // A current time does not fit int32: a float64, 9 bytes, so ext8.
        let now = 1_718_000_000_123.0;
        let mut expected = vec![0xc7, 0x09, 0x0d, 0xcb];
        expected.extend_from_slice(&f64::to_be_bytes(now));
        assert_eq!(encode(&Value::Date(now)), expected);
        assert_eq!(decode(&Bytes::from(expected)).unwrap(), Value::Date(now));
        assert_eq!(dec(&[0xd4, 0x0d, 0x00]).unwrap(), Value::Date(0.0));
        assert!(
            matches!(dec(&[0xc7, 0x09, 0x0d, 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0]).unwrap(),
            Value::Date(ms) if ms.is_nan())
        );
    }

    #[test]
    fn ext_headers() {
        let ext = |n: usize| Value::Ext(5, Bytes::from(vec![1u8; n]));
        assert_eq!(enc(&ext(1)), "d4 05 01");
        assert_eq!(header(&ext(2), 2), "d5 05");
        assert_eq!(header(&ext(4), 2), "d6 05");
        assert_eq!(header(&ext(8), 2), "d7 05");
        assert_eq!(header(&ext(16), 2), "d8 05");
        assert_eq!(enc(&ext(0)), "c7 00 05");
        assert_eq!(header(&ext(3), 3), "c7 03 05");
        assert_eq!(header(&ext(17), 3), "c7 11 05");
        assert_eq!(header(&ext(254), 3), "c7 fe 05");
        assert_eq!(header(&ext(255), 4), "c8 00 ff 05");
        assert_eq!(header(&ext(65536), 6), "c9 00 01 00 00 05");
        assert_eq!(enc(&Value::Ext(-2, Bytes::from_static(&[9]))), "d4 fe 09");
    }

    #[test]
    fn decodes_every_integer_and_float_format() {
        let table: &[(&[u8], f64)] = &[
            (&[0x05], 5.0),
            (&[0xfb], -5.0),
            (&[0xcc, 0xff], 255.0),
            (&[0xcd, 0x12, 0x34], 4660.0),
            (&[0xce, 0xff, 0xff, 0xff, 0xff], 4_294_967_295.0),
            (&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0], 4_294_967_296.0),
            (
                &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                u64::MAX as f64,
            ),
            (&[0xd0, 0x80], -128.0),
            (&[0xd1, 0x80, 0x00], -32768.0),
            (&[0xd2, 0x80, 0, 0, 0], -2_147_483_648.0),
            (
                &[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe],
                -2.0,
            ),
            (&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0], i64::MIN as f64),
            (&[0xca, 0x3f, 0xc0, 0x00, 0x00], 1.5),
            (
                &[0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18],
                std::f64::consts::PI,
            ),
        ];
        for (bytes, n) in table {
            assert_eq!(dec(bytes).unwrap(), Value::Number(*n), "{}", hex(bytes));
        }
        // 2^53 + 1 is not a double: precision is lost as in JavaScript.
        let v = dec(&[0xcf, 0, 0x20, 0, 0, 0, 0, 0, 1]).unwrap();
        assert_eq!(v, Value::Number(9_007_199_254_740_992.0));
    }

    #[test]
    fn decodes_strings_and_binaries() {
        assert_eq!(dec(&[0xa0]).unwrap(), s(""));
        assert_eq!(dec(&[0xd9, 2, b'h', b'i']).unwrap(), s("hi"));
        assert_eq!(dec(&[0xda, 0, 2, b'h', b'i']).unwrap(), s("hi"));
        assert_eq!(dec(&[0xdb, 0, 0, 0, 2, b'h', b'i']).unwrap(), s("hi"));
        assert_eq!(dec(&[0xa2, 0xff, b'a']).unwrap(), s("\u{fffd}a"));
        for bytes in [
            &[0xc4, 2, 1, 2][..],
            &[0xc5, 0, 2, 1, 2][..],
            &[0xc6, 0, 0, 0, 2, 1, 2][..],
        ] {
            assert_eq!(
                dec(bytes).unwrap(),
                Value::Binary(Bytes::from_static(&[1, 2]))
            );
        }
    }

    #[test]
    fn binaries_share_the_input() {
        let body = Bytes::from(vec![0xc4, 3, 1, 2, 3]);
        let Value::Binary(b) = decode(&body).unwrap() else {
            panic!("not a binary")
        };
        assert_eq!(b.as_ptr(), body[2..].as_ptr());
    }

    #[test]
    fn decodes_containers_of_every_width() {
        let arr = Value::Array(vec![Value::Number(1.0), Value::Nil]);
        assert_eq!(dec(&[0x92, 0x01, 0xc0]).unwrap(), arr);
        assert_eq!(dec(&[0xdc, 0, 2, 0x01, 0xc0]).unwrap(), arr);
        assert_eq!(dec(&[0xdd, 0, 0, 0, 2, 0x01, 0xc0]).unwrap(), arr);
        let map = Value::Map(vec![("a".into(), Value::Bool(true))]);
        assert_eq!(dec(&[0x81, 0xa1, b'a', 0xc3]).unwrap(), map);
        assert_eq!(dec(&[0xde, 0, 1, 0xa1, b'a', 0xc3]).unwrap(), map);
        assert_eq!(dec(&[0xdf, 0, 0, 0, 1, 0xa1, b'a', 0xc3]).unwrap(), map);
    }

    #[test]
    fn non_string_keys_become_javascript_strings() {
        let key = |bytes: &[u8]| {
            let mut body = vec![0x81];
            body.extend_from_slice(bytes);
            body.push(0xc0);
            match dec(&body).unwrap() {
                Value::Map(mut entries) => entries.remove(0).0,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(key(&[0x01]), "1");
        assert_eq!(key(&[0xff]), "-1");
        assert_eq!(key(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]), "1.5");
        assert_eq!(key(&[0xca, 0x3f, 0xc0, 0, 0]), "1.5");
        assert_eq!(key(&[0xc3]), "true");
        assert_eq!(key(&[0xc2]), "false");
        assert_eq!(key(&[0xc0]), "null");
        assert_eq!(key(&[0xc4, 2, b'h', b'i']), "hi");
        assert_eq!(key(&[0x93, 0x01, 0xc0, 0xa1, b'x']), "1,,x");
        assert_eq!(key(&[0x92, 0x91, 0x01, 0x02]), "1,2");
        assert_eq!(key(&[0x80]), "[object Object]");
        assert_eq!(key(&[0xd4, 0x05, 0x00]), "[object Object]");
        assert_eq!(
            key(&[0xd4, 0x0d, 0x00]),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
    }

    #[test]
    fn javascript_number_formatting() {
        let table: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (-42.0, "-42"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (123.456, "123.456"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (1.5e300, "1.5e+300"),
            (0.000001, "0.000001"),
            (1e-7, "1e-7"),
            (-1.25e-7, "-1.25e-7"),
            (2_147_483_648.0, "2147483648"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
        ];
        for (n, text) in table {
            assert_eq!(js_number(*n), *text, "{n:e}");
        }
    }

    #[test]
    fn javascript_date_formatting() {
        assert_eq!(
            js_date(1_718_000_000_123.0),
            "Mon Jun 10 2024 06:13:20 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(
            js_date(-1.0),
            "Wed Dec 31 1969 23:59:59 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(
            js_date(951_782_400_000.0),
            "Tue Feb 29 2000 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(js_date(f64::NAN), "Invalid Date");
        assert_eq!(js_date(8.64e15 + 1.0), "Invalid Date");
    }

    #[test]
    fn decodes_extensions() {
        // The standard timestamp, all three forms.
        assert_eq!(dec(&[0xd6, 0xff, 0, 0, 0, 1]).unwrap(), Value::Date(1000.0));
        // 64-bit: 500_000_000 ns in the top 30 bits, 2 s in the low 34.
        let ts64 = (500_000_000u64 << 34) | 2;
        let mut body = vec![0xd7, 0xff];
        body.extend_from_slice(&ts64.to_be_bytes());
        assert_eq!(dec(&body).unwrap(), Value::Date(2500.0));
        let mut body = vec![0xc7, 12, 0xff];
        body.extend_from_slice(&1_000_000u32.to_be_bytes());
        body.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(dec(&body).unwrap(), Value::Date(-999.0));
        assert!(dec(&[0xd5, 0xff, 0, 0]).is_err());
        // msgpack-lite's Date around any number format.
        assert_eq!(dec(&[0xd5, 0x0d, 0xcc, 0xc8]).unwrap(), Value::Date(200.0));
        assert_eq!(
            dec(&[0xc7, 5, 0x0d, 0xca, 0x3f, 0xc0, 0, 0]).unwrap(),
            Value::Date(1.5)
        );
        assert!(dec(&[0xd4, 0x0d, 0xc0]).is_err(), "nil is no date");
        assert!(dec(&[0xd5, 0x0d, 0x01, 0x02]).is_err(), "two numbers");
        assert!(dec(&[0xd4, 0x0d, 0xcc]).is_err(), "truncated number");
        assert!(dec(&[0xd4, 0x0d, 0x91]).is_err(), "array is no date");
        // Anything else is passed through.
        for (bytes, len) in [
            (&[0xd4, 0x05, 1][..], 1),
            (&[0xd5, 0x05, 1, 2][..], 2),
            (&[0xd6, 0x05, 1, 2, 3, 4][..], 4),
            (&[0xc7, 3, 0x05, 1, 2, 3][..], 3),
            (&[0xc8, 0, 3, 0x05, 1, 2, 3][..], 3),
            (&[0xc9, 0, 0, 0, 3, 0x05, 1, 2, 3][..], 3),
        ] {
            match dec(bytes).unwrap() {
                Value::Ext(5, data) => assert_eq!(data.len(), len),
                other => panic!("{other:?}"),
            }
        }
        let mut body = vec![0xd8, 0x80];
        body.extend_from_slice(&[0u8; 16]);
        assert_eq!(
            dec(&body).unwrap(),
            Value::Ext(-128, Bytes::from(vec![0u8; 16]))
        );
    }

    #[test]
    fn empty_body_is_nil() {
        assert_eq!(decode(&Bytes::new()).unwrap(), Value::Nil);
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let cases: &[&[u8]] = &[
            &[0xc1],
            &[0x01, 0x02],
            &[0xc0, 0xc0],
            &[0xcd, 0x01],
            &[0xcb, 0, 0, 0],
            &[0xa3, b'a'],
            &[0x92, 0x01],
            &[0x81, 0xa1, b'a'],
            &[0x91, 0xc1],
            &[0xd9],
            &[0xc7, 0x05, 0x01],
            &[0xd8, 0x01, 0x00],
            // Lengths far beyond the input.
            &[0xc6, 0xff, 0xff, 0xff, 0xff],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
            &[0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x05],
        ];
        for bytes in cases {
            let e = dec(bytes).expect_err(&hex(bytes));
            assert!(!e.0.is_empty());
        }
    }

    #[test]
    fn fields_take_the_last_of_a_repeated_key_and_keys_of_any_kind() {
        // {a: 1, 1: "one", "\xff": 2, a: 3, nested: {a: 9}}
        let body = Bytes::from_static(&[
            0x85, 0xa1, b'a', 0x01, 0x01, 0xa3, b'o', b'n', b'e', 0xa1, 0xff, 0x02, 0xa1, b'a',
            0x03, 0xa6, b'n', b'e', b's', b't', b'e', b'd', 0x81, 0xa1, b'a', 0x09,
        ]);
        let [a, one, missing] = decode_fields(&body, ["a", "1", "b"]).unwrap().unwrap();
        assert_eq!(a, Value::Number(3.0));
        assert_eq!(one, s("one"));
        assert_eq!(missing, Value::Nil);
        assert_eq!(
            decode_fields(&Bytes::from_static(&[0x91, 0x01]), ["a"]),
            Ok(None)
        );
        assert_eq!(decode_fields(&Bytes::new(), ["a"]), Ok(None));
        assert!(
            decode_fields(&Bytes::from_static(&[0x81, 0xa1, b'a', 0x01, 0x00]), ["a"]).is_err()
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        assert!(dec(&[0x91; 100_000]).is_err());
        assert!(dec(&[0xdc, 0x00, 0x01].repeat(100_000)).is_err());
        assert!(dec(&[0x81, 0xa1, b'a'].repeat(100_000)).is_err());
        // Keys nest too.
        assert!(dec(&[0x81; 100_000]).is_err());
        // Up to the limit is fine.
        let mut body = vec![0x91; MAX_DEPTH];
        body.push(0xc0);
        assert!(dec(&body).is_ok());
        let mut body = vec![0x91; MAX_DEPTH + 1];
        body.push(0xc0);
        assert!(dec(&body).is_err());
    }

    #[test]
    fn repeated_keys_are_kept_but_the_last_wins() {
        let v = dec(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02]).unwrap();
        assert_eq!(v.get("a"), Some(&Value::Number(2.0)));
        assert_eq!(v.get("b"), None);
        assert_eq!(Value::Nil.get("a"), None);
    }

    /// Values whose numbers survive the number mapping: every f64 comes back, as an int
    /// or a float64, with the same value (NaN aside, which is never equal to itself).
    fn arb_value() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i32>().prop_map(f64::from),
            any::<i64>().prop_map(|i| i as f64),
            any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
        ];
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<bool>().prop_map(Value::Bool),
            number.clone().prop_map(Value::Number),
            ".{0,40}".prop_map(Value::String),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| Value::Binary(Bytes::from(b))),
            number.prop_map(Value::Date),
            (
                any::<i8>().prop_filter("reserved", |t| *t != EXT_DATE && *t != EXT_TIMESTAMP),
                proptest::collection::vec(any::<u8>(), 0..20)
            )
                .prop_map(|(t, b)| Value::Ext(t, Bytes::from(b))),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
                proptest::collection::vec((".{0,8}", inner), 0..20).prop_map(Value::Map),
            ]
        })
    }

    /// -0 is written as int 0, the one number the mapping changes.
    fn normalize(v: Value) -> Value {
        let n = |f: f64| if f == 0.0 { 0.0 } else { f };
        match v {
            Value::Number(f) => Value::Number(n(f)),
            Value::Date(f) => Value::Date(n(f)),
            Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
            Value::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, normalize(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) | (Value::Date(x), Value::Date(y)) => {
                x.to_bits() == y.to_bits()
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .zip(y)
                        .all(|((ka, a), (kb, b))| ka == kb && same(a, b))
            }
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = dec(&bytes);
        }

        #[test]
        fn decode_never_panics_on_near_valid_input(
            v in arb_value(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let bytes = encode(&v);
            if !bytes.is_empty() {
                let _ = dec(&bytes[..cut.index(bytes.len())]);
                let mut bent = bytes.clone();
                bent[flip.0.index(bytes.len())] ^= flip.1;
                let _ = dec(&bent);
            }
        }

        #[test]
        fn fields_are_what_the_decoded_map_gives_and_bad_bodies_fail_alike(
            v in arb_value(),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            // Names that arbitrary maps hit now and then, an empty one and a missing one.
            let names = ["", "a", "ab", "missing"];
            let whole = encode(&v);
            let mut bodies = vec![whole.clone()];
            if !whole.is_empty() {
                bodies.push(whole[..cut.index(whole.len())].to_vec());
                let mut bent = whole.clone();
                bent[flip.0.index(whole.len())] ^= flip.1;
                bodies.push(bent);
            }
            for body in bodies {
                let body = Bytes::from(body);
                let fields = decode_fields(&body, names);
                match decode(&body) {
                    Err(e) => prop_assert_eq!(fields, Err(e)),
                    Ok(map @ Value::Map(_)) => {
                        let want = names.map(|name| map.get(name).cloned().unwrap_or(Value::Nil));
                        let got = fields.unwrap().expect("a map");
                        for (g, w) in got.iter().zip(want.iter()) {
                            prop_assert!(same(g, w), "{:?} != {:?}", g, w);
                        }
                    }
                    Ok(_) => prop_assert_eq!(fields, Ok(None)),
                }
            }
        }

        #[test]
        fn values_round_trip(v in arb_value()) {
            let back = decode(&Bytes::from(encode(&v))).unwrap();
            let want = normalize(v);
            prop_assert!(same(&back, &want), "{:?} != {:?}", back, want);
        }
    }
}
