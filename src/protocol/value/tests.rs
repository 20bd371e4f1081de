use super::*;
use proptest::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `text` is a slice of `body`.
fn in_frame(text: &Text, body: &Bytes) -> bool {
    let start = body.as_ptr() as usize;
    let at = text.bytes().as_ptr() as usize;
    at > start && at < start + body.len()
}

#[test]
fn long_strings_stay_in_the_frame_and_short_ones_are_copied() {
    for text in [
        "x".repeat(SHARED_TEXT_FROM),
        "жé€".repeat(SHARED_TEXT_FROM / 6 + 1),
    ] {
        let value = Value::Map(vec![("s".into(), Value::String(text.clone().into()))]);
        let body = Bytes::from(encode(&value));
        let decoded = decode(&body).unwrap();
        let Some(Value::String(shared)) = decoded.get("s") else {
            panic!("not a string: {:?}", decoded.get("s"));
        };
        assert!(in_frame(shared, &body), "a slice of the frame");
        assert_eq!(shared.as_str(), text);
        assert_eq!(shared.is_ascii(), text.is_ascii());
        assert_eq!(decoded, value);
        assert_eq!(encode(&decoded), &body[..]);
        assert_eq!(js_string(decoded.get("s").unwrap()), text);
        // Detached, it is the same string in memory of its own.
        let detached = decoded.detached();
        let Some(Value::String(copy)) = detached.get("s") else {
            panic!("not a string: {detached:?}");
        };
        assert!(!in_frame(copy, &body));
        assert_eq!(detached, value);
    }
    // Invalid UTF-8 is not shared: replaced, as in short strings.
    let mut raw = encode(&Value::String("x".repeat(SHARED_TEXT_FROM).into()));
    raw[10] = 0xff;
    let body = Bytes::from(raw);
    let decoded = decode(&body).unwrap();
    let Value::String(replaced) = &decoded else {
        panic!("{:?}", decoded.as_str().map(str::len));
    };
    assert!(!in_frame(replaced, &body));
    assert_eq!(replaced.chars().filter(|&c| c == '\u{fffd}').count(), 1);
    assert!(!replaced.is_ascii());
    assert_ne!(decoded, Value::Binary(Bytes::new()));
}

/// A string one byte under the sharing threshold and one at it: held differently, and alike
/// in every other way (the same arm, equal to the string they carry, written back as they came).
#[test]
fn strings_either_side_of_the_sharing_threshold_are_alike() {
    for piece in ["x", "é"] {
        let under = piece.repeat((SHARED_TEXT_FROM - 1) / piece.len());
        let over = format!("{under}{piece}");
        assert!(under.len() < SHARED_TEXT_FROM && over.len() == SHARED_TEXT_FROM);
        let mut held = Vec::new();
        for s in [&under, &over] {
            let body = Bytes::from(encode(&Value::String(s.as_str().into())));
            let decoded = decode(&body).unwrap();
            let Value::String(text) = &decoded else {
                panic!("{piece}: not a string");
            };
            assert_eq!(text, s);
            assert_eq!(text.is_ascii(), s.is_ascii());
            assert_eq!(decoded, Value::String(s.clone().into()));
            assert_eq!(decoded.as_str(), Some(s.as_str()));
            assert_eq!(encode(&decoded), &body[..]);
            held.push(in_frame(text, &body));
        }
        assert_eq!(
            held,
            [false, true],
            "{piece}: copied under, shared from the threshold"
        );
    }
}

#[test]
fn text_is_a_string() {
    let text = Text::from("ab");
    assert_eq!(text, "ab");
    assert_eq!("ab", text);
    assert_eq!(text, Text::from(String::from("ab")));
    assert_eq!(text.len(), 2);
    assert_eq!(format!("{text} {text:?}"), r#"ab "ab""#);
    assert!(text.is_ascii() && !Text::from("é").is_ascii());
    assert_eq!(Text::default(), "");
    // A String's own buffer, not a copy, and back again.
    let s = String::from("not copied");
    let at = s.as_ptr();
    let text = Text::from(s);
    assert_eq!(text.bytes().as_ptr(), at);
    let back = text.into_string();
    assert_eq!(back.as_ptr(), at);
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
    Value::String(s.into())
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
        0x85, 0xa1, b'a', 0x01, 0x01, 0xa3, b'o', b'n', b'e', 0xa1, 0xff, 0x02, 0xa1, b'a', 0x03,
        0xa6, b'n', b'e', b's', b't', b'e', b'd', 0x81, 0xa1, b'a', 0x09,
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
    assert!(decode_fields(&Bytes::from_static(&[0x81, 0xa1, b'a', 0x01, 0x00]), ["a"]).is_err());
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
        ".{0,40}".prop_map(|s| Value::String(s.into())),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|b| Value::Binary(Bytes::from(b))),
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
