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

pub use super::text::Text;

/// A JavaScript value as the protocol carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// Every MessagePack integer and float is a JavaScript number.
    Number(f64),
    /// Every string, received (possibly a slice of its frame, see [`Text`]) or made here.
    String(Text),
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

/// Received strings this long (in bytes) or longer stay slices of their frame (a [`Text`]
/// over the frame's memory, see `reader.rs`, which the Node.js conversion then makes a
/// JavaScript string as it is); shorter ones are copied out, so that a small string kept by the
/// application does not keep a large frame alive. Either way the value is the same.
pub const SHARED_TEXT_FROM: usize = 256 * 1024;

impl Value {
    /// The characters of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s.as_str()),
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
            Value::String(s) => Value::String(s.detached()),
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
    /// seen first, needs no other check, and the Node.js conversion is told) and copied, one
    /// allocation, below; anything else with U+FFFD where it is not valid.
    fn string(&self, bytes: &'a [u8]) -> Value {
        if bytes.len() >= SHARED_TEXT_FROM {
            let ascii = bytes.is_ascii();
            if ascii || super::text::utf8(bytes).is_some() {
                let bytes = self.buf.slice_ref(bytes);
                // SAFETY: checked just above, as ASCII or as UTF-8.
                return Value::String(unsafe { Text::from_utf8_unchecked(bytes, Some(ascii)) });
            }
        } else if super::text::utf8(bytes).is_some() {
            let bytes = Bytes::copy_from_slice(bytes);
            // SAFETY: checked just above.
            return Value::String(unsafe { Text::from_utf8_unchecked(bytes, None) });
        }
        Value::String(String::from_utf8_lossy(bytes).into_owned().into())
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
            // A map's key is kept as a `String` of its own, straight from the bytes.
            if let (
                Item::Str(bytes),
                Some(Open::Map {
                    key: key @ None, ..
                }),
            ) = (&item, stack.last_mut())
            {
                *key = Some(match super::text::utf8(bytes) {
                    Some(text) => text.to_owned(),
                    None => String::from_utf8_lossy(bytes).into_owned(),
                });
                continue;
            }
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
                                // Not a string (those were taken above).
                                *key = Some(js_string(&done));
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
        Value::String(s) => s.as_str().to_owned(),
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
mod tests;
