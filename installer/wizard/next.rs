//! The commands the operator runs next, spelled out exactly: after a reboot checkpoint (with the
//! --root/--simulate this run was given, and the real path of the saved profile) and after the
//! end of setup. Pure.

/// `s` as one shell word: as it is when it needs no quoting, else in single quotes.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `vgpuctl` with the global options that name the host (`root`: absolute, `None` for the real
/// `/`), then `args`.
pub fn command(root: Option<&str>, simulate: Option<&str>, args: &[&str]) -> String {
    let mut words = vec!["vgpuctl".to_string()];
    if let Some(r) = root {
        words.push("--root".into());
        words.push(shell_word(r));
    }
    if let Some(m) = simulate {
        words.push("--simulate".into());
        words.push(shell_word(m));
    }
    words.extend(args.iter().map(|a| shell_word(a)));
    words.join(" ")
}

/// What the operator does with a host whose setup completed: see the vGPUs, give them to VMs,
/// and know what brings them back at boot.
pub fn after_setup(root: Option<&str>, simulate: Option<&str>, restore_unit: &str) -> String {
    let status = command(root, simulate, &["status"]);
    let xml = command(root, simulate, &["status", "--libvirt-xml"]);
    format!(
        "What next:\n  {status}\n      the vGPUs: their UUIDs, GPUs and types\n  {xml}\n      a libvirt \
         <hostdev> element per vGPU, to paste into a VM's definition (virsh edit VM)\n  \
         {restore_unit} recreates them at every boot (systemctl status {restore_unit})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_command_keeps_the_host_options_and_quotes_what_needs_it() {
        assert_eq!(
            command(
                None,
                None,
                &["setup", "--profile", "/root/a40.toml", "--yes"]
            ),
            "vgpuctl setup --profile /root/a40.toml --yes"
        );
        assert_eq!(
            command(Some("/tmp/my host"), Some("a40x8"), &["setup"]),
            "vgpuctl --root '/tmp/my host' --simulate a40x8 setup"
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn after_setup_names_status_the_libvirt_xml_and_the_restore_unit() {
        let t = after_setup(Some("/tmp/r"), Some("a40x8"), "vgpuctl-restore.service");
        assert!(
            t.contains("vgpuctl --root /tmp/r --simulate a40x8 status\n"),
            "{t}"
        );
        assert!(
            t.contains("vgpuctl --root /tmp/r --simulate a40x8 status --libvirt-xml\n"),
            "{t}"
        );
        assert!(
            t.contains("vgpuctl-restore.service recreates them at every boot"),
            "{t}"
        );
    }
}
