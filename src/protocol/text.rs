//! Strings between the wire's UTF-8 and JavaScript's two representations, and [`Text`], the
//! value model's string.
//!
//! A large string is most of the cost of a large message, and most of that is the UTF-8 check
//! and the transcoding into what V8 stores. So the check of a long string is vectorised
//! (`simdutf8`, which falls back to the standard library's check on CPUs without the
//! instructions), and the transcoding takes eight ASCII bytes or four two-byte characters at a
//! time and decodes other characters without re-checking what was checked already. What each
//! step costs against the standard library's, and the commands that measure it, are in
//! docs/performance.md.

use bytes::Bytes;
use std::fmt;

/// A string of the value model ([`super::Value::String`]): valid UTF-8 in [`Bytes`], so that a
/// received string may stay a slice of its frame (the decoder shares those of
/// [`super::value::SHARED_TEXT_FROM`] bytes or more and copies shorter ones, so that a small
/// string does not keep a large frame alive), and whether every character is ASCII when that is
/// known already (the decoder learns it for the strings it shares, which the Node.js conversion
/// then need not read again). However it is held, it is the same string: equal, matched and
/// converted alike.
#[derive(Clone, Default)]
pub struct Text {
    bytes: Bytes,
    ascii: Option<bool>,
}

impl Text {
    /// `bytes`, which the caller has checked to be UTF-8, and whether they are all ASCII if the
    /// caller knows.
    ///
    /// # Safety
    ///
    /// `bytes` is valid UTF-8; `ascii`, when given, says whether it is all ASCII.
    pub(super) unsafe fn from_utf8_unchecked(bytes: Bytes, ascii: Option<bool>) -> Text {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        debug_assert!(ascii.is_none_or(|ascii| ascii == bytes.is_ascii()));
        Text { bytes, ascii }
    }

    /// `bytes` as a string when they are all ASCII (so valid UTF-8), else `None`: a string
    /// that shares the memory it is in, as a slice of a frame.
    pub fn ascii(bytes: Bytes) -> Option<Text> {
        bytes.is_ascii().then_some(Text {
            bytes,
            ascii: Some(true),
        })
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor takes valid UTF-8 (a `String`, a `&str`, bytes the caller
        // of `from_utf8_unchecked` checked, or bytes `ascii` found all ASCII), and nothing
        // writes to them afterwards: a `Bytes` is never written through, JavaScript can reach
        // a string's bytes only as a V8 string, which it cannot change (a Buffer handed to it
        // shares a binary value's bytes, never a string's), and no other program can write
        // to this process's memory.
        unsafe { std::str::from_utf8_unchecked(&self.bytes) }
    }

    /// The UTF-8 bytes, which may be a slice of the frame the string came in.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether every character is ASCII: without reading the string when that is known.
    pub fn is_ascii(&self) -> bool {
        self.ascii.unwrap_or_else(|| self.as_str().is_ascii())
    }

    /// The string as a `String`: without a copy when these bytes are the only owner of a buffer
    /// of their own (a string the decoder copied, or one made from a `String`).
    pub fn into_string(self) -> String {
        // SAFETY: the bytes are valid UTF-8 (see `as_str`), and `Vec::from` keeps them.
        unsafe { String::from_utf8_unchecked(Vec::from(self.bytes)) }
    }

    /// The same string in memory of its own, keeping no frame alive.
    pub fn detached(&self) -> Text {
        Text {
            bytes: Bytes::copy_from_slice(&self.bytes),
            ascii: self.ascii,
        }
    }
}

impl From<String> for Text {
    /// The string's own buffer, not copied.
    fn from(s: String) -> Text {
        Text {
            bytes: Bytes::from(s),
            ascii: None,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text {
            bytes: Bytes::copy_from_slice(s.as_bytes()),
            ascii: None,
        }
    }
}

impl From<Text> for String {
    fn from(text: Text) -> String {
        text.into_string()
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Text {}

impl std::hash::Hash for Text {
    /// As `str` hashes, which `Borrow<str>` requires.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// Below this many bytes the standard library's check is as fast (most strings are short and
/// ASCII, which it reads a word at a time) and skips `simdutf8`'s dispatch and set-up.
const VECTOR_FROM: usize = 64;

/// The bytes as `&str` when they are valid UTF-8.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.len() < VECTOR_FROM {
        std::str::from_utf8(bytes).ok()
    } else {
        simdutf8::basic::from_utf8(bytes).ok()
    }
}

/// A string's characters as one of V8's two representations.
#[derive(Debug, PartialEq, Eq)]
pub enum Units {
    /// Every character is below U+0100: one byte each (Latin-1).
    Latin1(Vec<u8>),
    /// UTF-16 code units.
    Utf16(Vec<u16>),
}

const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
/// A two-byte character is `110xxxxx 10xxxxxx`: read as a little-endian 16-bit lane, lead byte
/// low, it is `PAIRS` under `PAIRS_MASK` (four lanes to a word).
const PAIRS_MASK: u64 = 0xc0e0_c0e0_c0e0_c0e0;
const PAIRS: u64 = 0x80c0_80c0_80c0_80c0;

/// `s` as UTF-16, narrowed to Latin-1 when no character needs more.
pub fn units(s: &str) -> Units {
    let bytes = s.as_bytes();
    // Every UTF-16 code unit comes from at least one byte of UTF-8, so `out` has room for all
    // of them and `j <= i` throughout.
    let mut out: Vec<u16> = Vec::with_capacity(bytes.len());
    super::reader::advise_huge_pages(out.as_mut_ptr().cast(), out.capacity() * 2);
    let spare = out.spare_capacity_mut();
    let mut widest = 0u64;
    let (mut i, mut j) = (0, 0);
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let high = word & HIGH_BITS;
            if high & 0x80 == 0 {
                // ASCII up to the first byte with its high bit set (all eight if none is).
                let ascii = if high == 0 {
                    8
                } else {
                    high.trailing_zeros() as usize / 8
                };
                for (unit, &byte) in spare[j..j + ascii].iter_mut().zip(chunk) {
                    unit.write(u16::from(byte));
                }
                i += ascii;
                j += ascii;
                continue;
            }
            if word & PAIRS_MASK == PAIRS {
                // Four two-byte characters (Latin-1's upper half, Greek, Cyrillic, Hebrew,
                // Arabic): each 16-bit lane of the word is one.
                let four =
                    (word & 0x001f_001f_001f_001f) << 6 | (word >> 8) & 0x003f_003f_003f_003f;
                widest |= four;
                for k in 0..4 {
                    spare[j + k].write((four >> (16 * k)) as u16);
                }
                i += 8;
                j += 4;
                continue;
            }
        }
        // One character, then the non-ASCII ones after it: three- and four-byte ones (CJK text,
        // emoji) as long as they last, two-byte ones until eight bytes are done and the run
        // may be four whole ones again. `s` is valid UTF-8: a lead byte is followed by as many
        // continuation bytes as it announces, and these patterns are the only shapes there are.
        let (start, mut first) = (i, true);
        let go_on = |i: usize, lead: u8| lead >= 0xe0 || (lead >= 0x80 && i < start + 8);
        while let Some(&lead) = bytes.get(i).filter(|&&lead| first || go_on(i, lead)) {
            first = false;
            // SAFETY: `s` is valid UTF-8, so the continuation bytes a lead byte announces are
            // there.
            let next = |k: usize| unsafe { *bytes.get_unchecked(i + k) } & 0x3f;
            if lead < 0x80 {
                spare[j].write(u16::from(lead));
                i += 1;
                j += 1;
            } else if lead < 0xe0 {
                let unit = u16::from(lead & 0x1f) << 6 | u16::from(next(1));
                spare[j].write(unit);
                widest |= u64::from(unit);
                i += 2;
                j += 1;
            } else if lead < 0xf0 {
                let unit =
                    u16::from(lead & 0x0f) << 12 | u16::from(next(1)) << 6 | u16::from(next(2));
                spare[j].write(unit);
                widest |= u64::from(unit);
                i += 3;
                j += 1;
            } else {
                let code = u32::from(lead & 0x07) << 18
                    | u32::from(next(1)) << 12
                    | u32::from(next(2)) << 6
                    | u32::from(next(3));
                let above = code - 0x1_0000;
                spare[j].write(0xd800 | (above >> 10) as u16);
                spare[j + 1].write(0xdc00 | (above & 0x3ff) as u16);
                widest = u64::MAX;
                i += 4;
                j += 2;
            }
        }
    }
    // SAFETY: the loop wrote every one of the first `j` units.
    unsafe { out.set_len(j) };
    let widest = (widest | widest >> 16 | widest >> 32 | widest >> 48) as u16;
    if widest < 0x100 {
        Units::Latin1(out.into_iter().map(|unit| unit as u8).collect())
    } else {
        out.shrink_to_fit();
        Units::Utf16(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the standard library makes of `s`, narrowed as `units` narrows.
    fn reference(s: &str) -> Units {
        let wide: Vec<u16> = s.encode_utf16().collect();
        if wide.iter().all(|&unit| unit < 0x100) {
            Units::Latin1(wide.iter().map(|&unit| unit as u8).collect())
        } else {
            Units::Utf16(wide)
        }
    }

    #[test]
    fn each_width_of_character() {
        assert_eq!(units(""), Units::Latin1(vec![]));
        assert_eq!(units("abc"), Units::Latin1(b"abc".to_vec()));
        assert_eq!(units("caf\u{e9}"), Units::Latin1(b"caf\xe9".to_vec()));
        assert_eq!(units("\u{ff}"), Units::Latin1(vec![0xff]));
        assert_eq!(units("\u{100}"), Units::Utf16(vec![0x100]));
        assert_eq!(units("ж€"), Units::Utf16(vec![0x436, 0x20ac]));
        assert_eq!(
            units("a😀b"),
            Units::Utf16(vec![0x61, 0xd83d, 0xde00, 0x62])
        );
        assert_eq!(units("\u{10ffff}"), Units::Utf16(vec![0xdbff, 0xdfff]));
        // Characters right after a run of eight ASCII bytes, and at the very end.
        let mixed = "abcdefghжijklmnopq€12345678😀";
        assert_eq!(units(mixed), reference(mixed));
    }

    #[test]
    fn large_strings_of_each_kind() {
        for piece in ["x", "é", "ж", "€", "😀", "abcdefgé", "éж", "жжжa", "ж€"] {
            let s = piece.repeat(100_003);
            assert_eq!(units(&s), reference(&s), "{piece}");
        }
    }

    #[test]
    fn utf8_accepts_exactly_what_the_standard_library_accepts() {
        for bytes in [
            &b"plain"[..],
            "ж€😀".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xc0\x80",
            &[b'a'; 200][..],
            &"ж".repeat(100).into_bytes()[..],
            &[&"ж".repeat(100).into_bytes()[..], b"\xd0"].concat()[..],
        ] {
            assert_eq!(utf8(bytes), std::str::from_utf8(bytes).ok(), "{bytes:?}");
        }
    }

    /// The figures docs/performance.md gives for this module, measured: the standard library's
    /// UTF-8 check and `encode_utf16` against `utf8` and `units` on 8 MB of Cyrillic, each the
    /// best of five. Run by hand, in a release build:
    /// `cargo test --release --lib protocol::text::tests::eight_megabytes_of_cyrillic -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement: run by hand in a release build (see its documentation)"]
    fn eight_megabytes_of_cyrillic() {
        use std::hint::black_box;
        use std::time::Instant;
        let s = "ж".repeat(4 * 1024 * 1024);
        let best = |f: &dyn Fn()| {
            (0..5)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed()
                })
                .min()
                .unwrap_or_default()
        };
        let bytes = black_box(s.as_bytes());
        let checks = [
            (
                "standard library's UTF-8 check",
                best(&|| assert!(std::str::from_utf8(bytes).is_ok())),
            ),
            (
                "utf8 (vectorised)",
                best(&|| assert!(utf8(bytes).is_some())),
            ),
            (
                "standard library's encode_utf16",
                best(&|| {
                    let wide: Vec<u16> = black_box(&s).encode_utf16().collect();
                    assert_eq!(wide.len(), s.len() / 2)
                }),
            ),
            (
                "units",
                best(&|| {
                    assert!(
                        matches!(units(black_box(&s)), Units::Utf16(u) if u.len() == s.len() / 2)
                    )
                }),
            ),
        ];
        for (name, took) in checks {
            println!("{name}: {:.1} ms", took.as_secs_f64() * 1e3);
        }
    }

    proptest! {
        #[test]
        fn units_match_the_standard_library(s in any::<String>()) {
            prop_assert_eq!(utf8(s.as_bytes()), Some(s.as_str()));
            prop_assert_eq!(units(&s), reference(&s));
        }

        #[test]
        fn units_match_the_standard_library_on_mostly_ascii(s in "[a-h\u{e9}\u{436}\u{20ac}\u{1f600}]{0,80}") {
            prop_assert_eq!(units(&s), reference(&s));
        }

        #[test]
        fn utf8_matches_the_standard_library(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(utf8(&bytes), std::str::from_utf8(&bytes).ok());
        }
    }
}
