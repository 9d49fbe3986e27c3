"""Read-only probe for the access role, printed as JSON.

Input (argv[1], JSON): files (each with its planned sha256), users (each with the public keys the
spec allows), sudoers_dir.
Reports planned files that differ, every key in a managed user's authorized_keys that the spec does
not allow (by fingerprint, never the key), allowed keys that are missing, loose modes or owners of
the key files, and the files in the sudoers directory that sudo reads but the plan does not hold.
"""
# Sent after playbooks/files/plan_probe.py, as one script (see tasks/probe.yml): the imports,
# _attributes, _sha256, check_files, check_dirs and units used here come from there.
import base64
import re

KEY = re.compile(r"(?:^|\s)((?:ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+)\s+([A-Za-z0-9+/]+={0,2})(?:\s|$)")


def parse(line):
    """(options, type, blob) of an authorized_keys line, or None for blanks, comments and garbage."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    match = KEY.search(text)
    if not match:
        return ("unparsed", text[:40], "")
    return (text[:match.start()].strip(), match.group(1), match.group(2))


def fingerprint(blob):
    try:
        raw = base64.b64decode(blob)
    except ValueError:
        raw = blob.encode()
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def user_keys(want):
    """What differs between a user's authorized_keys and the keys the spec allows."""
    user = want["user"]
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return {"user": user, "exists": False, "path": None, "extra": [], "missing": [], "attributes": []}
    group = grp.getgrgid(entry.pw_gid).gr_name
    ssh_dir = os.path.join(entry.pw_dir, ".ssh")
    path = os.path.join(ssh_dir, "authorized_keys")
    allowed = {}
    for line in want["keys"]:
        parsed = parse(line)
        allowed[(parsed[1], parsed[2])] = line
    found, extra, attributes = set(), [], []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        attributes.append("%s is not a regular file" % path)
    elif st is not None:
        attributes += ["%s: %s" % (path, r) for r in _attributes(st, {"mode": "0600", "owner": user, "group": group})]
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                parsed = parse(line)
                if parsed is None:
                    continue
                options, kind, blob = parsed
                if not options and (kind, blob) in allowed:
                    found.add((kind, blob))
                    continue
                why = "with options" if options else "not in the spec"
                extra.append({
                    "path": path, "user": user, "name": "%s: %s %s" % (user, kind, fingerprint(blob)),
                    "reason": "%s line %d: %s key %s %s" % (path, number, kind, fingerprint(blob), why),
                })
    if allowed and os.path.isdir(ssh_dir):
        attributes += ["%s: %s" % (ssh_dir, r) for r in _attributes(os.stat(ssh_dir), {"mode": "0700", "owner": user, "group": group})]
    missing = [fingerprint(blob) for (kind, blob) in allowed if (kind, blob) not in found]
    return {"user": user, "exists": True, "path": path, "home": entry.pw_dir, "group": group,
            "present": st is not None, "extra": extra, "missing": missing, "attributes": attributes}


def unplanned_sudoers(directory, planned):
    """Files sudo reads from `directory` (no '.' in the name, not ending in '~') that hold rules."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return out
    for name in names:
        path = os.path.join(directory, name)
        if path in planned or "." in name or name.endswith("~") or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as handle:
            rules = [n for n, line in enumerate(handle, 1) if line.strip() and not line.lstrip().startswith("#")]
        if rules:
            out.append({"path": path, "reason": "%s: %d line(s) the plan does not hold" % (path, len(rules))})
    return out


def main():
    request = json.loads(sys.argv[1])
    files = request.get("files", [])
    keys = [user_keys(u) for u in request.get("users", [])]
    print(json.dumps({
        "files": check_files(files),
        "keys": keys,
        "unlisted": [e for k in keys for e in k["extra"]],
        "rewrite": [k["user"] for k in keys if k["exists"] and (k["extra"] or k["missing"] or k["attributes"])],
        "sudoers": unplanned_sudoers(request["sudoers_dir"], {f["dest"] for f in files}) if request.get("sudo") else [],
    }))


main()
