#!/usr/bin/env python3
"""Print, in one-line sources.list format, the Debian sources the guest should use.

The CI network reaches only the Debian mirrors this host is configured with, so the guest is
bootstrapped from exactly those: every entry of /etc/apt/sources.list(.d) (one-line `.list` and
deb822 `.sources`) whose suite is the release itself, its -updates or its -security suite.
Backports and third-party repositories are left out (the guest kernel must be the release's).
Usage: apt-sources.py CODENAME
"""
import glob
import os
import sys


def one_line_entries(text):
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        opts = []
        if words and words[0].startswith("["):
            while words and not words[0].endswith("]"):
                opts.append(words.pop(0))
            opts.append(words.pop(0))
        if len(words) >= 2:
            yield " ".join(opts), words[0], words[1], words[2:]


def deb822_entries(text):
    for stanza in text.split("\n\n"):
        fields = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += " " + raw.strip()
            elif ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        opts = ""
        if "signed-by" in fields and not fields["signed-by"].startswith("-"):
            opts = "[signed-by=%s]" % fields["signed-by"].split()[0]
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                yield opts, uri, suite, fields.get("components", "main").split()


def main():
    codename = sys.argv[1]
    wanted = {codename, codename + "-updates", codename + "-security"}
    entries = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for path in files:
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if path.endswith(".sources"):
            entries += deb822_entries(text)
        elif path.endswith(".list") or path == "/etc/apt/sources.list":
            entries += one_line_entries(text)
    seen = set()
    for opts, uri, suite, _components in entries:
        if suite not in wanted or (uri, suite) in seen:
            continue
        seen.add((uri, suite))
        print(" ".join(w for w in ("deb", opts, uri, suite, "main") if w))
    if not seen:
        sys.exit("apt-sources.py: no %s Debian source in /etc/apt/sources.list(.d): add one" % codename)


if __name__ == "__main__":
    main()
