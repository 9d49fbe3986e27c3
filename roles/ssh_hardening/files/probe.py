"""Read-only probe for the ssh_hardening role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), dirs, admin_user, main_config, dropin_dir.
Reports planned files that differ, whether the admin can still log in with a key, whether
the main sshd_config reads the drop-in directory before its own settings, and every planned
setting sshd does not use (`sshd -T`) with the lines that override it.
Also: sshd, planned (the drop-in's text), own (its path), connections (`sshd -T -C` specs).
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


def _settings(lines):
    """(line number, keyword in lower case, value) of each directive outside comments."""
    for number, raw in enumerate(lines, 1):
        words = raw.split()
        if words and not words[0].startswith("#") and len(words) > 1:
            yield number, words[0].lower(), " ".join(words[1:])


def _normal(value):
    return ",".join(part.strip() for part in value.lower().split(","))


def _winning_lines(path, lines, before_include):
    """Directives of a file that sshd reads before the drop-in, or that apply in a Match block."""
    in_match, passed_include = False, False
    for number, keyword, value in _settings(lines):
        if keyword == "match":
            in_match = True
        elif keyword == "include" and before_include:
            passed_include = True
        elif in_match or not passed_include:
            yield number, keyword, value


def effective_overrides(sshd, planned_text, connections, main_config, dropin_dir, own, delivered):
    """Lines that keep a planned setting from taking effect, and what `sshd -T -C` says sshd uses.

    sshd keeps the first value it reads: a line of the main file before its Include, a line of a
    drop-in read before ours, or a line in a Match block wins over the plan. `sshd -T -C` prints
    the configuration sshd would use for a connection, the proof; a difference no line explains is
    reported too once the drop-in is in place.
    """
    planned = {keyword: value for _, keyword, value in _settings(planned_text.splitlines())}
    sources = [(main_config, True)]
    if os.path.isdir(dropin_dir):
        names = sorted(n for n in os.listdir(dropin_dir) if n.endswith(".conf"))
        sources += [(os.path.join(dropin_dir, n), False) for n in names if os.path.join(dropin_dir, n) != own]
    out, blamed = [], set()
    for path, is_main in sources:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        ours_first = not is_main and os.path.basename(path) > os.path.basename(own)
        for number, keyword, value in _winning_lines(path, lines, is_main):
            want = planned.get(keyword)
            if want is None or _normal(value) == _normal(want):
                continue
            if ours_first and not _in_match(lines, number):
                continue
            blamed.add(keyword)
            out.append({"path": path, "setting": keyword, "line": number,
                        "reason": "%s:%d sets %s %s, which wins over the planned %s" % (path, number, keyword, value, want)})
    for connection in connections:
        run = subprocess.run([sshd, "-T", "-C", connection], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            out.append({"path": main_config, "setting": "sshd -T", "line": 0,
                        "reason": "sshd -T failed: %s" % (run.stderr.strip().splitlines() or ["no output"])[-1]})
            break
        effective = {}
        for line in run.stdout.splitlines():
            keyword, _, value = line.partition(" ")
            effective.setdefault(keyword, value)
        for keyword, want in sorted(planned.items()):
            if delivered and keyword not in blamed and _normal(effective.get(keyword, "")) != _normal(want):
                blamed.add(keyword)
                out.append({"path": main_config, "setting": keyword, "line": 0,
                            "reason": "sshd uses %s %s for %s, planned %s, and no line found sets it"
                            % (keyword, effective.get(keyword), connection, want)})
    return out


def _in_match(lines, number):
    return any(n < number and keyword == "match" for n, keyword, _ in _settings(lines))


def main():
    request = json.loads(sys.argv[1])
    overrides = []
    if request.get("planned"):
        overrides = effective_overrides(request["sshd"], request["planned"], request["connections"],
                                        request["main_config"], request["dropin_dir"], request["own"],
                                        request["own"] not in check_files(request.get("files", [])))
    print(json.dumps({
        "files": check_files(request.get("files", [])),
        "dirs": check_dirs(request.get("dirs", [])),
        "admin": admin_keys(request["admin_user"]),
        "include": include_state(request["main_config"], request["dropin_dir"]),
        "overrides": overrides,
    }))


main()
