"""Read-only probe for the os_hardening role: what differs from the wanted state, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, sysctl (drop-in text), swap, paths, setuid, services,
motd_dir.
Nothing is changed here; the role fixes only what this reports.
"""
# Sent after playbooks/files/plan_probe.py, as one script (see tasks/probe.yml): the imports,
# _attributes, _sha256, check_files, check_dirs and units used here come from there.


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


# Where systemd-sysctl reads drop-ins at boot: a name in an earlier directory hides the same name in
# a later one, and all are read in name order, so a later name wins. procps reads /etc/sysctl.conf last.
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")


def _assignments(lines):
    """(line number, key with dots, value) of each assignment."""
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if line and line[0] not in "#;" and "=" in line:
            key, _, value = line.lstrip("-").partition("=")
            yield number, key.strip().replace("/", "."), " ".join(value.split())


def boot_overrides(text, own):
    """Lines that set a planned key to another value and are read after the drop-in `own` at boot."""
    planned = {key: value for _, key, value in _assignments(text.splitlines())}
    chosen = {}
    for directory in SYSCTL_DIRS:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        for name in names:
            if name.endswith(".conf"):
                chosen.setdefault(name, os.path.join(directory, name))
    order = [chosen[name] for name in sorted(chosen)]
    if os.path.isfile("/etc/sysctl.conf"):
        order.append("/etc/sysctl.conf")
    seen, after, out = set(), False, []
    for path in order:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        if path == own:
            after = True
            continue
        if not after and path != "/etc/sysctl.conf":
            continue
        with open(real, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
        for number, key, value in _assignments(lines):
            if key in planned and value != planned[key]:
                out.append({"path": real, "setting": key, "line": number,
                            "reason": "%s:%d sets %s = %s at boot, after the planned %s" % (real, number, key, value, planned[key])})
    return out


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
    result["sysctl_overrides"] = []
    if request.get("sysctl") is not None:
        result["sysctl_drift"], result["sysctl_readonly"], result["sysctl_missing"] = sysctl_drift(request["sysctl"])
        result["sysctl_overrides"] = boot_overrides(request["sysctl"], request["sysctl_dropin"])
    if request.get("swap"):
        result["swap_active"], result["swap_in_fstab"] = swap_state()
    result["paths"] = sensitive_paths(request.get("paths", []))
    result["setuid"] = setuid(request.get("setuid", []))
    result["services"] = services(request.get("services", []))
    result["motd_dir"] = bool(request.get("motd_dir")) and os.path.lexists(request["motd_dir"])
    print(json.dumps(result))


main()
