"""Pydantic's validation errors as the spec's issues: each with its key path and what is allowed."""
from __future__ import annotations

import difflib
import ipaddress
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from hardened_cluster.errors import SpecIssue
from hardened_cluster.spec import rules as spec_rules
from hardened_cluster.spec.model import Cluster, DnsLabel, EnvName, Kms, Spec
from hardened_cluster.spec.text import HIDDEN, key_path, shown


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the key at `loc`, for 'did you mean' hints."""
    model: Any = Spec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
        if model is None:
            return None
    return model


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _unwrap_model(arg)
        if found:
            return found
    return None


def validation_issues(error: ValidationError) -> list[SpecIssue]:
    """Pydantic's errors as issues naming the key path, what is wrong and what is allowed."""
    issues = []
    suggested = set()
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS)))
        path = key_path(loc)
        kind, value = err["type"], err.get("input")
        if _SECRET_KEYS & {p for p in loc if isinstance(p, str)}:
            value = HIDDEN
        if kind == "extra_forbidden":
            model = _model_at(loc)
            allowed = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
            key = str(loc[-1])
            close = [a for a in allowed if len(key) >= 3 and a.startswith(key)][:1]
            close = close or difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            suggested |= {key_path(loc[:-1] + (close[0],))} if close else set()
            issues.append(SpecIssue(path, f"unknown key{hint}; allowed: {', '.join(allowed)}"))
        elif kind == "missing":
            issues.append(SpecIssue(path, "required key is missing"))
        elif kind == "literal_error":
            allowed = [str(a) for a in err.get("ctx", {}).get("expected", "").replace("'", "").replace(" or ", ", ").split(", ")]
            hint = spec_rules.did_you_mean(value, allowed) if isinstance(value, str) else ""
            issues.append(SpecIssue(path, f"{shown(value)} is not allowed; {err['msg'].replace('Input should be', 'allowed:')}{hint}"))
        elif kind in ("ip_v4_network", "ip_v6_network"):
            issues.append(SpecIssue(path, _network_message(value)))
        elif kind in ("ip_v4_address", "ip_v6_address"):
            issues.append(SpecIssue(path, f"{shown(value)} is not a valid IPv4 or IPv6 address"))
        elif kind == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern")
            want = _PATTERNS.get(pattern, f"a string matching {pattern}")
            issues.append(SpecIssue(path, f"{shown(value)} is not allowed; expected {want}"))
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            bounds = _bounds(loc) or err["msg"].removeprefix("Input should be ")
            issues.append(SpecIssue(path, f"{shown(value)} is out of range; allowed: {bounds}"))
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            bounds = _bounds(loc)
            within = f" ({bounds})" if bounds else ""
            issues.append(SpecIssue(path, f"expected an integer{within}, got {shown(value)}"))
        elif kind in ("bool_type", "bool_parsing"):
            issues.append(SpecIssue(path, f"expected true or false, got {shown(value)}"))
        elif kind == "string_type":
            quote = " (quote it in YAML)" if isinstance(value, (int, float, bool)) else ""
            issues.append(SpecIssue(path, f"expected a string, got {shown(value)}{quote}"))
        elif kind == "path_type":
            issues.append(SpecIssue(path, f"expected a file path, got {shown(value)}"))
        elif kind == "list_type":
            issues.append(SpecIssue(path, f"expected a list, got {shown(value)}"))
        elif kind in ("dict_type", "model_type", "model_attributes_type"):
            model = _model_at(loc + ("",))
            names = sorted((f.alias or n) for n, f in model.model_fields.items()) if model else []
            keys = f" with keys: {', '.join(names)}" if names else ""
            issues.append(SpecIssue(path, f"expected a mapping{keys}; got {shown(value)}"))
        elif kind == "too_short":
            choices = _choices(loc)
            allowed = f"; allowed: {choices}" if choices else ""
            need = err["ctx"]["min_length"]
            issues.append(SpecIssue(path, f"needs at least {need} entry, got {len(value) or 'none'}{allowed}"))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            issues.append(SpecIssue(path, msg))
    return dedupe([i for i in issues if not (i.path in suggested and i.message == "required key is missing")])


# Keys whose values hold or reference key material: messages about them never show the value.
_SECRET_KEYS = {"secret", "encryption_key", "private_key_file"}

# Pydantic names union members in error locations; they are not key paths.
_UNION_TAGS = {"IPv4Network", "IPv6Network", "IPv4Address", "IPv6Address", "int", "str", "bool"}

_PATTERNS = {
    DnsLabel.__metadata__[0].pattern: "a DNS label: lowercase letters, digits and '-', starting and ending "
    "with a letter or digit, at most 63 characters (e.g. worker-1)",
    Cluster.model_fields["domain"].metadata[0].pattern: "a DNS domain: lowercase letters, digits, '-' and '.' "
    "(e.g. cluster.local)",
    Kms.model_fields["endpoint"].metadata[0].pattern: "a unix socket URL, e.g. unix:///run/kms/plugin.sock",
    Kms.model_fields["timeout"].metadata[0].pattern: "a duration such as 500ms, 3s or 1m",
    EnvName.__metadata__[0].pattern: "an environment variable name: letters, digits and '_', not starting with a digit",
}




def _network_message(value: Any) -> str:
    if isinstance(value, str):
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
        else:
            return f"{value!r} has host bits set; did you mean {network}?"
    return f"{shown(value)} is not a valid IPv4 or IPv6 network (CIDR such as 10.0.0.0/24)"


def _field_at(loc: tuple[Any, ...]) -> Any:
    model = _model_at(loc)
    return model.model_fields.get(loc[-1]) if model and isinstance(loc[-1], str) else None


def _bounds(loc: tuple[Any, ...]) -> str:
    """'1 to 365' for a constrained integer field, from its annotation."""
    field = _field_at(loc)
    if field is None:
        return ""
    metadata = list(field.metadata)
    for arg in getattr(field.annotation, "__args__", ()):
        for extra in getattr(arg, "__metadata__", ()):
            metadata += getattr(extra, "metadata", [extra])
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    if low is not None and high is not None:
        return f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}" if high is not None else ""


def _choices(loc: tuple[Any, ...]) -> str:
    """The allowed values of a list-of-literals field ('etcd', 'control-plane' or 'worker')."""
    field = _field_at(loc)
    members = getattr(field.annotation, "__args__", ()) if field else ()
    return ", ".join(repr(a) for arg in members if get_origin(arg) is Literal for a in get_args(arg))


def dedupe(issues: list[SpecIssue]) -> list[SpecIssue]:
    seen: dict[str, SpecIssue] = {}
    for issue in issues:
        seen.setdefault(issue.path, issue)
    return list(seen.values())
