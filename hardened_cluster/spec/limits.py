"""Bounds on the spec document itself, checked on the YAML event stream before anything is built.

libyaml parses iteratively, so a deep or huge document is measured here in linear time and bounded
memory; composing it (recursive) or validating an alias bomb (exponential once expanded) only happens
to documents within the limits. Each refusal names the limit and where it was exceeded.
"""
from __future__ import annotations

from typing import Any

import yaml

from hardened_cluster.errors import SpecIssue
from hardened_cluster.spec.text import key_path

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 16  # the schema nests 5 deep (nodes[i].ssh.host_key); the rest is room for mistakes
MAX_ENTRIES = 10_000  # per list or mapping: as many nodes as one cluster may have
MAX_VALUES = 1_000_000  # scalars, lists and mappings, each alias counted as what it stands for
MAX_SCALAR = 16 * 1024  # an RSA-16384 host key is 2.8 KB

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)


class _Level:
    """A list or mapping being read: its place, entries so far and, for a mapping, the current key."""

    __slots__ = ("loc", "is_map", "entries", "start", "anchor", "key")

    def __init__(self, loc: tuple[Any, ...], is_map: bool, start: int, anchor: str | None) -> None:
        self.loc, self.is_map, self.start, self.anchor = loc, is_map, start, anchor
        self.entries, self.key = 0, None

    def place(self) -> tuple[Any, ...]:
        """Where the node being read goes; advances past it."""
        if not self.is_map:
            self.entries += 1
            return self.loc + (self.entries - 1,)
        if self.key is None:  # this node is a key
            self.entries += 1
            self.key = "?"
            return self.loc
        loc, self.key = self.loc + (self.key,), None
        return loc


def document_issues(text: str) -> list[SpecIssue]:
    """Issues for a document beyond the limits; [] when it may be loaded (YAML errors are the loader's)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        return [SpecIssue("", f"the document is {size:,} bytes; at most {MAX_BYTES:,} are read")]
    stack = [_Level((), False, 0, None)]
    anchors: dict[str, int] = {}
    values = 0
    try:
        for event in yaml.parse(text, Loader=LOADER):
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                level = stack.pop()
                if level.anchor:
                    anchors[level.anchor] = values - level.start
                continue
            if not isinstance(event, _NODE_EVENTS):
                continue
            parent = stack[-1]
            is_key = parent.is_map and parent.key is None
            loc = parent.place() if len(stack) > 1 else ()  # the bottom level holds the document
            if is_key and isinstance(event, yaml.ScalarEvent):
                parent.key = event.value
            values += anchors.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
            if values > MAX_VALUES:
                return [SpecIssue(key_path(loc), f"the document holds more than {MAX_VALUES:,} values "
                                  "(an alias counts as all it stands for); that is the limit")]
            if parent.entries > MAX_ENTRIES:
                return [SpecIssue(key_path(parent.loc), f"more than {MAX_ENTRIES:,} entries; that is the limit")]
            if isinstance(event, yaml.ScalarEvent):
                if len(event.value) > MAX_SCALAR:
                    return [SpecIssue(key_path(loc), f"a value of {len(event.value):,} characters; "
                                      f"at most {MAX_SCALAR:,}")]
                if event.anchor:
                    anchors[event.anchor] = 1
            elif not isinstance(event, yaml.AliasEvent):
                if len(stack) > MAX_DEPTH:
                    return [SpecIssue(key_path(loc), f"nested more than {MAX_DEPTH} levels deep; that is the limit")]
                stack.append(_Level(loc, isinstance(event, yaml.MappingStartEvent), values, event.anchor))
    except yaml.YAMLError:
        return []
    return []
