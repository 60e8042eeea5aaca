use std::io::IsTerminal;
use std::time::Duration;

use crate::cli::SetupArgs;
use crate::exit::{Exit, Failure};
use crate::host::Host;
use crate::profile::Profile;

/// Where `setup` keeps the profile of a run that continues after an automatic reboot.
pub const RESUME_PROFILE: &str = "etc/vgpuctl/setup-profile.toml";

pub fn load_profile(path: &std::path::Path) -> Result<Profile, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read profile {}: {e}", path.display())))?;
    Profile::parse(&text, &path.display().to_string()).map_err(Failure::usage_from)
}

pub fn run(host: &Host, args: &SetupArgs) -> Result<Exit, Failure> {
    let (profile, profile_path) = match (&args.profile, args.resume) {
        (Some(p), _) => (load_profile(p)?, p.display().to_string()),
        (None, true) => {
            let text = host.read(RESUME_PROFILE).map_err(|e| {
                Failure::usage(format!("--resume: no saved setup profile /{RESUME_PROFILE} ({e}); run setup --profile FILE"))
            })?;
            (
                Profile::parse(&text, RESUME_PROFILE).map_err(Failure::usage_from)?,
                format!("/{RESUME_PROFILE}"),
            )
        }
        (None, false) => {
            if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
                return Err(Failure::usage(
                    "setup without --profile is an interactive wizard and needs a terminal; for an \
                     unattended run pass --profile FILE (see profiles/a40.toml)",
                ));
            }
            return Err(Failure::usage(
                "the interactive wizard is not in this build yet: pass --profile FILE",
            ));
        }
    };
    let opts = crate::setup::Options {
        dry_run: args.dry_run,
        yes: args.yes,
        resume: args.resume,
        allow_unverified: args.allow_unverified,
        vf_timeout: Duration::from_secs(args.vf_timeout),
        profile_path,
    };
    crate::setup::run(host, &profile, &opts)
}
