"""The namespace-baseline controller's manifest: the baseline it applies to namespaces the spec does not name
is the one cluster_objects applies to the spec's namespaces (one template), with least privilege."""
from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hardened_cluster.deliver import bundle
from hardened_cluster.plan.render import render_plan
from hardened_cluster.secrets.store import resolve_secrets
from hardened_cluster.spec.load import parse_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "inventories" / "sample" / "cluster.yaml"
MANIFEST = "manifests/namespace-baseline.yaml"
SYSTEM = {"kube-system", "kube-public", "kube-node-lease"}


def bundle_data(**baseline) -> dict:
    """The sample spec with its artifacts from a bundle (where the controller's image is)."""
    data = yaml.safe_load(SAMPLE.read_text())
    data["runtimes"].update(artifacts="bundle", bundle=str(bundle.default_out(bundle.DEFAULT_KUBERNETES)))
    data["runtimes"]["gvisor"]["platform"] = "ptrace"
    if baseline:
        data["namespace_baseline"] = baseline
    return data


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    state = tmp_path_factory.mktemp("state") / "prod-eu1"

    def plan(data: dict):
        loaded = parse_spec(copy.deepcopy(data), SAMPLE)
        return render_plan(loaded, resolve_secrets(loaded, state))

    return plan


def objects(plan) -> dict[str, dict]:
    return {o["kind"]: o for o in yaml.safe_load_all(plan.manifests[MANIFEST].content)}


def baseline_of(plan) -> tuple[list[dict], set[str]]:
    data = objects(plan)["ConfigMap"]["data"]
    return list(yaml.safe_load_all(data["baseline.yaml"])), set(data["exclude"].split())


def test_the_controller_applies_the_same_baseline_as_the_spec_namespaces(render):
    plan = render(bundle_data())
    docs, _ = baseline_of(plan)
    [labels] = [d["metadata"]["labels"] for d in docs if d["kind"] == "Namespace"]
    [apps] = [n for n in yaml.safe_load_all(plan.manifests["manifests/namespaces.yaml"].content)
              if n["metadata"]["name"] == "apps"]
    # apps is restricted, as namespace_baseline.pod_security is by default.
    assert labels == apps["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    for spec_policy in yaml.safe_load_all(plan.manifests["manifests/networkpolicies.yaml"].content):
        if spec_policy["metadata"]["namespace"] == "apps":
            spec_policy["metadata"].pop("namespace")
            assert policies.pop(spec_policy["metadata"]["name"]) == spec_policy
    assert policies == {}
    [account] = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account == {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"},
                       "automountServiceAccountToken": False}
    # The controller sets each target's namespace: none is written into the baseline.
    assert all("namespace" not in d["metadata"] and (d["kind"] == "Namespace") != ("name" in d["metadata"])
               for d in docs)


def test_system_spec_and_excluded_namespaces_are_left_alone(render):
    plan = render(bundle_data(exclude=["scratch"]))
    _, excluded = baseline_of(plan)
    assert excluded == SYSTEM | {"scratch"} | {ns.name for ns in plan.spec.namespaces}


def test_pod_security_level_and_network_policy_follow_the_spec(render):
    plan = render(bundle_data(pod_security="baseline", network_policy=False))
    docs, _ = baseline_of(plan)
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount"]
    labels = docs[0]["metadata"]["labels"]
    assert {labels[f"pod-security.kubernetes.io/{m}"] for m in ("enforce", "audit", "warn")} == {"baseline"}
    # Without policies to apply, the controller may not touch any.
    rules = objects(plan)["ClusterRole"]["rules"]
    assert all("networkpolicies" not in r["resources"] for r in rules)


def test_least_privilege_and_restricted_pod(render):
    plan = render(bundle_data())
    objs = objects(plan)
    rules = {(group, resource): set(r["verbs"]) for r in objs["ClusterRole"]["rules"]
             for group in r["apiGroups"] for resource in r["resources"]}
    assert rules == {("", "namespaces"): {"list", "watch", "patch"},
                     ("", "serviceaccounts"): {"list", "watch", "create", "patch"},
                     ("networking.k8s.io", "networkpolicies"): {"list", "watch", "create", "patch"}}
    binding = objs["ClusterRoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "namespace-baseline", "namespace": "kube-system"}]
    assert objs["ServiceAccount"]["automountServiceAccountToken"] is False
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "namespace-baseline"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["imagePullPolicy"] == "Never"
    assert container["image"].startswith("hardened-cluster.local/namespace-baseline:v")


def test_manifest_and_baseline_objects_validate_strictly(render):
    plan = render(bundle_data())
    version = plan.spec.cluster.kubernetes_version
    for obj in yaml.safe_load_all(plan.manifests[MANIFEST].content):
        kubernetes_validate.validate(obj, version, strict=True)
    docs, _ = baseline_of(plan)
    for obj in docs:
        placed = copy.deepcopy(obj)
        placed["metadata"]["namespace" if obj["kind"] != "Namespace" else "name"] = "later"
        kubernetes_validate.validate(placed, version, strict=True)


def test_a_changed_baseline_rolls_the_controller(render):
    def checksum(plan):
        return objects(plan)["Deployment"]["spec"]["template"]["metadata"]["annotations"]["hardened-cluster/baseline-sha256"]

    same = checksum(render(bundle_data()))
    assert checksum(render(bundle_data())) == same
    assert checksum(render(bundle_data(pod_security="baseline"))) != same
    assert checksum(render(bundle_data(exclude=["scratch"]))) != same


def test_not_deployed_without_the_bundle_or_when_off(render):
    assert MANIFEST not in render(bundle_data(enabled=False)).manifests
    release = yaml.safe_load(SAMPLE.read_text())
    assert release["runtimes"]["artifacts"] == "release"
    assert MANIFEST not in render(release).manifests


def test_a_bad_exclude_names_its_key(render):
    from hardened_cluster.errors import SpecError

    with pytest.raises(SpecError) as error:
        render(bundle_data(exclude=["Not_A_Namespace"]))
    assert "namespace_baseline.exclude[0]" in str(error.value)
