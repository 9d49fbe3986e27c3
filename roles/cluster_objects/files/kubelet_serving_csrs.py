"""Which pending kubelet serving CSRs to approve: exactly each node's own, naming only itself.

Input: argv[1] JSON {"nodes": {name: address}}; stdin: `kubectl get csr -o json`. Output (JSON):
{"approve": [csr names], "refused": [{"csr", "reason"}]}. A CSR is approved only when it asks the
kubelet-serving signer for server auth, comes from system:node:<name> of a node of the spec, and its
subjectAltNames are exactly that node's name and address. Read-only: prints, changes nothing.
"""
import base64
import json
import subprocess
import sys

SIGNER = "kubernetes.io/kubelet-serving"
USAGES = {"digital signature", "server auth"}  # key encipherment is added for RSA keys


def sans(request_pem):
    """The CSR's subject alternative names as (DNS names, IP addresses), read by openssl."""
    text = subprocess.run(["openssl", "req", "-noout", "-text"], input=request_pem,
                          capture_output=True, check=True).stdout.decode().splitlines()
    marker = [i for i, line in enumerate(text) if "X509v3 Subject Alternative Name" in line]
    dns, ips = set(), set()
    for item in (text[marker[0] + 1] if marker else "").split(","):
        item = item.strip()
        if item.startswith("DNS:"):
            dns.add(item[4:])
        elif item.startswith("IP Address:"):
            ips.add(item[11:])
    return dns, ips


def verdict(csr, nodes):
    spec, status = csr["spec"], csr.get("status", {})
    if any(c.get("type") in ("Approved", "Denied", "Failed") for c in status.get("conditions", [])):
        return None
    if spec.get("signerName") != SIGNER:
        return None
    user = spec.get("username", "")
    name = user[len("system:node:"):] if user.startswith("system:node:") else None
    if name not in nodes:
        return "requested by %s, not a node of the spec" % user
    if "system:nodes" not in spec.get("groups", []):
        return "requester is not in system:nodes"
    if not set(spec.get("usages", [])) - {"key encipherment"} == USAGES:
        return "usages %s" % ", ".join(sorted(spec.get("usages", [])))
    dns, ips = sans(base64.b64decode(spec["request"]))
    if dns - {name} or ips != {nodes[name]}:
        return "names %s and addresses %s, want %s and %s" % (sorted(dns), sorted(ips), name, nodes[name])
    return ""


def main():
    nodes = json.loads(sys.argv[1])["nodes"]
    result = {"approve": [], "refused": []}
    for csr in json.load(sys.stdin).get("items", []):
        reason = verdict(csr, nodes)
        if reason == "":
            result["approve"].append(csr["metadata"]["name"])
        elif reason:
            result["refused"].append({"csr": csr["metadata"]["name"], "reason": reason})
    print(json.dumps(result))


main()
