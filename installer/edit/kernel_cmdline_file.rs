//! Kernel command lines kept outside GRUB's defaults:
//! - `/etc/kernel/cmdline`: systemd-boot hosts and Proxmox VE with a ZFS root
//!   (`proxmox-boot-tool refresh` or `kernel-install` copy it into the boot entries).
//!   `kernel-install` joins all lines, so a newline inside is just whitespace; but
//!   `proxmox-boot-tool` reads only the first line (`CMDLINE=$(get_first_line
//!   /etc/kernel/cmdline)` in proxmox-kernel-helper's zz-proxmox-boot, `get_first_line` being a
//!   single `read -r`), so on Proxmox the first line is the command line.
//! - Boot Loader Specification entries `/boot/loader/entries/*.conf` (RHEL-family, Fedora):
//!   `options` lines, all of which are concatenated into the command line. On RHEL 8 they may
//!   say `options $kernelopts`, which GRUB expands from `grubenv`: there only `grubby` edits the
//!   real value, so that case is an error that says so.

use super::kargs;
use super::lines;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    #[error("{entry}:{line}: options use ${var} from grubenv; change it with `grubby --update-kernel=ALL --args=...` instead of editing the entry")]
    GrubenvVariable {
        entry: String,
        line: usize,
        var: String,
    },
    #[error("{entry}: the options would still not give the kernel {wanted} (an unbalanced double quote on an earlier options line swallows what follows); fix the entry by hand and run again")]
    NotEffective { entry: String, wanted: String },
}

/// `/etc/kernel/cmdline` with `wanted` ensured. An empty (or missing: pass "") file becomes
/// the arguments and a newline; otherwise every other byte, including the trailing newline or
/// its absence, is kept.
pub fn ensure_kernel_cmdline(content: &str, wanted: &[&str]) -> String {
    if content.trim().is_empty() && !wanted.is_empty() {
        return format!("{}\n", wanted.join(" "));
    }
    kargs::ensure_args(content, wanted)
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("/etc/kernel/cmdline: line 1 is empty but line {line} has arguments; proxmox-boot-tool reads only the first line, so join them into one line and run again")]
pub struct FirstLineEmpty {
    pub line: usize,
}

/// The command line proxmox-boot-tool takes from `/etc/kernel/cmdline`: its first line.
pub fn proxmox_cmdline(content: &str) -> &str {
    let first = content.split('\n').next().unwrap_or("");
    first.strip_suffix('\r').unwrap_or(first)
}

/// `/etc/kernel/cmdline` for proxmox-boot-tool with `wanted` ensured on the first line, the
/// only one it reads; later lines are kept as they are. A file whose first line is empty while a
/// later one is not is refused (the tool would boot without `root=`).
pub fn ensure_proxmox_cmdline(content: &str, wanted: &[&str]) -> Result<String, FirstLineEmpty> {
    let first = proxmox_cmdline(content);
    if first.trim().is_empty() {
        if let Some(n) = content.lines().position(|l| !l.trim().is_empty()) {
            return Err(FirstLineEmpty { line: n + 1 });
        }
        return Ok(ensure_kernel_cmdline(content, wanted));
    }
    let rest = &content[first.len()..];
    Ok(format!("{}{rest}", kargs::ensure_args(first, wanted)))
}

/// `/etc/kernel/cmdline` without `remove` (see [`kargs::remove_args`]).
pub fn remove_kernel_cmdline(content: &str, remove: &[&str]) -> String {
    kargs::remove_args(content, remove)
}

/// The `options` value of a line (`options  root=... ro`): byte offset of the value in the
/// body, or None when the line is not an options line. BLS keys are separated from values by
/// whitespace; `#` starts a comment line.
fn options_value(body: &str) -> Option<usize> {
    let t = body.trim_start();
    let lead = body.len() - t.len();
    let rest = t.strip_prefix("options")?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let ws = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    Some(lead + "options".len() + ws)
}

/// The kernel arguments a BLS entry gives: every `options` line joined with a space.
pub fn bls_options(content: &str) -> String {
    lines(content)
        .iter()
        .filter_map(|(b, _)| options_value(b).map(|i| b[i..].trim()))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_grubenv(entry: &str, content: &str) -> Result<(), BlsError> {
    for (n, (b, _)) in lines(content).iter().enumerate() {
        if let Some(i) = options_value(b) {
            if let Some(tok) = kargs::tokens(&b[i..])
                .iter()
                .find(|t| t.text.starts_with('$'))
            {
                return Err(BlsError::GrubenvVariable {
                    entry: entry.to_string(),
                    line: n + 1,
                    var: tok
                        .text
                        .trim_start_matches('$')
                        .trim_matches(['{', '}'])
                        .to_string(),
                });
            }
        }
    }
    Ok(())
}

/// A BLS entry with `wanted` in its options: conflicting values are replaced on every
/// `options` line, missing arguments go to the end of the last one; an entry without an
/// `options` line gets one appended. `entry` names the file in errors.
pub fn ensure_bls_options(entry: &str, content: &str, wanted: &[&str]) -> Result<String, BlsError> {
    check_grubenv(entry, content)?;
    if kargs::has_args(&bls_options(content), wanted) {
        return Ok(content.to_string());
    }
    let ls = lines(content);
    let mut bodies: Vec<String> = ls.iter().map(|(b, _)| b.to_string()).collect();
    let opt_lines: Vec<usize> = (0..ls.len())
        .filter(|&i| options_value(ls[i].0).is_some())
        .collect();
    for &i in &opt_lines {
        let v = options_value(&bodies[i]).expect("options line");
        let new = kargs::replace_conflicts(&bodies[i][v..], wanted);
        bodies[i].replace_range(v.., &new);
    }
    let joined: String = opt_lines
        .iter()
        .map(|&i| &bodies[i][options_value(&bodies[i]).expect("options line")..])
        .collect::<Vec<_>>()
        .join(" ");
    let toks = kargs::tokens(&joined);
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !toks.iter().any(|t| t.text == **w))
        .cloned()
        .collect();
    if let (Some(&last), false) = (opt_lines.last(), missing.is_empty()) {
        let v = options_value(&bodies[last]).expect("options line");
        let edited = kargs::ensure_args(&bodies[last][v..], &missing);
        // A bare `options` keyword has no whitespace before its (empty) value yet.
        let sep = if v == 0 || bodies[last][..v].ends_with([' ', '\t']) {
            ""
        } else {
            " "
        };
        bodies[last].replace_range(v.., &format!("{sep}{edited}"));
    }
    let mut out: String = ls
        .iter()
        .zip(&bodies)
        .map(|((_, e), b)| format!("{b}{e}"))
        .collect();
    if opt_lines.is_empty() && !missing.is_empty() {
        let eol = if content.contains("\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        out.push_str(&format!("options {}{eol}", missing.join(" ")));
    }
    if !kargs::has_args(&bls_options(&out), wanted) {
        return Err(BlsError::NotEffective {
            entry: entry.to_string(),
            wanted: wanted.join(" "),
        });
    }
    Ok(out)
}

/// A BLS entry without `remove` on any `options` line.
pub fn remove_bls_options(entry: &str, content: &str, remove: &[&str]) -> Result<String, BlsError> {
    check_grubenv(entry, content)?;
    Ok(lines(content)
        .iter()
        .map(|(b, e)| match options_value(b) {
            Some(v) => format!("{}{}{e}", &b[..v], kargs::remove_args(&b[v..], remove)),
            None => format!("{b}{e}"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &[&str] = &["intel_iommu=on", "iommu=pt"];

    /// Found by the `kargs` fuzz target: the options lines are joined into one command line, so
    /// an unbalanced quote on one swallows arguments appended to a later one. Refused.
    #[test]
    fn unbalanced_quote_on_an_earlier_options_line_is_refused() {
        let e = "title x\noptions root=/dev/sda1 acpi_osi=\"Windows\noptions quiet\n";
        assert!(matches!(
            ensure_bls_options("e.conf", e, W),
            Err(BlsError::NotEffective { .. })
        ));
    }

    /// Found by the `kargs` fuzz target: a bare `options` line got the arguments glued to the
    /// keyword (`optionsintel_iommu=on`), which is no options line, so every run added another.
    #[test]
    fn bare_options_keyword_gets_a_separator() {
        let once = ensure_bls_options("e.conf", "title x\noptions", W).unwrap();
        assert_eq!(once, "title x\noptions intel_iommu=on iommu=pt");
        assert_eq!(ensure_bls_options("e.conf", &once, W).unwrap(), once);
        let once = ensure_bls_options("e.conf", "options\t\n", W).unwrap();
        assert_eq!(once, "options\tintel_iommu=on iommu=pt\n");
    }

    /// Proxmox VE 8 with ZFS root: /etc/kernel/cmdline as the installer writes it.
    const PVE: &str = "root=ZFS=rpool/ROOT/pve-1 boot=zfs\n";

    /// Rocky Linux 9 BLS entry.
    const ROCKY: &str = "title Rocky Linux (5.14.0-427.13.1.el9_4.x86_64) 9.4 (Blue Onyx)
version 5.14.0-427.13.1.el9_4.x86_64
linux /vmlinuz-5.14.0-427.13.1.el9_4.x86_64
initrd /initramfs-5.14.0-427.13.1.el9_4.x86_64.img $tuned_initrd
options root=/dev/mapper/rl-root ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet
grub_users $grub_users
grub_arg --unrestricted
grub_class rocky
";

    #[test]
    fn proxmox_cmdline_file() {
        let out = ensure_kernel_cmdline(PVE, W);
        assert_eq!(
            out,
            "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on iommu=pt\n"
        );
        assert_eq!(ensure_kernel_cmdline(&out, W), out);
        assert_eq!(remove_kernel_cmdline(&out, W), PVE);
        assert_eq!(
            ensure_kernel_cmdline("quiet", &["iommu=pt"]),
            "quiet iommu=pt"
        );
        assert_eq!(ensure_kernel_cmdline("", W), "intel_iommu=on iommu=pt\n");
        assert_eq!(ensure_kernel_cmdline("\n", W), "intel_iommu=on iommu=pt\n");
        assert_eq!(
            ensure_kernel_cmdline("root=ZFS=rpool/ROOT/pve-1 boot=zfs iommu=soft\n", W),
            "root=ZFS=rpool/ROOT/pve-1 boot=zfs iommu=pt intel_iommu=on\n"
        );
    }

    /// Issue 12 item 12: on Proxmox only the first line counts; the arguments go there.
    #[test]
    fn proxmox_reads_and_gets_the_first_line() {
        let multi = "root=ZFS=rpool/ROOT/pve-1 boot=zfs\nquiet iommu=soft\n";
        let out = ensure_proxmox_cmdline(multi, W).unwrap();
        assert_eq!(
            out,
            "root=ZFS=rpool/ROOT/pve-1 boot=zfs intel_iommu=on iommu=pt\nquiet iommu=soft\n"
        );
        assert!(kargs::has_args(proxmox_cmdline(&out), W));
        assert_eq!(ensure_proxmox_cmdline(&out, W).unwrap(), out);
        assert_eq!(
            ensure_proxmox_cmdline(PVE, W).unwrap(),
            ensure_kernel_cmdline(PVE, W)
        );
        assert_eq!(
            ensure_proxmox_cmdline("", W).unwrap(),
            "intel_iommu=on iommu=pt\n"
        );
        assert_eq!(
            ensure_proxmox_cmdline("\nroot=ZFS=rpool/ROOT/pve-1\n", W),
            Err(FirstLineEmpty { line: 2 })
        );
    }

    #[test]
    fn rocky_bls_entry_only_options_line_changes() {
        let out = ensure_bls_options("e.conf", ROCKY, W).unwrap();
        let diff: Vec<_> = ROCKY
            .lines()
            .zip(out.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(diff.len(), 1);
        assert!(diff[0].1.ends_with("rhgb quiet intel_iommu=on iommu=pt"));
        assert_eq!(ensure_bls_options("e.conf", &out, W).unwrap(), out);
        assert!(kargs::has_args(&bls_options(&out), W));
        assert_eq!(remove_bls_options("e.conf", &out, W).unwrap(), ROCKY);
    }

    #[test]
    fn several_options_lines_are_one_command_line() {
        let e = "title x\noptions root=/dev/sda1 iommu=soft\noptions\tquiet\n";
        assert_eq!(bls_options(e), "root=/dev/sda1 iommu=soft quiet");
        let out = ensure_bls_options("e", e, W).unwrap();
        assert_eq!(
            out,
            "title x\noptions root=/dev/sda1 iommu=pt\noptions\tquiet intel_iommu=on\n"
        );
        assert!(kargs::has_args(&bls_options(&out), W));
    }

    #[test]
    fn entry_without_options_gets_one() {
        assert_eq!(
            ensure_bls_options("e", "title x\nlinux /vmlinuz", W).unwrap(),
            "title x\nlinux /vmlinuz\noptions intel_iommu=on iommu=pt\n"
        );
        // `optionsfoo` is not an options line; `#options` is a comment.
        let e = "optionsfoo a\n#options b\n";
        assert_eq!(bls_options(e), "");
    }

    #[test]
    fn crlf_entry() {
        let e = "title x\r\noptions ro\r\n";
        assert_eq!(
            ensure_bls_options("e", e, W).unwrap(),
            "title x\r\noptions ro intel_iommu=on iommu=pt\r\n"
        );
    }

    #[test]
    fn rhel8_kernelopts_is_refused_with_what_to_do() {
        let e = "title Red Hat Enterprise Linux (4.18.0)\noptions $kernelopts $tuned_params\n";
        let err = ensure_bls_options("/boot/loader/entries/a.conf", e, W).unwrap_err();
        assert_eq!(
            err,
            BlsError::GrubenvVariable {
                entry: "/boot/loader/entries/a.conf".into(),
                line: 2,
                var: "kernelopts".into()
            }
        );
        assert!(err.to_string().contains("grubby"));
    }
}
