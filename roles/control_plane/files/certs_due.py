"""Prints, as a JSON list, kubeadm's certificates that expire within the window (argv: kubeadm, its
configuration, the window in days). The control_plane role renews what it prints; the controller's
rerun fingerprint runs the same script, so a certificate falling due moves the fingerprint and a
no-op apply does not skip the renewal."""
import json
import subprocess
import sys

kubeadm, config, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
run = subprocess.run([kubeadm, "certs", "check-expiration", "--config", config, "--output", "json"],
                     capture_output=True, text=True, check=False)
if run.returncode != 0:
    sys.exit(f"kubeadm certs check-expiration exited {run.returncode}: {run.stderr.strip()[-300:]}")
# residualTime: seconds left (kubeadm's output.kubeadm.k8s.io/v1alpha3).
print(json.dumps(sorted(c["name"] for c in json.loads(run.stdout)["certificates"]
                        if not c.get("externallyManaged") and not c.get("missing")
                        and c["residualTime"] < days * 86400)))
