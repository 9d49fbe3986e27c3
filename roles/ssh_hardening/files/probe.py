"""Read-only probe for the ssh_hardening role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, admin_user, main_config, dropin_dir.
Reports planned files that differ, whether the admin can still log in with a key, and whether
the main sshd_config reads the drop-in directory before its own settings.
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


def units(names):
    """systemctl show for several units at once: {unit: {LoadState, UnitFileState, ActiveState}}."""
    if not names:
        return {}
    full = [n if "." in n else n + ".service" for n in names]
    text = subprocess.run(
        ["systemctl", "show", "--property=Id,LoadState,UnitFileState,ActiveState", "--", *full],
        capture_output=True, text=True, check=False,
    ).stdout
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line) for block in text.split("\n\n")]
    blocks = [b for b in blocks if b]
    return {name: block for name, block in zip(names, blocks)}


def admin_keys(user):
    """Number of key lines in the admin's authorized_keys (0 when the user or file is missing)."""
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        return {"user_exists": False, "path": None, "keys": 0}
    path = os.path.join(home, ".ssh", "authorized_keys")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            keys = sum(1 for line in handle if line.strip() and not line.lstrip().startswith("#"))
    except FileNotFoundError:
        keys = 0
    return {"user_exists": True, "path": path, "keys": keys}


def include_state(main_config, dropin_dir):
    """Whether the main config includes <dropin_dir>/*.conf, and before any other directive.

    sshd keeps the first value it reads for most options, so the drop-in must come first.
    """
    wanted = {os.path.join(dropin_dir, "*.conf"), os.path.relpath(os.path.join(dropin_dir, "*.conf"), "/etc/ssh")}
    first, present = True, False
    try:
        with open(main_config, encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                words = raw.split()
                if not words or words[0].startswith("#"):
                    continue
                if words[0].lower() == "include" and wanted & set(words[1:]):
                    present = True
                    break
                first = False
    except FileNotFoundError:
        return {"present": False, "first": False}
    return {"present": present, "first": present and first}


def main():
    request = json.loads(sys.argv[1])
    print(json.dumps({
        "files": check_files(request.get("files", [])),
        "dirs": check_dirs(request.get("dirs", [])),
        "admin": admin_keys(request["admin_user"]),
        "include": include_state(request["main_config"], request["dropin_dir"]),
    }))


main()
