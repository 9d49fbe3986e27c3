"""Read-only probe for the etcd role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, user, group, home, shell, units, data_dir,
binaries (installed etcd binaries, with their sha256), tls (how to ask the local member for /version).
Reports planned files and directories that differ (reasons only, never contents or hashes),
the etcd account, the state of the units, whether the data directory holds a member, which binaries
differ, and the versions the running member reports (None when it does not answer).
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


def member_version(request):
    """The running member's /version ({"etcdserver", "etcdcluster"}) over mTLS, or None when it does not answer."""
    import ssl
    import urllib.request

    tls = request.get("tls")
    if not tls:
        return None
    try:
        context = ssl.create_default_context(cafile=tls["ca"])
        context.check_hostname = False  # the member is asked on 127.0.0.1; its CA is pinned
        context.load_cert_chain(tls["cert"], tls["key"])
        with urllib.request.urlopen(tls["url"], context=context, timeout=3) as answer:
            return json.loads(answer.read().decode())
    except (OSError, ValueError):
        return None


def health(unit, argv, lines):
    """Whether the member runs and answers its health check over mutual TLS; if not, why (log tail)."""
    state = units([unit], extra=["SubState", "Result", "NRestarts"]).get(unit, {})
    reason = ""
    if state.get("ActiveState") != "active":
        reason = "%s is %s (%s, result %s, %s automatic restarts)" % (
            unit, state.get("ActiveState"), state.get("SubState"), state.get("Result"), state.get("NRestarts", "0"))
    else:
        try:
            run = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False,
                                 env=dict(os.environ, ETCDCTL_API="3"))
            if run.returncode != 0:
                reason = "%s does not answer its health check: %s" % (
                    unit, ((run.stderr or run.stdout).strip().splitlines() or ["no output"])[-1][:200])
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = "%s does not answer its health check: %s" % (unit, exc)
    if not reason:
        return {"ok": True, "reason": ""}
    # The member's own lines, not systemd's about it; etcd logs JSON, whose msg and error say why.
    name = unit if "." in unit else unit + ".service"
    journal = subprocess.run(["journalctl", "_SYSTEMD_UNIT=" + name, "-n", str(lines), "-o", "cat", "--no-pager"],
                             capture_output=True, text=True, check=False).stdout.strip().splitlines()
    tail = " | ".join(_log_line(line) for line in journal) or "none"
    return {"ok": False, "reason": "%s; last log lines: %s" % (reason, tail)}


def _log_line(line):
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:200]
    if not isinstance(entry, dict):
        return line[:200]
    text = " ".join(str(entry[k]) for k in ("level", "msg") if k in entry)
    return (text + (": %s" % entry["error"] if "error" in entry else ""))[:300]


def main():
    request = json.loads(sys.argv[1])
    result = {"errors": []}
    try:
        result["files"] = check_files(request.get("files", []))
        result["dirs"] = check_dirs(request.get("dirs", []))
        result["account"] = account(request["user"], request["group"], request["home"], request["shell"])
        result["units"] = units(request.get("units", []), extra=["NeedDaemonReload"])
        result["member"] = os.path.isdir(os.path.join(request["data_dir"], "member"))
        tree = request.get("tree")
        result["tree"] = check_tree(**tree) if tree else []
        check = request.get("health")
        result["health"] = health(check["unit"], check["argv"], check["lines"]) if check else {"ok": True, "reason": ""}
        result["binaries"] = check_files(request.get("binaries", []))
        result["version"] = member_version(request)
    except Exception as exc:  # reported by the next task: this probe's own output is hidden (no_log)
        result["errors"].append("%s: %s" % (type(exc).__name__, exc))
    print(json.dumps(result))


main()
