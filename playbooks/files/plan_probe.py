"""Helpers shared by the read-only probes of the roles that deliver planned files.

Not run on its own: each role's tasks/probe.yml sends this file, then the role's files/probe.py,
as one `python3 -c` script. The imports below are the ones the helpers and the roles' main() use;
a role's probe.py imports only what it needs beyond these.
"""
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys


def _names(st):
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def _attributes(st, want):
    """Reasons why mode/owner/group differ from `want` (an entry with mode, owner, group)."""
    reasons = []
    if stat.S_IMODE(st.st_mode) != int(str(want["mode"]), 8):
        reasons.append("mode %04o, want %s" % (stat.S_IMODE(st.st_mode), want["mode"]))
    owner, group = _names(st)
    if owner != want.get("owner", "root"):
        reasons.append("owner %s, want %s" % (owner, want.get("owner", "root")))
    if group != want.get("group", "root"):
        reasons.append("group %s, want %s" % (group, want.get("group", "root")))
    return reasons


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def check_files(files):
    """{dest: [reasons]} for planned files whose content, mode, owner or group differ."""
    out = {}
    for want in files:
        dest = want["dest"]
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            out[dest] = ["missing"]
            continue
        if not stat.S_ISREG(st.st_mode):
            out[dest] = ["not a regular file"]
            continue
        reasons = [] if _sha256(dest) == want["sha256"] else ["content"]
        reasons += _attributes(st, want)
        if reasons:
            out[dest] = reasons
    return out


def check_dirs(dirs):
    """{path: [reasons]} for directories that are missing or have other mode, owner or group."""
    out = {}
    for want in dirs:
        try:
            st = os.stat(want["path"])
        except FileNotFoundError:
            out[want["path"]] = ["missing"]
            continue
        reasons = [] if stat.S_ISDIR(st.st_mode) else ["not a directory"]
        reasons += _attributes(st, want)
        if reasons:
            out[want["path"]] = reasons
    return out


def units(names, extra=()):
    """systemctl show for several units at once: {unit: {LoadState, UnitFileState, ActiveState, *extra}}."""
    if not names:
        return {}
    full = [n if "." in n else n + ".service" for n in names]
    properties = ",".join(["Id", "LoadState", "UnitFileState", "ActiveState", *extra])
    text = subprocess.run(
        ["systemctl", "show", "--property=" + properties, "--", *full],
        capture_output=True, text=True, check=False,
    ).stdout
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line) for block in text.split("\n\n")]
    blocks = [b for b in blocks if b]
    return {name: block for name, block in zip(names, blocks)}



def check_tree(root, owner, group, mode, limit=20):
    """Entries below `root` (not `root` itself) with another owner or group, or a mode with bits beyond
    `mode`: [{path, reason}] for the first `limit`, then one for `root` that counts the rest."""
    out, count = [], 0
    loose = ~int(mode, 8) & 0o7777
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            bits = stat.S_IMODE(st.st_mode)
            reasons = _attributes(st, {"mode": "%04o" % bits, "owner": owner, "group": group})
            if bits & loose:
                reasons.append("mode %04o, at most %s" % (bits, mode))
            if reasons:
                count += 1
                if len(out) < limit:
                    out.append({"path": path, "reason": "%s: %s" % (path, ", ".join(reasons))})
    if count > limit:
        out.append({"path": root, "reason": "%d more entries below %s like these" % (count - limit, root)})
    return out
