//! The importers: rc.local (`echo UUID > .../create`, `echo ID > .../current_vgpu_type`,
//! `sriov-manage -e`) and mdevctl
//! definitions. Never panic; every recognized line number exists; rewriting rc.local without
//! the imported commands (what `import` does, `rc_rewrite::rewrite`) changes no line it did not
//! import, is done once (a second rewrite of its output imports nothing), and leaves nothing a
//! second import would pick up; an mdevctl definition that parses renders back to one that
//! parses the same.
//! Input: RC.LOCAL (the same text is also tried as an mdevctl JSON definition).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpuctl::import::{mdevctl, rc_rewrite, rclocal};

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
        if let rclocal::RcItem::VendorVgpu { vf, type_id } = &it.item {
            assert!(vgpuctl::pci::PciAddr::parse(vf).is_ok(), "{it:?}");
            assert!(
                !type_id.is_empty() && type_id.bytes().all(|b| b.is_ascii_digit()),
                "{it:?}"
            );
        }
    }
    let importable = |i: &rclocal::RcLine| {
        matches!(
            i.item,
            rclocal::RcItem::Vgpu { .. }
                | rclocal::RcItem::VendorVgpu { .. }
                | rclocal::RcItem::SriovEnable { .. }
        )
    };
    let imported: Vec<&rclocal::RcLine> = items.iter().filter(|i| importable(i)).collect();
    if let Ok((once, _)) = rc_rewrite::rewrite(&c, &imported) {
        let touched: Vec<usize> = imported.iter().map(|i| i.line).collect();
        let (a_lines, b_lines): (Vec<&str>, Vec<&str>) = (
            c.split_inclusive('\n').collect(),
            once.split_inclusive('\n').collect(),
        );
        assert_eq!(
            a_lines.len(),
            b_lines.len(),
            "line count changed: {c:?} -> {once:?}"
        );
        for (i, (a, b)) in a_lines.iter().zip(&b_lines).enumerate() {
            if !touched.contains(&(i + 1)) {
                assert_eq!(a, b, "line {} changed: {c:?} -> {once:?}", i + 1);
            }
        }
        let again: Vec<_> = rclocal::parse(&once)
            .into_iter()
            .filter(|i| importable(i))
            .collect();
        assert!(
            again.is_empty(),
            "rewritten lines imported again: {again:?}\n{c:?} -> {once:?}"
        );
    }

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
