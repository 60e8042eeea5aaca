#!/usr/bin/env python3
"""Tests for check-report.py on real reports (testdata/ holds the second serial port of real
runs: a passing positive run and a negative run with the unit disabled), and on damaged copies
of them: a boot cut short, a device gone, a failed restore. Run: python3 -m unittest discover -s scripts/vm
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "check-report.py")
UUIDS = ["7524a5ec-05f5-49c6-8154-b05df8aba739", "ee281a9f-c0cf-4e47-aea5-5f69e61d2a7d"]


def fixture(name):
    with open(os.path.join(HERE, "testdata", name), encoding="utf-8") as f:
        return f.read()


def judge(text, boots):
    with tempfile.NamedTemporaryFile("w", suffix=".log", delete=False) as f:
        f.write(text)
    try:
        args = [sys.executable, CHECK, f.name, "--boots", str(boots)]
        for u in UUIDS:
            args += ["--uuid", u]
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
    finally:
        os.unlink(f.name)
    return proc.returncode, proc.stdout


def closing_line(out):
    return out.strip().splitlines()[-1]


class CheckReport(unittest.TestCase):
    def test_real_positive_run_passes(self):
        rc, out = judge(fixture("positive-report.log"), 3)
        self.assertEqual(closing_line(out), "boots: 3 passed, 0 failed", out)
        self.assertEqual(rc, 0)

    def test_real_negative_run_fails_on_the_second_boot(self):
        rc, out = judge(fixture("negative-report.log"), 2)
        self.assertEqual(closing_line(out), "boots: 1 passed, 1 failed", out)
        self.assertEqual(rc, 1)
        self.assertIn("mdev %s absent" % UUIDS[0], out)
        self.assertIn("ActiveState=inactive", out)

    def test_missing_boot_fails(self):
        text = fixture("positive-report.log")
        cut = text[: text.index("VMTEST begin boot=3")]
        rc, out = judge(cut, 3)
        self.assertIn("boot 3: FAIL: never reported", out)
        self.assertEqual(closing_line(out), "boots: 2 passed, 1 failed")
        self.assertEqual(rc, 1)

    def test_report_cut_short_fails(self):
        text = fixture("positive-report.log")
        cut = text[: text.index("VMTEST end boot=3")]
        rc, out = judge(cut, 3)
        self.assertIn("boot 3: FAIL: report cut short", out)
        self.assertEqual(rc, 1)

    def test_device_gone_on_a_later_boot_fails(self):
        lines = fixture("positive-report.log").splitlines(keepends=True)
        start = lines.index("VMTEST begin boot=2 mode=positive planned=3 kernel=6.1.0-56-amd64\n")
        for i in range(start, len(lines)):
            if lines[i].startswith("VMTEST mdev " + UUIDS[1]):
                del lines[i]
                break
        rc, out = judge("".join(lines), 3)
        self.assertIn("boot 2: FAIL: mdev %s absent" % UUIDS[1], out)
        self.assertEqual(rc, 1)

    def test_failed_restore_state_fails(self):
        doc = {"devices": [{"uuid": UUIDS[0], "state": "created", "reason": "", "ms": 3},
                           {"uuid": UUIDS[1], "state": "failed", "reason": "no parent", "ms": 30000}]}
        bad = "VMTEST restore-json " + base64.b64encode(json.dumps(doc).encode()).decode()
        out_lines = []
        seen = 0
        for line in fixture("positive-report.log").splitlines():
            if line.startswith("VMTEST restore-json ") and line != "VMTEST restore-json absent":
                seen += 1
                if seen == 2:  # boot 3's
                    line = bad
            out_lines.append(line)
        rc, out = judge("\n".join(out_lines) + "\n", 3)
        self.assertIn("boot 3: FAIL: restore.json: %s state failed" % UUIDS[1], out)
        self.assertEqual(rc, 1)

    def test_legacy_line_left_active_fails(self):
        text = fixture("positive-report.log").replace("VMTEST rclocal active=0", "VMTEST rclocal active=1", 1)
        rc, out = judge(text, 3)
        self.assertIn("boot 1: FAIL: 1 legacy line(s) still active", out)
        self.assertEqual(rc, 1)


if __name__ == "__main__":
    unittest.main()
