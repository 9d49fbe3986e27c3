"""Read-only probe for the firewall role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, package, table, config, state_file, service, ruleset
(the planned file text), ssh_port, controller_address.
Reports planned files that differ, whether nftables is installed, whether the live table still is
what was loaded from the file, the unit state, and whether the planned ruleset admits SSH.
"""
# Sent after playbooks/files/plan_probe.py, as one script (see tasks/probe.yml): the imports,
# _attributes, _sha256, check_files, check_dirs and units used here come from there.
import ipaddress
import re


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
