//! Pure text editors for the host's boot and platform configuration: strings in, strings out,
//! no I/O. The apply step wraps each in a read-modify-write of the file.

pub mod grub_default;
pub mod hostconf;
pub mod kargs;
pub mod kernel_cmdline_file;
pub mod raw_text;
pub mod registry_dwords;
pub mod sh_scan;

/// Robustness over generated inputs: no editor panics, and each keeps its invariant (applying
/// an edit twice equals applying it once). The cargo-fuzz targets do the same at scale; this
/// runs in every `cargo test`.
/// Split into (body, line ending) pairs, keeping CRLF or LF; the last line may have none.
pub(crate) fn lines(content: &str) -> Vec<(&str, &str)> {
    content
        .split_inclusive('\n')
        .map(|l| {
            if let Some(b) = l.strip_suffix("\r\n") {
                (b, "\r\n")
            } else if let Some(b) = l.strip_suffix('\n') {
                (b, "\n")
            } else {
                (l, "")
            }
        })
        .collect()
}

#[cfg(test)]
mod robustness {
    use super::*;

    const W: &[&str] = &["intel_iommu=on", "iommu=pt"];

    /// Deterministic xorshift generator over an alphabet of the characters these formats care
    /// about (quotes, escapes, `$`, comments, separators, CR, a multi-byte character).
    fn inputs(seed: u64, n: usize, vocab: &[&str]) -> Vec<String> {
        let mut s = seed;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        (0..n)
            .map(|_| {
                let len = (next() % 24) as usize;
                (0..len)
                    .map(|_| vocab[(next() % vocab.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    const CHARS: &[&str] = &[
        " ", "\t", "\n", "\r\n", "\"", "'", "\\", "$", "{", "}", "#", "=", "-", "_", ":", ".", "[",
        "]", ",", ";", "é", "a", "0", "e8", "~",
    ];

    #[test]
    fn grub_editor_never_panics_and_is_idempotent() {
        let vocab: Vec<&str> = CHARS
            .iter()
            .copied()
            .chain([
                "GRUB_CMDLINE_LINUX_DEFAULT=",
                "GRUB_CMDLINE_LINUX=",
                "export ",
                "$GRUB_CMDLINE_LINUX_DEFAULT",
                "${GRUB_CMDLINE_LINUX_DEFAULT}",
                "iommu=soft",
                "intel_iommu=on",
                "quiet",
            ])
            .collect();
        let main = inputs(1, 2000, &vocab);
        let drop = inputs(2, 2000, &vocab);
        let (mut edited, mut refused) = (0, 0);
        for (m, d) in main.iter().zip(&drop) {
            let files = [
                ("/etc/default/grub", m.as_str()),
                ("/etc/default/grub.d/50-x.cfg", d.as_str()),
            ];
            let _ = grub_default::effective_cmdline(&files);
            let _ = grub_default::plan_cmdline_removal(&files, grub_default::DEFAULT_VAR, W);
            if let Ok(once) =
                grub_default::ensure_in_file("/etc/default/grub", m, grub_default::DEFAULT_VAR, W)
            {
                assert_eq!(
                    grub_default::ensure_in_file(
                        "/etc/default/grub",
                        &once,
                        grub_default::DEFAULT_VAR,
                        W
                    )
                    .as_ref(),
                    Ok(&once),
                    "{m:?}"
                );
            }
            if let Ok(plan) = grub_default::plan_kernel_args(&files, W) {
                let applied: Vec<(&str, &str)> = grub_default::applied(&files, &plan);
                assert!(kargs::has_args(
                    &grub_default::effective_cmdline(&applied),
                    W
                ));
                assert_eq!(
                    grub_default::plan_kernel_args(&applied, W),
                    Ok(vec![]),
                    "{m:?} {d:?}"
                );
            }
            let planned = grub_default::plan_cmdline_edit(&files, grub_default::DEFAULT_VAR, W);
            if planned.is_err() {
                refused += 1;
            }
            if let Ok(plan) = planned {
                edited += usize::from(plan.iter().any(|e| e.name.ends_with(".cfg")));
                let applied: Vec<(&str, &str)> = grub_default::applied(&files, &plan);
                assert_eq!(
                    grub_default::plan_cmdline_edit(&applied, grub_default::DEFAULT_VAR, W),
                    Ok(vec![]),
                    "{m:?} {d:?}"
                );
            }
        }
        // The generator must reach the interesting paths: drop-ins edited, some refusals.
        eprintln!(
            "grub: {edited} drop-in edits, {refused} refused of {}",
            main.len()
        );
        assert!(edited > 20 && refused > 0, "{edited} {refused}");
    }

    #[test]
    fn kargs_and_cmdline_files_never_panic_and_are_idempotent() {
        let vocab: Vec<&str> = CHARS
            .iter()
            .copied()
            .chain([
                "iommu=soft",
                "intel-iommu=off",
                "iommu",
                "--",
                "options ",
                "$kernelopts",
            ])
            .collect();
        for l in inputs(3, 1000, &vocab) {
            let once = kargs::ensure_args(&l, W);
            assert_eq!(kargs::ensure_args(&once, W), once, "{l:?}");
            assert!(kargs::has_args(&once, W), "{l:?} -> {once:?}");
            let _ = kargs::remove_args(&l, W);
            let k = kernel_cmdline_file::ensure_kernel_cmdline(&l, W);
            assert_eq!(kernel_cmdline_file::ensure_kernel_cmdline(&k, W), k);
            if let Ok(b) = kernel_cmdline_file::ensure_bls_options("e", &l, W) {
                assert_eq!(
                    kernel_cmdline_file::ensure_bls_options("e", &b, W).as_ref(),
                    Ok(&b),
                    "{l:?}"
                );
                assert!(
                    kargs::has_args(&kernel_cmdline_file::bls_options(&b), W),
                    "{l:?} -> {b:?}"
                );
            }
        }
    }

    #[test]
    fn hostconf_never_panics_and_is_idempotent() {
        let vocab: Vec<&str> = CHARS
            .iter()
            .copied()
            .chain([
                "nvidia_vgpu_pfs:",
                "\nnvidia_vgpu_pfs:\n- 67:00.0\n",
                "\nnvidia_vgpu_pfs: [67:00.0, '68:00.0']\n",
                "- ",
                "- 67:00.0",
                "\n- \"67:00.4\" # c\n",
                "67:00.4",
                "other: 1",
                "  ",
            ])
            .collect();
        let lists: [&[&str]; 3] = [&[], &["67:00.0"], &["e8:00.4", "67:00.0"]];
        let mut found = 0;
        for (i, c) in inputs(4, 3000, &vocab).iter().enumerate() {
            found += usize::from(matches!(hostconf::read_pfs(c), Ok(Some(v)) if !v.is_empty()));
            let l = lists[i % lists.len()];
            if let Ok(once) = hostconf::set_pfs(c, l) {
                assert_eq!(hostconf::set_pfs(&once, l).as_ref(), Ok(&once), "{c:?}");
                let mut got = hostconf::read_pfs(&once).unwrap().unwrap_or_default();
                got.sort();
                let mut want = hostconf::normalize_pfs(l).unwrap();
                want.sort();
                assert_eq!(got, want, "{c:?} -> {once:?}");
            }
        }
        eprintln!("hostconf: {found} inputs with a non-empty list");
        assert!(found > 20, "{found}");
    }

    #[test]
    fn registry_dwords_never_panics_and_converges() {
        use registry_dwords as rd;
        let vocab: Vec<&str> = CHARS
            .iter()
            .copied()
            .chain([
                "options nvidia ",
                "options nvidia_drm ",
                "NVreg_RegistryDwords=",
                "NVreg_RegistryDwords=\"",
                "RmPVMRL=0x11",
                "RmPVMRL=",
                "PerfLevelSrc=0x2222",
                " \\\n",
                "\n",
            ])
            .collect();
        let mut merged = 0;
        for (i, t) in inputs(6, 3000, &vocab).iter().enumerate() {
            // Half start as a setting, so that the merge paths are reached often.
            let t = &if i % 2 == 0 {
                format!("options nvidia NVreg_RegistryDwords={t}")
            } else {
                t.clone()
            };
            let files = vec![
                ("/etc/modprobe.d/nvidia.conf".to_string(), t.clone()),
                (rd::OWN_FILE.to_string(), String::new()),
            ];
            let want = [0x00, 0x01, 0x11, 0x0002_0001][i % 4];
            let _ = rd::loaded(t);
            let e = match rd::plan(&files, want) {
                Err(_) => continue,
                Ok(None) => {
                    assert_eq!(rd::configured(&files), Some(want), "{t:?}");
                    continue;
                }
                Ok(Some(e)) => e,
            };
            merged += usize::from(e.path != rd::OWN_FILE);
            let applied: Vec<(String, String)> = files
                .iter()
                .map(|(p, c)| {
                    (
                        p.clone(),
                        if *p == e.path {
                            e.after.clone()
                        } else {
                            c.clone()
                        },
                    )
                })
                .collect();
            // Once applied, the value is the one in effect and nothing more is planned.
            assert_eq!(
                rd::configured(&applied),
                Some(want),
                "{t:?} -> {:?}",
                e.after
            );
            assert_eq!(rd::plan(&applied, want), Ok(None), "{t:?}");
        }
        eprintln!("registry_dwords: {merged} merges into an existing setting");
        assert!(merged > 200, "{merged}");
    }

    #[test]
    fn importers_never_panic() {
        let vocab: Vec<&str> = CHARS
            .iter()
            .copied()
            .chain([
                "echo 2f82ee72-3ac5-4615-9c0b-327c12e8c83d > /sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create\n",
                "echo 242e5ea7-90e2-4d6e-afeb-a0b9a656c108 > /sys/class/mdev_bus/0000:e8:04.0/mdev_supported_types/vfio-pci-575/create",
                "echo ",
                "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
                " > ",
                ">>",
                "/sys/class/mdev_bus/0000:e8:00.4/mdev_supported_types/nvidia-555/create",
                "| tee ",
                "sudo ",
                "uuidgen",
                "/usr/lib/nvidia/sriov-manage -e ",
                "0:e8:0.0",
                "$(",
                "`",
            ])
            .collect();
        let mut vgpus = 0;
        for c in inputs(5, 3000, &vocab) {
            let items = crate::import::rclocal::parse(&c);
            vgpus += items
                .iter()
                .filter(|i| matches!(i.item, crate::import::rclocal::RcItem::Vgpu { .. }))
                .count();
            let lines: Vec<usize> = items.iter().map(|i| i.line).collect();
            let once = crate::import::rclocal::comment_out(&c, &lines);
            assert_eq!(crate::import::rclocal::comment_out(&once, &lines), once);
            let _ = crate::import::mdevctl::parse(
                "0000:e8:00.4",
                "2f82ee72-3ac5-4615-9c0b-327c12e8c83d",
                &c,
            );
            let _ = crate::profile_load::check(&c, "f.toml");
        }
        eprintln!("rclocal: {vgpus} vGPU lines recognized");
        assert!(vgpus > 10, "{vgpus}");
    }
}
