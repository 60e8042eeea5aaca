//! Text that keeps every byte: boot configuration files are edited as text, but a comment may
//! hold bytes that are not UTF-8 (a Latin-1 `é` typed years ago). Such a file is neither dropped
//! nor rewritten lossily: each byte that is not part of valid UTF-8 (always >= 0x80) becomes one
//! private-use character U+10FF80 + (byte - 0x80) while it is edited, and the same byte again
//! when it is written. A file that already contains one of those characters is refused (the
//! mapping would not be reversible); no real configuration file does.

const BASE: u32 = 0x10FF00;

/// The bytes as text (see the module docs); `Err(offset)` when the file already holds a
/// character of the escape range at that byte offset.
pub fn decode(bytes: &[u8]) -> Result<String, usize> {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    let mut off = 0;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                check(s, off)?;
                out.push_str(s);
                return Ok(out);
            }
            Err(e) => {
                let good = e.valid_up_to();
                let s = std::str::from_utf8(&rest[..good]).expect("valid prefix");
                check(s, off)?;
                out.push_str(s);
                let bad = e.error_len().unwrap_or(rest.len() - good);
                for b in &rest[good..good + bad] {
                    out.push(char::from_u32(BASE + u32::from(*b)).expect("valid code point"));
                }
                off += good + bad;
                rest = &rest[good + bad..];
            }
        }
    }
}

fn check(s: &str, off: usize) -> Result<(), usize> {
    match s.char_indices().find(|(_, c)| escaped(*c).is_some()) {
        Some((i, _)) => Err(off + i),
        None => Ok(()),
    }
}

fn escaped(c: char) -> Option<u8> {
    let v = u32::from(c);
    (BASE + 0x80..=BASE + 0xFF)
        .contains(&v)
        .then(|| (v - BASE) as u8)
}

/// The bytes of text made by [`decode`] (and edited): escapes become their bytes again.
pub fn encode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match escaped(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_comes_back() {
        let latin1 =
            b"# Param\xe8tres \xe9crits \xe0 la main\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n";
        let t = decode(latin1).unwrap();
        assert!(t.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\""));
        assert_eq!(encode(&t), latin1);
        assert_eq!(
            encode(&t.replace("quiet", "quiet iommu=pt")).len(),
            latin1.len() + 9
        );
        for bytes in [
            &b"caf\xc3\xa9 \xff\xfe \xc3"[..],
            b"",
            b"\x80",
            "é€".as_bytes(),
        ] {
            assert_eq!(encode(&decode(bytes).unwrap()), bytes);
        }
        let clash = "a\u{10FFA0}".to_string();
        assert_eq!(decode(clash.as_bytes()), Err(1));
    }
}
