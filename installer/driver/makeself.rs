//! What a `.run` says about itself: NVIDIA's `.run` is a makeself archive whose header assigns
//! `label="NVIDIA Accelerated Graphics Driver for Linux-x86_64 <version>"` (makeself's
//! `makeself-header.sh`). The version is read from there when the file name does not tell it
//! (a renamed download), and a name that disagrees with the label is refused.

use std::io::Read;

use crate::host::Host;

/// The header's `label=` value, from the first 64 KiB of the file (the header is ~20-30 KB).
pub fn label(host: &Host, rel: &std::path::Path) -> Option<String> {
    let path = host.checked_path(&rel.to_string_lossy()).ok()?;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    label_of(&head)
}

/// Pure: the `label=` line of a makeself header.
pub fn label_of(head: &[u8]) -> Option<String> {
    if !head.starts_with(b"#!") {
        return None;
    }
    String::from_utf8_lossy(head).lines().find_map(|l| {
        let v = l.strip_prefix("label=")?.trim();
        Some(v.trim_matches('"').trim_matches('\'').to_string())
    })
}

/// The version at the end of NVIDIA's label (`... Linux-x86_64 550.163.02` -> `550.163.02`).
pub fn version_of_label(label: &str) -> Option<String> {
    let last = label.split_whitespace().last()?;
    let parts: Vec<&str> = last.split('.').collect();
    let ok = parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    ok.then(|| last.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_line_of_a_makeself_header() {
        let head = b"#!/bin/sh\n# This script was generated using Makeself 2.4.5\nCRCsum=\"1\"\n\
label=\"NVIDIA Accelerated Graphics Driver for Linux-x86_64 550.163.02\"\nscript=\"./nvidia-installer\"\n";
        let l = label_of(head).unwrap();
        assert_eq!(version_of_label(&l).as_deref(), Some("550.163.02"));
        assert_eq!(label_of(b"PK\x03\x04label=\"x 1.2\"\n"), None);
        assert_eq!(version_of_label("some archive"), None);
        assert_eq!(
            version_of_label("NVIDIA Accelerated Graphics Driver for Linux-x86_64 580.65")
                .as_deref(),
            Some("580.65")
        );
    }
}
