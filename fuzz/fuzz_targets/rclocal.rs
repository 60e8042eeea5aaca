//! The importers: rc.local (`echo UUID > .../create`, `sriov-manage -e`) and mdevctl
//! definitions. Never panic; every recognized line number exists; commenting the imported
//! lines out twice == once, changes no other line, and leaves nothing a second import would
//! pick up; an mdevctl definition that parses renders back to one that parses the same.
//! Input: RC.LOCAL (the same text is also tried as an mdevctl JSON definition).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpuctl::import::{mdevctl, rclocal};

fuzz_target!(|data: &[u8]| {
    let c = String::from_utf8_lossy(data);
    let items = rclocal::parse(&c);
    let n_lines = c.split('\n').count();
    for it in &items {
        assert!(it.line >= 1 && it.line <= n_lines, "{it:?}");
        if let rclocal::RcItem::Vgpu {
            uuid,
            parent,
            type_dir,
        } = &it.item
        {
            assert!(vgpuctl::pci::is_uuid(uuid), "{it:?}");
            assert!(vgpuctl::pci::check_mdev_parent(parent).is_ok(), "{it:?}");
            assert!(vgpuctl::pci::is_safe_name(type_dir), "{it:?}");
        }
    }
    let lines: Vec<usize> = items.iter().map(|i| i.line).collect();
    let once = rclocal::comment_out(&c, &lines);
    assert_eq!(rclocal::comment_out(&once, &lines), once);
    for (i, (a, b)) in c
        .split_inclusive('\n')
        .zip(once.split_inclusive('\n'))
        .enumerate()
    {
        if !lines.contains(&(i + 1)) {
            assert_eq!(a, b, "line {} changed", i + 1);
        } else {
            assert!(b.ends_with(a), "line {} lost text", i + 1);
        }
    }
    let again: Vec<_> = rclocal::parse(&once)
        .into_iter()
        .filter(|i| !matches!(i.item, rclocal::RcItem::Skipped { .. }))
        .collect();
    assert!(
        again.is_empty(),
        "commented-out lines imported again: {again:?}"
    );

    if let Ok(def) = mdevctl::parse("0000:e8:04.0", "242e5ea7-90e2-4d6e-afeb-a0b9a656c108", &c) {
        let text = mdevctl::render(&def);
        let back = mdevctl::parse(
            "0000:e8:04.0",
            "242e5ea7-90e2-4d6e-afeb-a0b9a656c108",
            &text,
        )
        .unwrap_or_else(|e| panic!("rendered definition does not parse: {e:?}\n{text}"));
        assert_eq!(back, def);
    }
});
