"""Read-only probe for the container_runtime role, printed as JSON.

Input (argv[1], JSON): packages, files (each with its planned sha256), dirs, units.
Reports the packages dpkg does not list as installed, the unwanted ones it does (absent), planned files and directories that differ
(reasons only, never contents or hashes) and the state of the containerd unit.
"""
# Sent after playbooks/files/plan_probe.py, as one script (see tasks/probe.yml): the imports,
# check_files, check_dirs and units used here come from there.


def missing_packages(names):
    """The names dpkg does not report as installed, in the order asked for."""
    if not names:
        return []
    # dpkg-query exits 1 when a package is unknown; its output still lists the known ones.
    text = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", "--", *names],
        capture_output=True, text=True, check=False,
    ).stdout
    installed = {words[0].split(":")[0] for words in map(str.split, text.splitlines())
                 if len(words) == 2 and words[1] == "installed"}
    return [name for name in names if name not in installed]


def main():
    request = json.loads(sys.argv[1])
    result = {"errors": []}
    try:
        result["packages"] = missing_packages(request.get("packages", []))
        unwanted = request.get("absent", [])
        missing = set(missing_packages(unwanted))
        result["absent"] = [name for name in unwanted if name not in missing]
        result["files"] = check_files(request.get("files", []))
        result["dirs"] = check_dirs(request.get("dirs", []))
        result["units"] = units(request.get("units", []))
    except Exception as exc:  # reported by the next task: the probe's output is hidden when secrets are planned
        result["errors"].append("%s: %s" % (type(exc).__name__, exc))
    print(json.dumps(result))


main()
