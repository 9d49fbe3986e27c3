"""Read-only probe for the ssh_hardening role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, admin_user, main_config, dropin_dir.
Reports planned files that differ, whether the admin can still log in with a key, and whether
the main sshd_config reads the drop-in directory before its own settings.
"""
# Sent after playbooks/files/plan_probe.py, as one script (see tasks/probe.yml): the imports,
# _attributes, _sha256, check_files, check_dirs and units used here come from there.


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
