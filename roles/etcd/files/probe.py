"""Read-only probe for the etcd role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, user, group, home, shell, units, data_dir.
Reports planned files and directories that differ (reasons only, never contents or hashes),
the etcd account, the state of the units and whether the data directory holds a member.
"""
# Sent after playbooks/files/plan_probe.py, as one script (see tasks/probe.yml): the imports,
# _attributes, _sha256, check_files, check_dirs and units used here come from there.


def account(user, group, home, shell):
    """Reasons the etcd user or group differ (missing, home, shell, primary group)."""
    reasons = []
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        reasons.append("group %s missing" % group)
        gid = None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return reasons + ["user %s missing" % user]
    if entry.pw_dir != home:
        reasons.append("home %s, want %s" % (entry.pw_dir, home))
    if entry.pw_shell != shell:
        reasons.append("shell %s, want %s" % (entry.pw_shell, shell))
    if gid is not None and entry.pw_gid != gid:
        reasons.append("primary group %s, want %s" % (entry.pw_gid, group))
    return reasons


def main():
    request = json.loads(sys.argv[1])
    result = {"errors": []}
    try:
        result["files"] = check_files(request.get("files", []))
        result["dirs"] = check_dirs(request.get("dirs", []))
        result["account"] = account(request["user"], request["group"], request["home"], request["shell"])
        result["units"] = units(request.get("units", []), extra=["NeedDaemonReload"])
        result["member"] = os.path.isdir(os.path.join(request["data_dir"], "member"))
    except Exception as exc:  # reported by the next task: this probe's own output is hidden (no_log)
        result["errors"].append("%s: %s" % (type(exc).__name__, exc))
    print(json.dumps(result))


main()
