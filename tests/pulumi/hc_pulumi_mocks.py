"""Pulumi mocks for tests/pulumi: every resource echoes its inputs as outputs, and the monitor records
each registration's parent, dependencies, provider and secret outputs so tests can check the graph."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "inventories" / "sample" / "cluster.yaml"
SECRETS_TYPE = "pulumi-python:dynamic/hardened-cluster:ClusterSecrets"
TIER_TYPE = "pulumi-python:dynamic/hardened-cluster:ClusterTier"


@dataclass(frozen=True)
class Registration:
    type: str
    urn: str
    parent: str
    dependencies: list[str]
    provider: str
    secret_outputs: list[str]
    inputs: dict  # as sent: secret values stay wrapped


class EchoMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        # Extra outputs by resource type, for the one resource whose outputs are not its inputs.
        self.outputs_by_type: dict[str, dict] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        return [f"{args.name}_id", {**args.inputs, **self.outputs_by_type.get(args.typ, {})}]

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


class RecordingMonitor(MockMonitor):
    def __init__(self, mocks: EchoMocks) -> None:
        super().__init__(mocks)
        self.registrations: dict[str, Registration] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        self.registrations[request.name] = Registration(
            request.type, response.urn, request.parent, list(request.dependencies), request.provider,
            list(request.additionalSecretOutputs), rpc.deserialize_properties(request.object),
        )
        return response

    def of_type(self, prefix: str) -> dict[str, Registration]:
        return {name: r for name, r in self.registrations.items() if r.type.startswith(prefix)}


def resolve(**outputs: pulumi.Output) -> pulumi.Output:
    """{name: (value, is_secret)} for the given outputs, as one Output a test applies its checks to."""
    async def gather() -> dict:
        return {name: (await o.future(), await o.is_secret()) for name, o in outputs.items()}

    return pulumi.Output.from_input(gather())


def settled(*resources: pulumi.Resource) -> pulumi.Output:
    """Resolves once every given resource is registered."""
    return pulumi.Output.all(*(r.urn for r in resources))


def is_wrapped_secret(value) -> bool:
    return rpc.is_rpc_secret(value)
