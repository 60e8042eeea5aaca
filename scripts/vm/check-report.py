#!/usr/bin/env python3
"""Judge the VM boot test's report: the "VMTEST ..." lines the guest wrote on its second serial
port (scripts/vm/guest/vmtest-report), one block per boot.

Boot 1 is the migration: `vgpuctl import` succeeded, the profile exists, no legacy line is left
active in /etc/rc.local and the restore unit is enabled. Every later boot must have its devices
from the unit alone: the unit ran and succeeded, every saved UUID is present with its type,
restore.json lists each of them as created or present, and the PF has all its VFs.
A planned boot that never reported counts as failed.

Prints one line per boot, then `boots: N passed, M failed`; exits 1 if anything failed.
"""
import argparse
import base64
import json
import re
import sys


def parse(path):
    boots = []
    cur = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\r\n").replace("\r", "")
            idx = line.find("VMTEST ")
            if idx < 0:
                continue
            kind, _, rest = line[idx + 7:].partition(" ")
            if kind == "begin":
                cur = {"header": dict(kv.split("=", 1) for kv in rest.split() if "=" in kv),
                       "mdev": {}, "logs": [], "ended": False}
                boots.append(cur)
            elif cur is None:
                continue
            elif kind == "end":
                cur["ended"] = True
            elif kind == "unit":
                cur["unit"] = dict(kv.split("=", 1) for kv in rest.split() if "=" in kv)
            elif kind == "mdev":
                uuid, _, typ = rest.partition(" type=")
                cur["mdev"][uuid.lower()] = typ
            elif kind == "pf":
                cur["pf"] = dict(kv.split("=", 1) for kv in rest.split()[1:] if "=" in kv)
            elif kind == "rclocal":
                cur["rclocal_active"] = rest.split("=", 1)[-1]
            elif kind == "profile":
                cur["profile"] = rest
            elif kind == "installed":
                cur["installed"] = rest
            elif kind == "import":
                if rest.startswith("rc="):
                    cur["import_rc"] = rest[3:]
            elif kind == "restore-json":
                cur["restore_json"] = rest
            if kind in ("import-log", "status", "journal", "negative", "dmesg", "timing"):
                cur["logs"].append(kind + ": " + rest)
    return boots


def check_boot(n, boot, uuids, typ):
    """Return the list of problems with one boot (empty when it passed)."""
    bad = []
    if not boot["ended"]:
        bad.append("report cut short (no 'end' line)")
    unit = boot.get("unit", {})
    pf = boot.get("pf", {})
    if n == 1:
        if boot.get("import_rc") != "0":
            bad.append("vgpuctl import exited %s" % boot.get("import_rc", "(not run)"))
        if boot.get("profile") != "present":
            bad.append("/etc/vgpuctl/vgpus.toml (the pins) absent after import")
        if boot.get("installed") != "present":
            bad.append("/usr/local/sbin/vgpuctl absent after import")
        if unit.get("UnitFileState") != "enabled" and boot["header"].get("mode") != "negative":
            bad.append("vgpuctl-restore.service is %s after import, not enabled"
                       % unit.get("UnitFileState", "?"))
    else:
        if unit.get("ActiveState") != "active" or unit.get("Result") != "success" \
                or unit.get("ExecMainStatus") != "0":
            bad.append("vgpuctl-restore.service ActiveState=%s Result=%s ExecMainStatus=%s"
                       % (unit.get("ActiveState"), unit.get("Result"), unit.get("ExecMainStatus")))
        for uuid in uuids:
            got = boot["mdev"].get(uuid)
            if got is None:
                bad.append("mdev %s absent" % uuid)
            elif got != typ:
                bad.append("mdev %s has type %s, not %s" % (uuid, got, typ))
        if pf.get("numvfs") in (None, "absent", "0") or pf.get("numvfs") != pf.get("totalvfs"):
            bad.append("PF sriov_numvfs=%s sriov_totalvfs=%s (driver %s)"
                       % (pf.get("numvfs"), pf.get("totalvfs"), pf.get("driver")))
        raw = boot.get("restore_json", "absent")
        if raw == "absent":
            bad.append("/run/vgpuctl/restore.json absent")
        else:
            try:
                doc = json.loads(base64.b64decode(raw))
                states = {str(d.get("uuid", "")).lower(): d.get("state") for d in doc["devices"]}
            except (ValueError, KeyError, TypeError) as e:
                bad.append("restore.json unreadable: %s" % e)
            else:
                for uuid in uuids:
                    if states.get(uuid) not in ("created", "present"):
                        bad.append("restore.json: %s state %s" % (uuid, states.get(uuid)))
    if boot.get("rclocal_active", "0") != "0":
        bad.append("%s legacy line(s) still active in /etc/rc.local" % boot["rclocal_active"])
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--boots", type=int, required=True, help="planned number of boots")
    ap.add_argument("--uuid", action="append", default=[], help="a saved mdev UUID (repeat)")
    ap.add_argument("--type", default="mtty-2", help="the saved devices' mdev type")
    ap.add_argument("--verbose", action="store_true", help="print the guest's logs of each boot")
    args = ap.parse_args()
    uuids = [u.lower() for u in args.uuid]

    boots = parse(args.report)
    passed = failed = 0
    for n in range(1, args.boots + 1):
        boot = boots[n - 1] if n <= len(boots) else None
        if boot is None:
            print("boot %d: FAIL: never reported (see the console log)" % n)
            failed += 1
            continue
        problems = check_boot(n, boot, uuids, args.type)
        mdevs = ",".join("%s=%s" % (u[:8], t) for u, t in sorted(boot["mdev"].items())) or "none"
        vfs = "%s/%s" % (boot.get("pf", {}).get("numvfs"), boot.get("pf", {}).get("totalvfs"))
        if problems:
            failed += 1
            print("boot %d: FAIL: %s" % (n, "; ".join(problems)))
        else:
            passed += 1
            print("boot %d: ok (mdevs %s, VFs %s, unit %s)"
                  % (n, mdevs, vfs, boot.get("unit", {}).get("Result", "?")))
        if problems or args.verbose:
            for line in boot["logs"]:
                print("    " + line)
    if len(boots) > args.boots:
        print("note: %d boots reported, %d planned" % (len(boots), args.boots))
    print("boots: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
