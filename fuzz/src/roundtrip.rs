//! Target `roundtrip`: an arbitrary [`Value`] built from the input, written by every Rust
//! MessagePack writer (`encode`, `encode_into` after other bytes, `value_writer` into a
//! `BytesMut`, an EVENT message by `to_frame`, `encode` and `OutgoingEvent::new`), read back
//! by the hardened reader (`decode`, `decode_fields`, `Message::from_frame`), and compared.
//! The writers must agree byte for byte; what they write must read back as the same value
//! (NaN as NaN, -0 as 0, a long string as shared text), unless it nests deeper than the
//! reader's limit, which must then be refused; and it must write back to the same bytes.

use bytes::{Bytes, BytesMut};
use imt_gateway::protocol::frame::HEADER_LEN;
use imt_gateway::protocol::value::{decode_fields, value_writer, SHARED_TEXT_FROM};
use imt_gateway::protocol::{decode, encode, encode_into, Message, Value};
use imt_gateway::session::OutgoingEvent;

use super::input::Input;

/// The reader's nesting limit (`MAX_DEPTH` in src/protocol/value.rs): containers nested this
/// deep are read, one more is refused.
const MAX_DEPTH: usize = 512;

/// Lengths where the MessagePack formats change, and where the reader shares strings.
const LENGTHS: [usize; 20] = [
    0,
    1,
    2,
    4,
    8,
    15,
    16,
    17,
    31,
    32,
    0xfe,
    0xff,
    0x100,
    0xffff,
    0x1_0000,
    0x1_0001,
    SHARED_TEXT_FROM - 1,
    SHARED_TEXT_FROM,
    SHARED_TEXT_FROM + 1,
    3,
];

/// Numbers where the writer's choice of format changes, and the ones JavaScript treats apart.
const NUMBERS: [f64; 24] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    127.0,
    128.0,
    -32.0,
    -33.0,
    255.0,
    256.0,
    65_535.0,
    65_536.0,
    2_147_483_647.0,
    2_147_483_648.0,
    -2_147_483_648.0,
    -2_147_483_649.0,
    4_294_967_295.0,
    9_007_199_254_740_993.0,
    0.5,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MIN_POSITIVE,
    f64::MAX,
];

/// Caps the work one input can ask for.
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    /// Room for one more node with `bytes` of contents.
    fn take(&mut self, bytes: usize) -> bool {
        self.take_many(1, bytes)
    }

    fn take_many(&mut self, nodes: usize, bytes: usize) -> bool {
        if self.nodes < nodes || self.bytes < bytes {
            return false;
        }
        self.nodes -= nodes;
        self.bytes -= bytes;
        true
    }
}

/// The nodes and content bytes of a value, what a copy of it costs.
fn size(value: &Value) -> (usize, usize) {
    match value {
        Value::Array(items) => items
            .iter()
            .map(size)
            .fold((1, 0), |(n, b), (m, c)| (n + m, b + c)),
        Value::Map(entries) => entries.iter().fold((1, 0), |(n, b), (k, v)| {
            let (m, c) = size(v);
            (n + m, b + c + k.len())
        }),
        Value::String(s) => (1, s.len()),
        Value::Binary(b) | Value::Ext(_, b) => (1, b.len()),
        _ => (1, 0),
    }
}

fn length(input: &mut Input) -> usize {
    match input.byte() % 4 {
        0 | 1 => input.below(40),
        2 => LENGTHS[input.below(LENGTHS.len())],
        _ => usize::from(input.u16()),
    }
}

/// `len` bytes: a few from the input, then repeated.
fn content(input: &mut Input, len: usize) -> Vec<u8> {
    let seed = input.bytes(len.min(16));
    if seed.is_empty() {
        return vec![0x61; len];
    }
    seed.iter().copied().cycle().take(len).collect()
}

/// A string of exactly `len` bytes (padded with ASCII after lossy UTF-8).
fn string(input: &mut Input, len: usize) -> String {
    let bytes = content(input, len);
    let mut s = String::from_utf8_lossy(&bytes).into_owned();
    let mut cut = len.min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    while s.len() < len {
        s.push('x');
    }
    s
}

fn number(input: &mut Input) -> f64 {
    match input.byte() % 5 {
        0 => NUMBERS[input.below(NUMBERS.len())],
        1 => f64::from(input.byte() as i8),
        2 => f64::from(input.u16() as i16),
        3 => f64::from(input.u32() as i32),
        _ => f64::from_bits(input.u64()),
    }
}

fn value(input: &mut Input, budget: &mut Budget) -> Value {
    if !budget.take(1) {
        return Value::Nil;
    }
    match input.byte() % 12 {
        0 => Value::Nil,
        1 => Value::Bool(input.bool()),
        2 | 3 => Value::Number(number(input)),
        4 => {
            let len = length(input);
            if !budget.take(len) {
                return Value::Nil;
            }
            Value::String(string(input, len).into())
        }
        5 => {
            let len = length(input);
            if !budget.take(len) {
                return Value::Nil;
            }
            Value::Binary(content(input, len).into())
        }
        6 => {
            let count = container(input);
            let one = value(input, budget);
            let (nodes, bytes) = size(&one);
            let mut items = Vec::new();
            for i in 0..count {
                if i < 8 {
                    items.push(value(input, budget));
                } else if budget.take_many(nodes, bytes) {
                    items.push(one.clone());
                } else {
                    break;
                }
            }
            Value::Array(items)
        }
        7 => {
            let count = container(input);
            let mut entries = Vec::new();
            for i in 0..count {
                if !budget.take(8) {
                    break;
                }
                let key = if i < 8 {
                    let len = length(input).min(300);
                    string(input, len)
                } else {
                    format!("k{i}")
                };
                let item = if i < 8 {
                    value(input, budget)
                } else {
                    Value::Nil
                };
                entries.push((key, item));
            }
            Value::Map(entries)
        }
        8 => Value::Date(number(input)),
        9 => {
            // Every kind but the two the reader turns into Dates.
            let kind = match input.byte() as i8 {
                0x0d | -1 => 0x4d,
                other => other,
            };
            let len = length(input);
            if !budget.take(len) {
                return Value::Nil;
            }
            Value::Ext(kind, content(input, len).into())
        }
        10 => {
            // Deep nesting, around the reader's limit.
            let levels = MAX_DEPTH - 4 + input.below(8);
            if !budget.take_many(levels, 0) {
                return Value::Nil;
            }
            let inner = value(input, budget);
            let map = input.bool();
            (0..levels).fold(inner, |inner, _| {
                if map {
                    Value::Map(vec![(String::new(), inner)])
                } else {
                    Value::Array(vec![inner])
                }
            })
        }
        _ => Value::Number(f64::from(input.byte())),
    }
}

fn container(input: &mut Input) -> usize {
    match input.byte() % 4 {
        0 | 1 => input.below(6),
        2 => [15, 16, 17, 0xffff, 0x1_0000][input.below(5)],
        _ => input.below(40),
    }
}

/// Containers around the deepest scalar (an empty container counts as one level).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(entries) => 1 + entries.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn same_number(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Equal as JavaScript sees the value read back.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) | (Value::Date(x), Value::Date(y)) => {
            same_number(*x, *y)
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

fn short(value: &Value) -> String {
    let mut text = format!("{value:?}");
    if text.len() > 400 {
        let mut cut = 400;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn check_value(value: &Value, prefix: &[u8]) -> Result<(), String> {
    let written = encode(value);
    let mut after = prefix.to_vec();
    encode_into(value, &mut after);
    if after[..prefix.len()] != *prefix || after[prefix.len()..] != written {
        return Err(format!(
            "encode_into and encode disagree on {}",
            short(value)
        ));
    }
    let mut buf = BytesMut::new();
    let wrote: Result<(), std::convert::Infallible> = value_writer(value)(&mut buf);
    let Ok(()) = wrote;
    if buf != written {
        return Err(format!(
            "value_writer and encode disagree on {}",
            short(value)
        ));
    }
    let body = Bytes::from(written.clone());
    let deep = depth(value) > MAX_DEPTH;
    let read = match (decode(&body), deep) {
        (Ok(read), false) => read,
        (Err(_), true) => return Ok(()),
        (Ok(_), true) => return Err(format!("read nesting past the limit: {}", short(value))),
        (Err(e), false) => {
            return Err(format!(
                "{} was written as bytes that read as {e}",
                short(value)
            ))
        }
    };
    if !same(value, &read) {
        return Err(format!("{} reads back as {}", short(value), short(&read)));
    }
    if encode(&read) != written {
        return Err(format!("{} writes back differently", short(value)));
    }
    if let Value::Map(entries) = value {
        let names = ["a", "id", ""];
        let fields = decode_fields(&body, names).map_err(|e| format!("decode_fields: {e}"))?;
        let want = names.map(|name| value.get(name).cloned().unwrap_or(Value::Nil));
        match fields {
            Some(fields) if fields.iter().zip(&want).all(|(a, b)| same(a, b)) => {}
            other => {
                return Err(format!(
                    "decode_fields of {} entries gives {other:?}, not {want:?}",
                    entries.len()
                ))
            }
        }
    }
    Ok(())
}

fn check_event(id: &Value, kind: &str, bundle: &Value) -> Result<(), String> {
    if depth(id).max(depth(bundle)) >= MAX_DEPTH {
        // Inside the message's map they are one level deeper: past the limit.
        return Ok(());
    }
    let message = Message::Event {
        id: id.clone(),
        kind: kind.to_owned(),
        bundle: bundle.clone(),
    };
    let frame = message.to_frame();
    let mut wire = BytesMut::new();
    message.encode(&mut wire);
    if wire.len() != HEADER_LEN + frame.body.len() || wire[HEADER_LEN..] != frame.body {
        return Err(format!("encode and to_frame disagree on {}", short(bundle)));
    }
    if wire.capacity() != wire.len() {
        return Err(format!(
            "encode measured {} bytes for a frame of {}",
            wire.capacity(),
            wire.len()
        ));
    }
    let outgoing = OutgoingEvent::new(7, id.clone(), kind, bundle.clone());
    if outgoing.frame != wire {
        return Err("OutgoingEvent::new and Message::encode disagree".into());
    }
    match Message::from_frame(&frame) {
        Ok(Message::Event {
            id: read_id,
            kind: read_kind,
            bundle: read_bundle,
        }) if same(id, &read_id) && read_kind == kind && same(bundle, &read_bundle) => Ok(()),
        other => Err(format!(
            "the EVENT {} / {kind:?} / {} reads back as {other:?}",
            short(id),
            short(bundle)
        )),
    }
}

pub fn run(data: &[u8]) -> Result<(), String> {
    let mut input = Input::new(data);
    let mut budget = Budget {
        nodes: 20_000,
        bytes: 2 * SHARED_TEXT_FROM,
    };
    let prefix_len = input.below(4);
    let prefix = input.bytes(prefix_len);
    let value = value(&mut input, &mut budget);
    check_value(&value, prefix)?;
    let id = match input.byte() % 3 {
        0 => Value::Number(number(&mut input)),
        1 => {
            let len = input.below(40);
            Value::String(string(&mut input, len).into())
        }
        _ => value.clone(),
    };
    let len = input.below(40);
    let kind = string(&mut input, len);
    check_event(&id, &kind, &value)
}
