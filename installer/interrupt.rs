//! Ctrl-C while the wizard asks: a prompt reads keys in raw mode, so the terminal driver does
//! not turn Ctrl-C into SIGINT there; console raises SIGINT itself (after restoring the terminal
//! modes), and between prompts the terminal sends it. Either way the default action killed the
//! process with the cursor a picker had hidden and no word. While nothing has changed yet, the
//! handler shows the cursor, says so, and exits 130 (128 + SIGINT, what a shell reports).
//! Once a run starts changing the host, Ctrl-C is the default signal again: it stops the run
//! where it is, as before, and the next run continues from the record.

use std::sync::atomic::{AtomicU8, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// What the handler says: 0 nothing changed, 1 only SR-IOV was enabled (the wizard's own step).
static CHANGED: AtomicU8 = AtomicU8::new(0);

/// Show the cursor (a picker hides it) and begin a fresh line.
pub const RESTORE_TERMINAL: &str = "\x1b[?25h\r\n";

/// What a cancelled run leaves behind, in the words the message uses.
pub fn what_changed() -> &'static str {
    match CHANGED.load(Ordering::SeqCst) {
        0 => "nothing was changed",
        _ => "only SR-IOV was enabled (setup and the boot-time restore do that anyway); nothing else was changed",
    }
}

extern "C" fn on_sigint(_: nix::libc::c_int) {
    // Only async-signal-safe calls here: write(2) of static bytes and _exit(2).
    let msg: &[u8] = match CHANGED.load(Ordering::SeqCst) {
        0 => b"\x1b[?25h\r\nCancelled: nothing was changed.\r\n",
        _ => b"\x1b[?25h\r\nCancelled: only SR-IOV was enabled (setup and the boot-time restore do that anyway); nothing else was changed.\r\n",
    };
    let _ = nix::unistd::write(std::io::stderr(), msg);
    // SAFETY: _exit(2) is async-signal-safe; nothing is left to flush that matters here.
    unsafe { nix::libc::_exit(crate::exit::Exit::Cancelled as i32) };
}

fn set(handler: SigHandler) {
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler above makes only async-signal-safe calls.
    let _ = unsafe { signal::sigaction(Signal::SIGINT, &action) };
}

/// From here until [`changes_begin`], Ctrl-C cancels with the message and exit 130.
pub fn cancel_on_ctrl_c() {
    set(SigHandler::Handler(on_sigint));
}

/// The wizard enabled SR-IOV (so a cancel must not say nothing changed).
pub fn sriov_enabled() {
    CHANGED.store(1, Ordering::SeqCst);
}

/// The run starts changing the host: Ctrl-C stops it the default way again.
pub fn changes_begin() {
    set(SigHandler::SigDfl);
}
