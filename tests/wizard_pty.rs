//! The wizard, driven in a pseudo-terminal on the simulator: arrow keys, space, enter, Esc,
//! Ctrl-C. The pty says no size, so the wizard sees console's 80 columns unless a test sets one.

mod common;
use common::*;

use rexpect::session::{spawn_command, PtySession};

const DOWN: &str = "\x1b[B";
const ENTER: &str = "\r";
const ESC: &str = "\x1b";
const SPACE: &str = " ";

fn wizard(s: &Sim, extra: &[&str]) -> PtySession {
    wizard_sized(s, extra, None)
}

/// The wizard on a terminal `columns` wide (set on the pty before the binary starts).
fn wizard_sized(s: &Sim, extra: &[&str], columns: Option<u16>) -> PtySession {
    let mut c = std::process::Command::new(bin());
    c.arg("--root")
        .arg(s.root())
        .arg("--simulate")
        .arg(&s.model)
        .arg("setup");
    c.args(extra);
    c.env("TERM", "xterm").env("NO_COLOR", "1");
    if let Some(cols) = columns {
        use std::os::unix::process::CommandExt;
        // SAFETY: one ioctl on the child's own terminal between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let ws = nix::libc::winsize {
                    ws_row: 50,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                nix::libc::ioctl(0, nix::libc::TIOCSWINSZ, &ws);
                Ok(())
            });
        }
    }
    spawn_command(c, Some(60_000)).expect("spawn in a pty")
}

/// `text` as rexpect reads it: one char per byte (it does not decode UTF-8), for expecting
/// "×" and "…".
fn bytes(text: &str) -> String {
    text.bytes().map(char::from).collect()
}

/// What the terminal shows of `raw`: escape sequences dropped, one entry per line written.
fn lines(raw: &str) -> Vec<String> {
    let raw =
        String::from_utf8_lossy(&raw.chars().map(|c| c as u8).collect::<Vec<u8>>()).into_owned();
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for x in chars.by_ref() {
                    if x.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out.split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Type like a person: the prompt switches the terminal to raw mode with a flush, so a key sent
/// before it waits would be dropped.
fn key(p: &mut PtySession, k: &str) {
    std::thread::sleep(std::time::Duration::from_millis(400));
    p.send(k).unwrap();
    p.flush().unwrap();
}

fn exit_code(p: &mut PtySession) -> i32 {
    let _ = p.exp_eof();
    match p.process().wait() {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
        other => panic!("wizard did not exit normally: {other:?}"),
    }
}

/// Answer the first-time questions on a fresh a40x8: all GPUs, A40-24Q typed, 2 per GPU, the
/// zip in /root, no checksum, reboot "never".
fn answer_fresh(p: &mut PtySession) {
    p.exp_string("GPUs for vGPU").unwrap();
    key(p, ENTER);
    p.exp_string("vGPU type").unwrap();
    key(p, "A40-24Q");
    key(p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    key(p, ENTER);
    p.exp_string("GRID host driver").unwrap();
    key(p, ENTER);
    p.exp_string("Path").unwrap();
    key(p, ENTER);
    p.exp_string("Compute the file's SHA-256").unwrap();
    key(p, ENTER);
    p.exp_string("When the host needs its reboot").unwrap();
    key(p, DOWN);
    key(p, DOWN);
    key(p, ENTER);
}

/// The offer to save the answers (without --save-profile): no.
fn decline_save(p: &mut PtySession) {
    p.exp_string("Save these answers as a profile").unwrap();
    key(p, "n");
}

#[test]
fn full_run_to_a_saved_profile_that_replays_to_the_same_state() {
    let s = Sim::new("a40x8");
    let saved = s.root().with_extension("profile.toml");
    let mut p = wizard(&s, &["--save-profile", saved.to_str().unwrap()]);
    answer_fresh(&mut p);
    p.exp_string("Apply this plan?").unwrap();
    key(&mut p, "y");
    // The exact next commands: this run's --root and --simulate, the saved profile's path.
    let root = s.root().display().to_string();
    p.exp_string(&format!(
        "Reboot, then run: vgpuctl --root {root} --simulate a40x8 setup\r\n  (or unattended, \
         from the saved profile: vgpuctl --root {root} --simulate a40x8 setup --profile {} --yes)",
        saved.display()
    ))
    .unwrap();
    assert_eq!(exit_code(&mut p), 3);
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(
        text.contains("vgpu_type = \"A40-24Q\"") && text.contains("count = 2"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "vgpuctl setup --profile {} --yes",
            saved.display()
        )),
        "{text}"
    );

    // After the reboot the resumed wizard asks only what is open: the type, from the live list.
    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let mut p = wizard(&s, &[]);
    p.exp_string("Continuing the setup you started").unwrap();
    p.exp_string("Enable SR-IOV on 8 GPU(s) now").unwrap();
    key(&mut p, "y");
    p.exp_string("from the driver's live list").unwrap();
    key(&mut p, ENTER);
    p.exp_string("Apply this plan?").unwrap();
    key(&mut p, "y");
    p.exp_string("Setup is complete.").unwrap();
    // What next: where the vGPUs are, how a VM gets one, what brings them back at boot.
    p.exp_string("What next:").unwrap();
    p.exp_string(&format!(
        "vgpuctl --root {root} --simulate a40x8 status\r\n"
    ))
    .unwrap();
    p.exp_string(&format!(
        "vgpuctl --root {root} --simulate a40x8 status --libvirt-xml\r\n"
    ))
    .unwrap();
    p.exp_string("vgpuctl-restore.service recreates them at every boot")
        .unwrap();
    assert_eq!(exit_code(&mut p), 0);
    let by_wizard = s.live_vgpus();
    assert_eq!(by_wizard.len(), 16);

    // The saved profile, unattended, on another fresh a40x8: same types and counts.
    let t = Sim::new("a40x8");
    let runs = t.setup_to_end(&saved);
    assert_eq!(runs.last().unwrap().code, 0);
    let replayed = t.live_vgpus();
    let types = |m: &std::collections::BTreeMap<String, String>| {
        let mut v: Vec<String> = m.values().cloned().collect();
        v.sort();
        v
    };
    assert_eq!(types(&replayed), types(&by_wizard));
}

#[test]
fn an_unsupported_gpu_cannot_be_picked() {
    let s = Sim::new("a40x8-ready");
    // A GeForce card next to the A40s.
    let dev = s.root().join("sys/devices/pci0000:00/0000:01:00.0");
    std::fs::create_dir_all(&dev).unwrap();
    for (f, v) in [
        ("vendor", "0x10de"),
        ("device", "0x2684"),
        ("class", "0x030000"),
        ("subsystem_vendor", "0x10de"),
        ("subsystem_device", "0x16f3"),
    ] {
        std::fs::write(dev.join(f), format!("{v}\n")).unwrap();
    }
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:01:00.0",
        s.root().join("sys/bus/pci/devices/0000:01:00.0"),
    )
    .unwrap();
    let before = s.hash();
    let mut p = wizard(&s, &[]);
    // The reason, whole, above the picker (a row would have to cut it on 80 columns).
    p.exp_string("0000:01:00.0 GeForce RTX 4090 cannot be used: GeForce RTX 4090 is a consumer")
        .unwrap();
    p.exp_string("GPUs for vGPU").unwrap();
    p.exp_string("0000:01:00.0  GeForce RTX 4090  24 GiB  cannot be used (see above)")
        .unwrap();
    // The GeForce is listed first (0000:01:00.0): select it too and accept.
    key(&mut p, " ");
    key(&mut p, ENTER);
    p.exp_string("0000:01:00.0 cannot be picked").unwrap();
    p.exp_string("GPUs for vGPU").unwrap();
    p.send_control('c').unwrap();
    let _ = exit_code_any(&mut p);
    assert_eq!(s.hash(), before, "nothing changed");
}

fn exit_code_any(p: &mut PtySession) -> Option<i32> {
    let _ = p.exp_eof();
    match p.process().wait() {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => Some(c),
        _ => None,
    }
}

#[test]
fn a_count_above_what_fits_is_refused_at_the_prompt() {
    let s = Sim::new("a40x8-ready");
    assert_eq!(s.run(&["restore"]).code, 0);
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ENTER);
    // The driver is loaded but no VFs yet: the type is typed and checked against the model.
    p.exp_string("vGPU type").unwrap();
    key(&mut p, "A40-24Q");
    key(&mut p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    key(&mut p, "\x7f3");
    key(&mut p, ENTER);
    p.exp_string("does not fit: at most 2").unwrap();
    p.send_control('c').unwrap();
    let _ = exit_code_any(&mut p);
}

#[test]
fn ctrl_c_before_confirming_changes_nothing() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    let mut p = wizard(&s, &[]);
    answer_fresh(&mut p);
    decline_save(&mut p);
    p.exp_string("Apply this plan?").unwrap();
    p.send_control('c').unwrap();
    p.exp_string("Cancelled: nothing was changed.").unwrap();
    assert_eq!(exit_code_any(&mut p), Some(130));
    assert_eq!(s.hash(), before);
}

#[test]
fn no_terminal_says_to_pass_a_profile() {
    let s = Sim::new("a40x8");
    let r = s.run(&["setup"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--profile"), "{r:?}");
}

/// Item 4: Esc at a list, at a typed answer and at a choice cancels, says so, exits 130, and
/// changes nothing.
#[test]
fn esc_at_any_prompt_cancels_and_changes_nothing() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    // The GPU list.
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ESC);
    p.exp_string("Cancelled: nothing was changed.").unwrap();
    assert_eq!(exit_code_any(&mut p), Some(130));
    // A typed answer (the type, before the driver lists them).
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ENTER);
    p.exp_string("vGPU type").unwrap();
    key(&mut p, "A40");
    key(&mut p, ESC);
    p.exp_string("Cancelled: nothing was changed.").unwrap();
    assert_eq!(exit_code_any(&mut p), Some(130));
    // A choice, after every answer.
    let mut p = wizard(&s, &[]);
    answer_fresh(&mut p);
    decline_save(&mut p);
    p.exp_string("Apply this plan?").unwrap();
    key(&mut p, ESC);
    p.exp_string("Cancelled: nothing was changed.").unwrap();
    assert_eq!(exit_code_any(&mut p), Some(130));
    assert_eq!(s.hash(), before);
}

/// Item 4: Ctrl-C on a picker (which hides the cursor) says it cancelled and shows the cursor.
#[test]
fn ctrl_c_on_a_picker_restores_the_cursor() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    p.exp_string("0000:e8:00.0").unwrap();
    key(&mut p, "\x03");
    let shown = p.exp_string("Cancelled: nothing was changed.").unwrap();
    assert_eq!(exit_code_any(&mut p), Some(130));
    // The last word on the cursor before the message is "show" (the picker hid it).
    let hide = shown.rfind("\x1b[?25l");
    let show = shown.rfind("\x1b[?25h");
    assert!(show.is_some() && show > hide, "{shown:?}");
    assert_eq!(s.hash(), before);
}

/// Items 6 and 2: a count in words, a refusal in words, a typed path replacing the default and
/// checked as a profile's [driver] path is, the nearest type names, the SHA-256 computed into
/// the profile; a refused answer leaves nothing saved.
#[test]
fn answers_are_read_as_meant_and_the_driver_file_is_checked_at_the_prompt() {
    let s = Sim::new("a40x8");
    let before = s.hash();
    let saved = s.root().with_extension("answers.toml");
    let mut p = wizard(&s, &["--save-profile", saved.to_str().unwrap()]);
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ENTER);
    p.exp_string(&bytes("vGPU type for 8 × A40 0000:67:00.0 … 0000:e8:00.0"))
        .unwrap();
    key(&mut p, "A40-24");
    key(&mut p, ENTER);
    p.exp_string("did you mean A40-24Q or A40-24A?").unwrap();
    key(&mut p, "A40-24Q");
    key(&mut p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    key(&mut p, "lots");
    key(&mut p, ENTER);
    p.exp_string("\"lots\" is not a number: enter a number from 1 to 2")
        .unwrap();
    key(&mut p, "two");
    key(&mut p, ENTER);
    p.exp_string("GRID host driver").unwrap();
    key(&mut p, ENTER);
    let zip = "/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip";
    p.exp_string(&format!(
        "Path of the driver file (inside the host root) [{zip}]: "
    ))
    .unwrap();
    // What is typed replaces the default, and gets the profile's check of [driver] path.
    key(&mut p, "/etc/os-release");
    key(&mut p, ENTER);
    p.exp_string("/etc/os-release: expected the licensed .zip, or a .run, .deb or .rpm")
        .unwrap();
    key(&mut p, "/root/missing.zip");
    key(&mut p, ENTER);
    p.exp_string("/root/missing.zip does not exist under the host root")
        .unwrap();
    // Enter takes the default.
    key(&mut p, ENTER);
    p.exp_string("Compute the file's SHA-256").unwrap();
    key(&mut p, "y");
    p.exp_string(&format!("SHA-256 of {zip}: ")).unwrap();
    let hex = p.read_line().unwrap();
    let hex = hex.trim();
    use sha2::Digest;
    let want = hex::encode(sha2::Sha256::digest(
        std::fs::read(s.root().join(zip.trim_start_matches('/'))).unwrap(),
    ));
    assert_eq!(hex, want);
    p.exp_string("When the host needs its reboot").unwrap();
    // Nothing is saved while answers are still being given.
    assert!(!saved.exists());
    key(&mut p, DOWN);
    key(&mut p, DOWN);
    key(&mut p, ENTER);
    p.exp_string("Apply this plan?").unwrap();
    let text = std::fs::read_to_string(&saved).unwrap();
    assert!(text.contains(&format!("path = \"{zip}\"")), "{text}");
    assert!(text.contains(&format!("sha256 = \"{want}\"")), "{text}");
    assert!(text.contains("count = 2"), "{text}");
    key(&mut p, "n");
    let _ = exit_code_any(&mut p);
    assert_eq!(s.hash(), before);
    // The saved profile is one setup accepts as it is.
    let r = s.run(&["setup", "--profile", saved.to_str().unwrap(), "--dry-run"]);
    assert_eq!(r.code, 0, "{r:?}");

    // Cancelled at the path: no profile is written.
    let _ = std::fs::remove_file(&saved);
    let mut p = wizard(&s, &["--save-profile", saved.to_str().unwrap()]);
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ENTER);
    p.exp_string("vGPU type").unwrap();
    key(&mut p, "A40-24Q");
    key(&mut p, ENTER);
    p.exp_string("How many per GPU").unwrap();
    key(&mut p, ENTER);
    p.exp_string("GRID host driver").unwrap();
    key(&mut p, ENTER);
    p.exp_string("Path of the driver file").unwrap();
    key(&mut p, "/etc/os-release");
    key(&mut p, ENTER);
    p.exp_string("expected the licensed .zip").unwrap();
    key(&mut p, ESC);
    p.exp_string("Cancelled: nothing was changed.").unwrap();
    assert_eq!(exit_code_any(&mut p), Some(130));
    assert!(!saved.exists());
    assert_eq!(s.hash(), before);
}

/// Items 6 and 5: on a host already set up the wizard starts from what it holds (Enter through
/// every question keeps it); the type picker's rows fit 80 columns; NO_COLOR still marks the
/// cursor row; a wide terminal shows the rows whole.
#[test]
fn a_finished_host_starts_from_its_current_state_on_an_80_column_console() {
    let s = Sim::new("a40x8");
    let runs = s.setup_to_end(&repo().join("profiles/a40.toml"));
    assert_eq!(runs.last().unwrap().code, 0);
    let vgpus = s.live_vgpus();
    assert_eq!(vgpus.len(), 16);

    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    // The cursor row is marked without colour.
    p.exp_string(&bytes(
        "> [x] 0000:67:00.0  A40  48 GiB  vGPU: yes  now: 2 × A40-24Q",
    ))
    .unwrap();
    key(&mut p, ENTER);
    // On 80 columns the GPUs go on a line of their own above the picker's prompt.
    p.exp_string(&bytes(
        "vGPU type for 8 × A40 0000:67:00.0 … 0000:e8:00.0:\r\n",
    ))
    .unwrap();
    p.exp_string("vGPU type (from the driver's live list)")
        .unwrap();
    // The picker starts on the type the GPUs hold.
    let shown = p.exp_string("> A40-24Q").unwrap();
    let rest = p.exp_string("per GPU").unwrap();
    let picker = format!("{shown}> A40-24Q{rest}");
    let rows = lines(&picker);
    assert!(rows.len() > 5, "{rows:?}");
    for r in &rows {
        assert!(
            r.chars().count() < 80,
            "{} columns: {r:?}",
            r.chars().count()
        );
    }
    key(&mut p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    p.exp_string("[2]: ").unwrap();
    key(&mut p, ENTER);
    p.exp_string("When the host needs its reboot").unwrap();
    key(&mut p, ENTER);
    decline_save(&mut p);
    p.exp_string("Setup is complete.").unwrap();
    assert_eq!(exit_code(&mut p), 0);
    assert_eq!(s.live_vgpus(), vgpus, "the same vGPUs");

    // 200 columns: whole rows.
    let mut p = wizard_sized(&s, &[], Some(200));
    p.exp_string("GPUs for vGPU").unwrap();
    key(&mut p, ENTER);
    p.exp_string("from the driver's live list").unwrap();
    p.exp_string("Q: RTX virtual workstation (professional graphics)")
        .unwrap();
    key(&mut p, ESC);
    assert_eq!(exit_code_any(&mut p), Some(130));
}

/// Item 1: after the reboot the type is asked once for the GPUs picked, naming them.
#[test]
fn after_the_reboot_the_type_is_asked_once_for_the_gpus_picked() {
    let s = Sim::new("a40x8");
    let mut p = wizard(&s, &[]);
    p.exp_string("GPUs for vGPU").unwrap();
    p.exp_string("0000:e8:00.0").unwrap();
    // Leave out the first two GPUs.
    key(&mut p, SPACE);
    key(&mut p, DOWN);
    key(&mut p, SPACE);
    key(&mut p, ENTER);
    let six = "6 × A40 0000:6a:00.0, 0000:6b:00.0, 0000:e5:00.0, 0000:e6:00.0, 0000:e7:00.0, 0000:e8:00.0";
    p.exp_string(&bytes(&format!("vGPU type for {six}")))
        .unwrap();
    key(&mut p, "A40-24Q");
    key(&mut p, ENTER);
    p.exp_string("How many per GPU (1-2)").unwrap();
    key(&mut p, ENTER);
    p.exp_string("GRID host driver").unwrap();
    key(&mut p, ENTER);
    p.exp_string("Path").unwrap();
    key(&mut p, ENTER);
    p.exp_string("Compute the file's SHA-256").unwrap();
    key(&mut p, "n");
    p.exp_string("When the host needs its reboot").unwrap();
    key(&mut p, DOWN);
    key(&mut p, DOWN);
    key(&mut p, ENTER);
    decline_save(&mut p);
    p.exp_string("Apply this plan?").unwrap();
    key(&mut p, "y");
    let root = s.root().display().to_string();
    p.exp_string(&format!(
        "Reboot, then run: vgpuctl --root {root} --simulate a40x8 setup\r\n"
    ))
    .unwrap();
    assert_eq!(exit_code(&mut p), 3);

    assert_eq!(s.run(&["sim", "reboot"]).code, 0);
    let mut p = wizard(&s, &[]);
    p.exp_string("GPU(s) now, to pick the type").unwrap();
    key(&mut p, "y");
    p.exp_string(&bytes(&format!("vGPU type for {six}:\r\n")))
        .unwrap();
    p.exp_string("vGPU type (from the driver's live list)")
        .unwrap();
    key(&mut p, ENTER);
    let between = p.exp_string("Apply this plan?").unwrap();
    // Only the answer's report line names the type again; a second question would be another.
    assert_eq!(
        between.matches("vGPU type").count(),
        1,
        "asked again: {between:?}"
    );
    key(&mut p, "y");
    p.exp_string("Setup is complete.").unwrap();
    assert_eq!(exit_code(&mut p), 0);
    assert_eq!(s.live_vgpus().len(), 12);
}

/// Item 11: on a terminal a step that waits shows a spinner with what it waits for and the time.
#[test]
fn setup_on_a_terminal_shows_what_a_step_waits_for() {
    let s = Sim::new("a40x8-ready");
    // 32 VF groups 100 ms apart: seconds of waiting for each GPU's listings.
    assert_eq!(
        s.run(&["--sim-opt", "vf_group_ms=100", "sim", "info"]).code,
        0
    );
    let prof = repo().join("profiles/a40.toml");
    let mut p = wizard(&s, &["--profile", prof.to_str().unwrap(), "--yes"]);
    p.exp_string("[8/12] Enable SR-IOV on A40 0000:e8:00.0")
        .unwrap();
    p.exp_string("waiting for the VFs of 8 GPUs and their vGPU types: ")
        .unwrap();
    p.exp_string("Setup is complete.").unwrap();
    assert_eq!(exit_code(&mut p), 0);
}

/// `uninstall` asks once; Esc there cancels as at the wizard's prompts (it was ignored), and
/// Ctrl-C too: "Cancelled: nothing was changed.", exit 130, the host as it was.
#[test]
fn uninstall_prompt_cancels_on_esc_and_ctrl_c() {
    let s = Sim::new("a40x8-ready");
    let p = profile_file("[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n");
    let r = s.run(&["setup", "--profile", p.path().to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 0, "{r:?}");
    for (what, k) in [("Esc", ESC), ("Ctrl-C", "\x03")] {
        let hash = s.hash();
        let mut c = std::process::Command::new(bin());
        c.arg("--root")
            .arg(s.root())
            .arg("--simulate")
            .arg(&s.model)
            .arg("uninstall");
        c.env("TERM", "xterm").env("NO_COLOR", "1");
        let mut u = spawn_command(c, Some(60_000)).expect("spawn in a pty");
        u.exp_string("Uninstall?").unwrap();
        key(&mut u, k);
        u.exp_string("Cancelled: nothing was changed.").unwrap();
        assert_eq!(exit_code(&mut u), 130, "{what}");
        assert_eq!(
            s.hash(),
            hash,
            "{what}: a cancelled uninstall changed the host"
        );
    }
}
