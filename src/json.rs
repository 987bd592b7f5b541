//! JSON string literals for the hot paths (every log line, every session
//! body): the usual string needs no escaping, and is found to need none eight
//! bytes at a time; the rare one that does is escaped by serde_json, so the
//! output is exactly serde_json's either way.
//!
//! Knows nothing of what the strings are.

/// Whether any byte is a control character, `"` or `\\`: eight bytes at a
/// time (the classic "has a byte less than n / equal to c" bit tricks).
pub fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let special = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\';
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let quote = (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'"')));
        let backslash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'\\')));
        // The tricks are exact about whether a chunk holds such a byte (not
        // which); checking the chunk byte by byte keeps this obviously right.
        if (below_space | quote | backslash) & HIGHS != 0 && chunk.iter().any(special) {
            return true;
        }
    }
    chunks.remainder().iter().any(special)
}

/// Append `s` as a JSON string literal, as serde_json writes it.
pub fn push_str_literal(out: &mut String, s: &str) {
    if needs_escape(s.as_bytes()) {
        out.push_str(&serde_json::to_string(s).expect("a string always serializes"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// `push_str_literal` into bytes (a response body needs no `String`, and
/// what is pushed into bytes is never checked again for UTF-8).
pub fn push_literal_bytes(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        out.extend_from_slice(serde_json::to_string(s).expect("a string always serializes").as_bytes());
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_escape_agrees_with_the_byte_by_byte_answer() {
        let special = |b: &u8| *b < 0x20 || *b == b'"' || *b == b'\\';
        let mut cases: Vec<Vec<u8>> = vec![b"".to_vec(), "héllo wörld, ünïcode ✓ 🙂".as_bytes().to_vec()];
        // Every byte value at every position of strings around the chunk size.
        for len in [1usize, 7, 8, 9, 16, 17] {
            for pos in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    cases.push(v);
                }
            }
        }
        // High bytes next to borderline ones: no false hits from borrows.
        cases.push(vec![0x80, 0x21, 0xff, 0x23, 0x5b, 0x5d, 0x7f, 0xc3, 0xa9]);
        for v in cases {
            assert_eq!(needs_escape(&v), v.iter().any(special), "{v:?}");
        }
    }
    #[test]
    fn literals_are_serde_jsons() {
        let mut cases: Vec<String> =
            ["", "plain", "quote\" back\\ slash", "tab\t nl\n bell\u{7} ff\u{c}", "ünïcode ✓ 🙂 \u{7f}"]
                .into_iter()
                .map(String::from)
                .collect();
        cases.extend((0..=0x7fu8).map(|b| format!("ab{}cdefghij", b as char)));
        for s in cases {
            let mut out = String::new();
            push_str_literal(&mut out, &s);
            assert_eq!(out, serde_json::to_string(&s).unwrap(), "{s:?}");
            let mut bytes = Vec::new();
            push_literal_bytes(&mut bytes, &s);
            assert_eq!(bytes, out.as_bytes(), "{s:?}");
        }
    }
}
