"""Read-only probe for the firewall role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, package, table, config, state_file, service, ruleset
(the planned file text), ssh_port, controller_address.
Reports planned files that differ, whether nftables is installed, whether the live table still is
what was loaded from the file, the unit state, and whether the planned ruleset admits SSH.
"""
import grp
import hashlib
import ipaddress
import json
import os
import pwd
import re
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
def installed(package):
    run = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", package],
                         capture_output=True, text=True, check=False)
    return run.returncode == 0 and run.stdout.strip() == "installed"


def live_state(table, config, state_file):
    """Whether the live table is the one recorded when the file was last loaded.

    The state file holds two lines written at load time: sha256 of the file, sha256 of
    `nft list table`. A missing table, a changed table or a file loaded by nobody all differ.
    """
    try:
        run = subprocess.run(["nft", "list", "table", *table.split()], capture_output=True, check=False)
    except FileNotFoundError:
        return {"differs": True, "reason": "nft is not installed"}
    if run.returncode != 0:
        return {"differs": True, "reason": "table %s is not loaded" % table}
    live = hashlib.sha256(run.stdout).hexdigest()
    try:
        with open(state_file, encoding="utf-8") as handle:
            recorded = [line.split()[0] for line in handle if line.strip()]
    except FileNotFoundError:
        return {"differs": True, "reason": "no record of a load from %s" % config}
    try:
        on_disk = _sha256(config)
    except FileNotFoundError:
        on_disk = None
    if len(recorded) != 2 or recorded[0] != on_disk:
        return {"differs": True, "reason": "%s changed since it was loaded" % config}
    if recorded[1] != live:
        return {"differs": True, "reason": "live table %s was changed after the load" % table}
    return {"differs": False, "reason": ""}


def ssh_admitted(ruleset, port, controller):
    """Whether an accept rule for the SSH port exists (and admits the controller, when given)."""
    pattern = re.compile(r"^\s*(ip6?)\s+saddr\s+\{([^}]*)\}\s+tcp\s+dport\s+%d\s+accept\b" % int(port))
    sources = []
    for line in ruleset.splitlines():
        match = pattern.match(line)
        if match:
            sources += [s.strip() for s in match.group(2).split(",") if s.strip()]
    established = any(re.match(r"^\s*ct\s+state\s+established,related\s+accept\b", line) for line in ruleset.splitlines())
    result = {"rule": bool(sources), "established": established, "controller": None}
    if controller:
        address = ipaddress.ip_address(controller)
        result["controller"] = any(
            address.version == net.version and address in net
            for net in (ipaddress.ip_network(s, strict=False) for s in sources)
        )
    return result


def main():
    request = json.loads(sys.argv[1])
    state = units([request["service"]]).get(request["service"], {})
    print(json.dumps({
        "files": check_files(request.get("files", [])),
        "dirs": check_dirs(request.get("dirs", [])),
        "installed": installed(request["package"]),
        "live": live_state(request["table"], request["config"], request["state_file"]),
        "service_enabled": state.get("UnitFileState") == "enabled",
        "ssh": ssh_admitted(request.get("ruleset", ""), request["ssh_port"], request.get("controller_address")),
    }))


main()
