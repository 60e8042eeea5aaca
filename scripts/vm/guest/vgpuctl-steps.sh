# shellcheck shell=bash disable=SC2034  # the variables are used by vmtest-report
# ===== VGPUCTL CONTRACT (guest side) ========================================================
# The only place in the guest that calls vgpuctl. Sourced by vmtest-report. The host side's
# counterpart is the "VGPUCTL CONTRACT" block in scripts/vm-test (which binary is installed).
#
# /opt/vgpuctl/vgpuctl is where the harness puts the release binary (or, while the real verbs
# do not exist yet, scripts/vm/placeholder-vgpuctl), as an operator would after downloading it.
VMTEST_VGPUCTL=/opt/vgpuctl/vgpuctl

# Boot 1 only, after rc-local.service ran the legacy lines: the operator's migration.
# Expected effects: /etc/vgpuctl/vgpus.toml pins the rc.local devices, the rc.local lines are
# commented out, /usr/local/sbin/vgpuctl exists and vgpuctl-restore.service is enabled.
vmtest_migrate() {
    "$VMTEST_VGPUCTL" import </dev/null
}
# Every boot, for the record only (not judged: the verdict reads sysfs directly).
vmtest_status() {
    "$VMTEST_INSTALLED" status --json </dev/null
}
# Every boot the restore itself is run by systemd alone (vgpuctl-restore.service); the harness
# only reads its results: the unit's state, /run/vgpuctl/restore.json and sysfs.
VMTEST_RESTORE_JSON=/run/vgpuctl/restore.json
# The pins import writes (vgpus.toml; releases before kept them in profile.toml).
VMTEST_PROFILE=/etc/vgpuctl/vgpus.toml
VMTEST_INSTALLED=/usr/local/sbin/vgpuctl
# ============================================================================================
