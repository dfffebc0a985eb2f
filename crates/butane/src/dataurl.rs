//! `data:` URLs, made the way Butane makes them and decoded the way Ignition decodes them.
//!
//! Of three encodings the shortest wins: percent-encoding (`data:,…`), base64 (`data:;base64,…`,
//! only if strictly shorter), and, unless the user chose a compression, gzip then base64 (only if
//! shorter by more than the length of `"gzip"`; the resource then says `compression: gzip`). Gzip
//! bytes differ between Go and Rust, so outputs are compared by decoded content, never bytes.

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Bytes that Go's `url.PathEscape`-like escaping in Butane leaves alone.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte)
}

fn percent_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for &byte in data {
        if unreserved(byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// The data URL for `data`, and whether it is gzip-compressed. `compress` is false when the user
/// chose a compression themselves.
pub fn make(data: &[u8], compress: bool) -> (String, bool) {
    let mut best = format!(",{}", percent_encode(data));
    let base64 = format!(";base64,{}", STANDARD.encode(data));
    if base64.len() < best.len() {
        best = base64;
    }
    if compress {
        let gzipped = format!(";base64,{}", STANDARD.encode(gzip(data)));
        if gzipped.len() + "gzip".len() < best.len() {
            return (format!("data:{gzipped}"), true);
        }
    }
    (format!("data:{best}"), false)
}

/// The bytes a data URL carries (after `compression`, if `gzip`), as Ignition reads them.
pub fn decode(url: &str, compression: Option<&str>) -> Result<Vec<u8>, String> {
    let rest = url.strip_prefix("data:").ok_or("not a data URL")?;
    let (meta, payload) = rest.split_once(',').ok_or("data URL without ','")?;
    let raw = if meta.ends_with(";base64") {
        STANDARD.decode(payload.trim()).map_err(|e| format!("bad base64 in data URL: {e}"))?
    } else {
        percent_decode(payload)?
    };
    match compression {
        None | Some("") => Ok(raw),
        Some("gzip") => {
            let mut out = Vec::new();
            GzDecoder::new(raw.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| format!("bad gzip data: {e}"))?;
            Ok(out)
        }
        Some(other) => Err(format!("unsupported compression {other:?}")),
    }
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("truncated %-escape in data URL")?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad %-escape %{hex} in data URL"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_like_butane() {
        assert_eq!(make(b"hello world\n", true), ("data:,hello%20world%0A".into(), false));
        assert_eq!(make(b"", true), ("data:,".into(), false));
        assert_eq!(
            make(br#"{"a":{"b":"c"}}"#, true),
            ("data:;base64,eyJhIjp7ImIiOiJjIn19".into(), false)
        );
        let repeated = "the same line again and again\n".repeat(40);
        let (url, gzipped) = make(repeated.as_bytes(), true);
        assert!(gzipped && url.starts_with("data:;base64,H4sI"), "{url}");
        assert_eq!(decode(&url, Some("gzip")).unwrap(), repeated.as_bytes());
        let (url, gzipped) = make(repeated.as_bytes(), false);
        assert!(!gzipped);
        assert_eq!(decode(&url, None).unwrap(), repeated.as_bytes());
    }

    proptest::proptest! {
        #[test]
        fn round_trips(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let (url, gzipped) = make(&data, true);
            let decoded = decode(&url, gzipped.then_some("gzip")).unwrap();
            proptest::prop_assert_eq!(decoded, data);
        }
    }
}
