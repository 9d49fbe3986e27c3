"""The rerun fingerprint of the first control plane covers the cluster objects it applies: an object
deleted or changed through the API changes it, so `drift` and `apply` do not skip that host."""
import subprocess
from pathlib import Path

import pytest

from hardened_cluster.deliver.rerun import fingerprint_request, parse_fingerprint, script
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import load_spec

SAMPLE = Path(__file__).resolve().parents[2] / "inventories" / "sample" / "cluster.yaml"
PHASES = ["hosts", "etcd", "runtime", "kubernetes", "objects"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    loaded = load_spec(SAMPLE)
    return render_plan(loaded, resolve_secrets(loaded, tmp_path_factory.mktemp("state")))


def test_the_first_control_plane_lists_every_planned_object_and_no_other_host_does(plan):
    first = fingerprint_request(plan, plan.spec.node("cp-1"), PHASES)["objects"]
    refs = {ref for argv in first for ref in argv if "/" in ref and not ref.startswith("/")}
    assert {"RuntimeClass/gvisor", "RuntimeClass/kata"} <= refs
    assert any(r.startswith("NetworkPolicy/") for r in refs)
    # A deleted object prints nothing rather than failing the listing.
    assert all("--ignore-not-found" in argv for argv in first)
    for other in ("cp-2", "worker-1", "etcd-1"):
        assert fingerprint_request(plan, plan.spec.node(other), PHASES)["objects"] == []
    # Without the objects phase the first control plane does not ask the API.
    assert fingerprint_request(plan, plan.spec.node("cp-1"), ["hosts", "kubernetes"])["objects"] == []


def test_what_the_objects_listing_prints_is_part_of_the_fingerprint(tmp_path):
    listing = tmp_path / "listing"
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!/bin/sh\ncat {listing}\n")
    fake.chmod(0o755)
    request = {"walk": [str(tmp_path / "none")], "stat": [], "files": [], "sysctl": [], "units": [], "disabled": [],
               "objects": [[str(fake), "get", "NetworkPolicy/default-deny"]]}

    def fingerprint() -> str:
        run = subprocess.run(["sh", "-s"], input=script(request), capture_output=True, text=True, check=False)
        return parse_fingerprint((run.returncode, run.stdout, run.stderr))

    listing.write_text("NetworkPolicy default-deny 1f0c 812\n")
    present = fingerprint()
    assert present and fingerprint() == present
    listing.write_text("")  # deleted: --ignore-not-found prints nothing for it
    assert fingerprint() != present
