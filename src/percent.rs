//! Percent-decoding (RFC 3986 section 2.1), for the user information of a proxy URL and the
//! attributes of a PKCS#11 URI.

/// `text` with each `%XX` replaced by the byte it names; `None` for a `%` not followed by two
/// hexadecimal digits.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_are_decoded_and_bad_ones_refused() {
        assert_eq!(super::decode("a%40b%3a%2F"), Some(b"a@b:/".to_vec()));
        assert_eq!(super::decode("%e2%82%ac"), Some("€".as_bytes().to_vec()));
        assert_eq!(super::decode("plain"), Some(b"plain".to_vec()));
        for bad in ["%", "%4", "%zz", "a%g0"] {
            assert_eq!(super::decode(bad), None, "{bad}");
        }
    }
}
