//! The CloudPods host.conf editor (`nvidia_vgpu_pfs`): never panics; setting a list twice ==
//! once; reading back gives exactly the normalized list; no line other than the key and list
//! entries changes, and their order is kept.
//! Input: HOST.CONF NUL ADDRESSES (whitespace separated).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use vgpuctl::edit::hostconf;

/// Lines that may change: the top-level key line (the key bare, or quoted as the editor now
/// takes it, after a BOM on the first line) and YAML block-list entries.
fn keyish(l: &str) -> bool {
    let b = l.strip_suffix('\r').unwrap_or(l);
    let b = b.strip_prefix('\u{feff}').unwrap_or(b);
    let quoted = [
        hostconf::KEY.to_string(),
        format!("\"{}\"", hostconf::KEY),
        format!("'{}'", hostconf::KEY),
    ];
    for k in &quoted {
        if let Some(rest) = b.strip_prefix(k.as_str()) {
            if rest.trim_start_matches([' ', '\t']).starts_with(':') {
                return true;
            }
        }
    }
    let t = b.trim_start_matches(' ');
    t.strip_prefix('-')
        .is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data);
    let content = p[0].as_str();
    let list: Vec<&str> = p.get(1).map_or(vec![], |s| s.split_whitespace().collect());
    let read = hostconf::read_pfs(content);
    let Ok(want) = hostconf::normalize_pfs(&list) else {
        assert!(hostconf::set_pfs(content, &list).is_err());
        return;
    };
    let Ok(once) = hostconf::set_pfs(content, &list) else {
        // Refused. Since issue 12 item 13 the editor also judges the whole document with a YAML
        // parser and refuses shapes it cannot keep (invalid YAML, flow mappings, duplicate keys),
        // which the line reader may still read a key from: a refusal is allowed, a panic is not.
        return;
    };
    assert_eq!(
        hostconf::set_pfs(&once, &list).as_ref(),
        Ok(&once),
        "set twice != once: {content:?} {list:?}"
    );
    let mut got = hostconf::read_pfs(&once)
        .expect("our own output reads back")
        .unwrap_or_default();
    got.sort();
    let mut w = want.clone();
    w.sort();
    assert_eq!(got, w, "{content:?} -> {once:?}");
    let others = |s: &str| -> Vec<String> {
        common::line_bodies(s)
            .into_iter()
            .filter(|l| !keyish(l) && !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(others(content), others(&once), "{content:?} -> {once:?}");
    if read.as_ref().is_ok_and(|r| r.is_some()) || !want.is_empty() {
        assert!(once.contains(hostconf::KEY));
    }
});
