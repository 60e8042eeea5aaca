use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::SetupArgs;
use crate::exit::{Exit, Failure};
use crate::host::Host;
use crate::profile::Profile;
use crate::profile_load::{load_located, Located};

use crate::setup::RESUME_PROFILE;

pub fn run(host: &Host, args: &SetupArgs) -> Result<Exit, Failure> {
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
            return run_wizard(host, args);
        }
    };
    let opts = crate::setup::Options {
        dry_run: args.dry_run,
        yes: args.yes,
        allow_unverified: args.allow_unverified,
        allow_remove: args.allow_remove,
        vf_timeout: Duration::from_secs(args.vf_timeout),
        profile_path,
        source,
    };
    crate::setup::run(host, &profile, &opts)
}

fn run_wizard(host: &Host, args: &SetupArgs) -> Result<Exit, Failure> {
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
    let profile = if resumed && st.reboot_boot_id.as_deref() == facts.boot_id.as_deref() {
        // Not rebooted yet: nothing to ask; setup says the reboot is pending.
        previous.unwrap()
    } else {
        crate::wizard::ask(host, &facts, previous.as_ref())?
    };
    if let Some(path) = &args.save_profile {
        crate::wizard::save(path, &profile, true)?;
    }
    let opts = crate::setup::Options {
        dry_run: args.dry_run,
        yes: args.yes,
        allow_unverified: args.allow_unverified,
        allow_remove: args.allow_remove,
        vf_timeout: Duration::from_secs(args.vf_timeout),
        profile_path: args
            .save_profile
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "FILE".into()),
        // The answers have no file to point into (a saved copy is written from them).
        source: Located {
            file: "the wizard's answers".into(),
            text: None,
        },
    };
    let result = crate::setup::run(host, &profile, &opts);
    if args.save_profile.is_none() && !args.dry_run && !resumed {
        let offer = dialoguer::Confirm::new()
            .with_prompt(
                "Save these answers as a profile, so the next host is one unattended command?",
            )
            .default(true)
            .interact()
            .unwrap_or(false);
        if offer {
            let path: String = dialoguer::Input::new()
                .with_prompt("Profile file")
                .default("vgpuctl-profile.toml".into())
                .interact_text()
                .map_err(|e| Failure::usage(format!("no answer: {e}")))?;
            crate::wizard::save(std::path::Path::new(&path), &profile, true)?;
        }
    }
    result
}
