use std::io::IsTerminal;
use std::time::Duration;

use std::path::Path;

use crate::cli::{Global, SetupArgs};
use crate::exit::{Exit, Failure};
use crate::host::Host;
use crate::opener::{next_command, real_path};
use crate::profile::Profile;
use crate::profile_load::{load_located, Located};

use crate::setup::RESUME_PROFILE;

pub fn run(host: &Host, args: &SetupArgs, global: &Global) -> Result<Exit, Failure> {
    let (profile, profile_path, source) = match (&args.profile, args.resume) {
        (Some(p), _) => {
            let (profile, source) = load_located(p)?;
            (profile, p.display().to_string(), source)
        }
        (None, true) => {
            let text = host.read(RESUME_PROFILE).map_err(|e| {
                Failure::usage(format!("--resume: no saved setup profile /{RESUME_PROFILE} ({e}); run setup --profile FILE"))
            })?;
            let file = format!("/{RESUME_PROFILE}");
            (
                Profile::parse(&text, &file).map_err(Failure::usage_from)?,
                file.clone(),
                Located::new(file, text),
            )
        }
        (None, false) => {
            if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
                return Err(Failure::usage(
                    "setup without --profile is an interactive wizard and needs a terminal; for an \
                     unattended run pass --profile FILE (`vgpuctl setup --help` shows one)",
                ));
            }
            return run_wizard(host, args, global);
        }
    };
    let next_command = if args.resume {
        next_command(global, &["setup", "--resume"])
    } else {
        let path = real_path(Path::new(&profile_path));
        next_command(global, &["setup", "--profile", &path, "--yes"])
    };
    let opts = crate::setup::Options {
        dry_run: args.dry_run,
        yes: args.yes,
        allow_unverified: args.allow_unverified,
        allow_remove: args.allow_remove,
        vf_timeout: Duration::from_secs(args.vf_timeout),
        profile_path,
        source,
        next_command,
    };
    crate::setup::run(host, &profile, &opts)
}

fn run_wizard(host: &Host, args: &SetupArgs, global: &Global) -> Result<Exit, Failure> {
    // Until the plan is confirmed, Ctrl-C cancels with a word and the cursor back.
    crate::interrupt::cancel_on_ctrl_c();
    let facts = crate::facts::observe(host);
    let st = crate::state::load(host)?;
    // After the reboot checkpoint, ask only what is still open.
    let previous = if st.reboot_boot_id.is_some() && !st.finished {
        host.read(RESUME_PROFILE)
            .ok()
            .and_then(|t| Profile::parse(&t, RESUME_PROFILE).ok())
    } else {
        None
    };
    let resumed = previous.is_some();
    let pending = resumed && st.reboot_boot_id.as_deref() == facts.boot_id.as_deref();
    let profile = if pending {
        // Not rebooted yet: nothing to ask; setup says the reboot is pending.
        previous.unwrap()
    } else {
        crate::wizard::ask(host, &facts, previous.as_ref(), args.allow_unverified)?
    };
    let mut opts = crate::setup::Options {
        dry_run: args.dry_run,
        yes: args.yes,
        allow_unverified: args.allow_unverified,
        allow_remove: args.allow_remove,
        vf_timeout: Duration::from_secs(args.vf_timeout),
        profile_path: "the wizard's answers".into(),
        // The answers have no file to point into (a saved copy is written from them).
        source: Located {
            file: "the wizard's answers".into(),
            text: None,
        },
        // The wizard again: after the reboot it asks only what is still open.
        next_command: next_command(global, &["setup"]),
    };
    if !pending {
        // Every check setup makes before its plan, so the profile saved below is one it accepts
        // and a refusal leaves no file behind.
        crate::setup::preflight(host, &profile, &opts)?;
    }
    // Saved once, after the checks.
    let mut saved = args.save_profile.as_ref().map(|p| real_path(p));
    if saved.is_none() && !args.dry_run && !resumed {
        let offer = crate::wizard::prompt::confirm(
            "Save these answers as a profile, so the next host is one unattended command?",
            true,
        )?;
        if offer {
            saved = Some(crate::wizard::prompt::line(
                "Profile file",
                Some("vgpuctl-profile.toml"),
                false,
                |p| Ok::<_, String>(real_path(Path::new(p.trim()))),
            )?);
        }
    }
    if let Some(path) = &saved {
        crate::wizard::save(Path::new(path), &profile, true)?;
        opts.profile_path = path.clone();
        opts.next_command = format!(
            "{}
  (or unattended, from the saved profile: {})",
            opts.next_command,
            next_command(global, &["setup", "--profile", path, "--yes"])
        );
    }
    let result = crate::setup::run(host, &profile, &opts);
    if matches!(result, Ok(Exit::Ok)) && !args.dry_run {
        let root = (global.root != Path::new("/")).then(|| real_path(&global.root));
        crate::outln!(
            "\n{}",
            crate::wizard::next::after_setup(
                root.as_deref(),
                global.simulate.as_deref(),
                crate::setup::paths::RESTORE_UNIT
            )
        );
    }
    result
}
