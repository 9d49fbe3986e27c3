"""Read-only probe for the os_hardening role: what differs from the wanted state, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, sysctl (drop-in text), swap, paths, setuid, services.
Nothing is changed here; the role fixes only what this reports.
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


def sysctl_drift(text):
    """Compare the drop-in's keys with the running kernel.

    Returns the keys to write (present, writable, different), the keys that differ but are read-only
    here (kernel.*, vm.*, fs.* in a container sharing the kernel) and required keys missing.
    """
    drift, readonly, missing = [], [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        optional = line.startswith("-")
        key, _, value = line.lstrip("-").partition("=")
        key, value = key.strip(), " ".join(value.split())
        # sysctl.d(5): with a slash as first separator, dots are part of the names.
        path = "/proc/sys/" + (key if "/" in key.split(".")[0] else key.replace(".", "/"))
        try:
            with open(path, encoding="utf-8") as handle:
                current = " ".join(handle.read().split())
        except FileNotFoundError:
            if not optional:
                missing.append(key)
            continue
        except OSError:
            readonly.append({"key": key, "current": None, "desired": value})
            continue
        if current == value:
            continue
        entry = {"key": key, "current": current, "desired": value}
        (drift if os.access(path, os.W_OK) else readonly).append(entry)
    return drift, readonly, missing


def swap_state():
    with open("/proc/swaps", encoding="utf-8") as handle:
        active = [line.split()[0] for line in handle.read().splitlines()[1:] if line.strip()]
    fstab = False
    try:
        with open("/etc/fstab", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if fields and not fields[0].startswith("#") and len(fields) >= 3 and fields[2] == "swap":
                    fstab = True
    except FileNotFoundError:
        pass
    return active, fstab


def sensitive_paths(paths):
    out = []
    for want in paths:
        try:
            st = os.stat(want["path"])
        except FileNotFoundError:
            continue
        reasons = _attributes(st, want)
        if reasons:
            out.append(dict(want, reasons=reasons))
    return out


def setuid(paths):
    out, seen = [], set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            out.append({"path": real, "mode": "%04o" % stat.S_IMODE(st.st_mode)})
    return out


def services(names):
    out = []
    for name, state in units(names).items():
        if state.get("LoadState") != "loaded":
            continue
        enabled = state.get("UnitFileState", "") in ("enabled", "enabled-runtime", "linked", "linked-runtime", "alias")
        active = state.get("ActiveState", "") in ("active", "activating", "reloading")
        if enabled or active:
            out.append({"name": name, "enabled": enabled, "active": active})
    return out


def main():
    request = json.loads(sys.argv[1])
    result = {
        "files": check_files(request.get("files", [])),
        "dirs": check_dirs(request.get("dirs", [])),
        "sysctl_drift": [], "sysctl_readonly": [], "sysctl_missing": [],
        "swap_active": [], "swap_in_fstab": False,
    }
    if request.get("sysctl") is not None:
        result["sysctl_drift"], result["sysctl_readonly"], result["sysctl_missing"] = sysctl_drift(request["sysctl"])
    if request.get("swap"):
        result["swap_active"], result["swap_in_fstab"] = swap_state()
    result["paths"] = sensitive_paths(request.get("paths", []))
    result["setuid"] = setuid(request.get("setuid", []))
    result["services"] = services(request.get("services", []))
    print(json.dumps(result))


main()
