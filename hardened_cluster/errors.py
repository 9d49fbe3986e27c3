"""Errors the CLI and the Pulumi program turn into exit codes and messages."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(Exception):
    """Invalid input: one or more issues, each naming the key path. Exit code 2."""

    def __init__(self, issues: list[SpecIssue], source: str = "") -> None:
        self.issues = issues
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: " if self.source else ""
        n = len(self.issues)
        lines = [f"{head}invalid cluster spec ({n} problem{'s' if n != 1 else ''}):"]
        lines += [f"  {issue}" for issue in self.issues]
        return "\n".join(lines)


class DeliveryError(Exception):
    """A host could not be reached or verified before anything changed. Exit code 1."""


class InputError(Exception):
    """A command's argument names something that is not there (e.g. a snapshot). Exit code 2; nothing changed."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")
