"""The lab's nodes as a cluster spec names them, and where the keys the lab creates are pinned."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from hardened_cluster.errors import SpecError, SpecIssue
from hardened_cluster.spec.messages import validation_issues
from hardened_cluster.spec.model import Spec

from .model import LabNode


def spec_nodes(spec_path: Path) -> tuple[list[LabNode], Path]:
    """The spec's nodes (each with the SSH port its sshd listens on) and where its known_hosts goes.

    The full validation needs the host keys the lab is about to create, so only the
    document's shape is checked here.
    """
    try:
        data = yaml.safe_load(spec_path.read_text())
        spec = Spec.model_validate(data)
    except OSError as exc:
        raise SpecError([SpecIssue("", f"cannot read spec: {exc.strerror}")], str(spec_path)) from None
    except ValidationError as exc:
        raise SpecError(validation_issues(exc), str(spec_path)) from None
    if spec.ssh.known_hosts is None:
        raise SpecError([SpecIssue("ssh.known_hosts", "a lab spec needs a known_hosts file for the keys the lab creates")],
                        str(spec_path))
    known_hosts = spec.ssh.known_hosts
    known_hosts = known_hosts if known_hosts.is_absolute() else spec_path.resolve().parent / known_hosts
    return [LabNode(n.name, str(n.address), spec.ssh_port(n)) for n in spec.nodes], known_hosts
