"""The egress allowlist of an Agent (`spec.network.egress`): which names and ports a sandbox
may reach through the egress proxy (architecture/networking.md, "Egress").

Pure rules, no I/O. A host is a lower-case DNS name (RFC 1123 labels, at most 253
characters) or `*.` + such a name: `*.example.com` matches `a.example.com` and
`a.b.example.com`, never `example.com` itself. IP literals and internationalised names
(non-ASCII; write the `xn--` form) are refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Protocol

MAX_RULES = 64
MAX_PORTS = 32
MAX_HOST_LENGTH = 253
_ANY_CASE_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_LAST_LABEL = r"[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
# The CRD's and the OpenAPI pattern: a wildcard only as `*.` before two labels or more, the
# last label begins with a letter (so no IP literal or all-digit label matches); every name
# it matches that fits 253 characters normalize_host accepts.
HOST_PATTERN = rf"^(\*\.{_ANY_CASE_LABEL}\.)?({_ANY_CASE_LABEL}\.)*{_LAST_LABEL}\.?$"
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class EgressRuleLike(Protocol):
    """What matching reads of a rule (the model's `EgressRule`)."""

    @property
    def host(self) -> str: ...

    @property
    def ports(self) -> list[int]: ...


def normalize_host(host: str) -> str:
    """`host` lower-cased and checked as an allowlist entry.

    Raises ValueError (the message says why): not ASCII, an IP literal, a label that is not
    RFC 1123, `*` anywhere but as the whole first label, a wildcard with fewer than two labels
    after it (`*.com`), an all-digit last label, longer than 253 characters.
    """
    name = host.strip().lower().rstrip(".")
    if not name:
        raise ValueError("a host name is required")
    if not name.isascii():
        raise ValueError("use the ASCII (xn--) form of an internationalised name")
    if _is_ip(name.strip("[]")):
        raise ValueError("an IP address is not allowed: name the host")
    if len(name) > MAX_HOST_LENGTH:
        raise ValueError(f"longer than {MAX_HOST_LENGTH} characters")
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise ValueError("a wildcard needs at least two labels after `*.` (`*.example.com`)")
    if labels[-1].isdigit():
        raise ValueError("the last label cannot be all digits (it would read as an address)")
    for label in labels:
        if "*" in label:
            raise ValueError("`*` is allowed only as the whole first label (`*.example.com`)")
        if not _LABEL.match(label):
            raise ValueError(f"label {label!r} is not a DNS label (a-z, 0-9, `-`, 1-63)")
    return name


def normalize_ports(ports: Iterable[int]) -> list[int]:
    """`ports` sorted without duplicates. Raises ValueError: empty, or one outside 1-65535."""
    unique = sorted(set(ports))
    if not unique:
        raise ValueError("at least one port is required")
    bad = [p for p in unique if not 1 <= p <= 65535]
    if bad:
        raise ValueError(f"ports must be 1-65535, got {bad}")
    return unique


def host_matches(pattern: str, host: str) -> bool:
    """Whether the normalised entry `pattern` allows the name `host` (any case, a trailing
    dot ignored). `*.example.com` matches any name ending in `.example.com`."""
    name = host.lower().rstrip(".")
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return name == pattern


def allows(rules: Iterable[EgressRuleLike], host: str, port: int) -> bool:
    """Whether any rule allows `host:port`. No rules: nothing is allowed. An IP literal is
    never allowed (rules name hosts)."""
    if _is_ip(host.strip("[]")):
        return False
    return any(port in rule.ports and host_matches(rule.host, host) for rule in rules)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_global(address: str) -> bool:
    """Whether `address` is a globally routable unicast address (not loopback, private,
    link-local, shared, reserved, multicast...); an IPv4-mapped IPv6 address counts as its
    IPv4 address. Unparsable: False."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
