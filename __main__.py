"""The Pulumi program: one HardenedCluster from the stack's spec (see Pulumi.yaml and docs/pulumi.md)."""
from __future__ import annotations

from pathlib import Path

import pulumi
import yaml

from hardened_cluster.errors import SpecError
from hardened_cluster.pulumi.component import HardenedCluster, HardenedClusterArgs
from hardened_cluster.spec.load import load_spec, parse_spec

PROJECT = "hardened-cluster"
DEFAULT_SPEC = "inventories/lab/cluster.yaml"


def _invalid(key: str, error: SpecError, where: str = "") -> pulumi.RunError:
    lines = [f"{key}{where}: {issue}" for issue in error.issues]
    return pulumi.RunError("invalid cluster spec:\n  " + "\n  ".join(lines))


def read_spec(config: pulumi.Config) -> tuple[dict, Path | None]:
    """The spec document, validated: inline (hardened-cluster:spec) or from hardened-cluster:specPath."""
    inline = config.get_object("spec")
    if inline is not None:
        try:
            parse_spec(inline)
        except SpecError as exc:
            raise _invalid(f"{PROJECT}:spec", exc) from None
        return inline, None
    path = Path(config.get("specPath") or DEFAULT_SPEC).resolve()
    try:
        load_spec(path)
    except SpecError as exc:
        raise _invalid(f"{PROJECT}:specPath", exc, f" ({path})") from None
    return yaml.safe_load(path.read_text()), path


def secret(config: pulumi.Config, key: str) -> pulumi.Output[str] | None:
    """An optional secret setting; refused when it sits in the stack file in plain text."""
    full = f"{PROJECT}:{key}"
    if not config.get(key):
        return None
    if not (pulumi.runtime.is_config_secret(full) or full in pulumi.runtime.get_config_secret_keys_env()):
        raise pulumi.RunError(f"{full} is stored in plain text; set it with: pulumi config set --secret {full} <value>")
    return config.require_secret(key)


def cluster_args(config: pulumi.Config) -> HardenedClusterArgs:
    doc, path = read_spec(config)
    encryption_key = secret(config, "encryptionKey")
    keys = (doc.get("encryption") or {}).get("keys") or []
    if encryption_key is not None and not keys:
        raise pulumi.RunError(f"{PROJECT}:encryptionKey: the spec has no encryption.keys to give it to")
    return HardenedClusterArgs(
        spec=doc,
        spec_path=str(path) if path else None,
        # It replaces the first key of the spec: the one that encrypts.
        encryption_keys={keys[0]["name"]: encryption_key} if encryption_key is not None else None,
        snapshot_key=secret(config, "snapshotKey"),
        bootstrap_token=secret(config, "bootstrapToken"),
        certificate_key=secret(config, "certificateKey"),
        rotate_encryption_key=config.get("rotateEncryptionKey") or "",
        state_dir=config.get("stateDir") or None,
    )


config = pulumi.Config(PROJECT)
args = cluster_args(config)
cluster = HardenedCluster(args.spec["cluster"]["name"], args)

pulumi.export("apiEndpoint", cluster.api_endpoint)
pulumi.export("adminKubeconfig", cluster.admin_kubeconfig)
pulumi.export("etcdEndpoints", cluster.etcd_endpoints)
pulumi.export("cisSummary", cluster.cis_summary)
