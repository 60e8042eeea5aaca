//! The files and units setup owns on a host: one place for their paths, read by observe and
//! written by the plans (kept apart so that observe, planner and prereboot need not import
//! each other).

pub const RESTORE_UNIT: &str = "vgpuctl-restore.service";
pub const RESUME_UNIT: &str = "vgpuctl-resume.service";
pub const UNIT_DIR: &str = "etc/systemd/system";
pub const WANTS_DIR: &str = "etc/systemd/system/multi-user.target.wants";
pub const BINARY: &str = "/usr/local/sbin/vgpuctl";
pub const RESTORE_UNIT_TEXT: &str = include_str!("../../units/vgpuctl-restore.service");
pub const RESUME_UNIT_TEXT: &str = include_str!("../../units/vgpuctl-resume.service");
/// The nouveau blacklist setup writes.
pub const NOUVEAU_CONF: &str = "/etc/modprobe.d/vgpuctl-blacklist-nouveau.conf";
