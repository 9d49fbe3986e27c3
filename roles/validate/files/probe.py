"""Read-only probe for the validate role, printed as JSON.

Input (argv[1], JSON): address (the node's spec address), controller_before (controller epoch,
echoed back). Reports /etc/os-release, PID 1, the host clock and the host's addresses.
"""
import ipaddress
import json
import subprocess
import sys
import time

request = json.loads(sys.argv[1])
release = {}
with open("/etc/os-release", encoding="utf-8") as handle:
    for line in handle:
        key, sep, value = line.strip().partition("=")
        if sep:
            release[key] = value.strip().strip('"')
dist_id = release.get("ID", "")
like = release.get("ID_LIKE", "").split()
# Names as Ansible's distribution facts spell them.
family = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "fedora": "RedHat", "centos": "RedHat"}
os_family = family.get(dist_id) or next((family[i] for i in like if i in family), dist_id.capitalize())
with open("/proc/1/comm", encoding="utf-8") as handle:
    pid1 = handle.read().strip()
epoch = time.time()
listing = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
addresses = []
for line in listing.splitlines():
    fields = line.split()
    if len(fields) > 3 and fields[2] in ("inet", "inet6"):
        addresses.append(fields[3].split("/")[0])
found = False
try:
    target = ipaddress.ip_address(request.get("address", ""))
    found = any(ipaddress.ip_address(a.split("%")[0]) == target for a in addresses)
except ValueError:
    pass
print(json.dumps({
    "distribution": {"debian": "Debian", "ubuntu": "Ubuntu"}.get(dist_id, release.get("NAME", dist_id)),
    "os_family": os_family,
    "major_version": release.get("VERSION_ID", "").split(".")[0],
    "pretty_name": release.get("PRETTY_NAME", dist_id),
    "pid1": pid1,
    "epoch": epoch,
    "controller_before": float(request["controller_before"]),
    "addresses": addresses,
    "address_found": found,
}))
