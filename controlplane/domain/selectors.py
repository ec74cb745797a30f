"""Kubernetes label selectors: parsing and matching (pure).

Grammar (k8s.io/apimachinery/pkg/labels, "Labels and Selectors" in the Kubernetes docs):
requirements separated by commas, all of which must hold —

    key=value   key==value   key!=value   key in (a,b)   key notin (a,b)   key   !key

`!=` and `notin` also match objects that do not have the key, as in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from controlplane.domain.errors import BadRequest

# A qualified name with an optional DNS-subdomain prefix (`app.kubernetes.io/name`).
_KEY = r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(\s*([^)]*)\)$")
_EQ = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True)
class Requirement:
    """One requirement of a selector: `key`, `operator` and its `values` (sorted)."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case Operator.EQUALS | Operator.IN:
                return present and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or value not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present
        raise AssertionError(self.operator)  # pragma: no cover


def _split(selector: str) -> list[str]:
    """Split on commas that are not inside a parenthesised set."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(selector[start:i])
            start = i + 1
    parts.append(selector[start:])
    return [p.strip() for p in parts]


def parse_selector(selector: str | None) -> list[Requirement]:
    """The requirements of a label selector; an empty or absent selector selects everything.

    Raises BadRequest naming the requirement that does not parse.
    """
    if selector is None or not selector.strip():
        return []
    requirements = []
    for part in _split(selector):
        if m := _SET.match(part):
            values = tuple(sorted(v.strip() for v in m.group(3).split(",") if v.strip()))
            if not values or not all(re.fullmatch(_VALUE, v) for v in values):
                raise BadRequest(f"labelSelector: bad value set in {part!r}")
            op = Operator.IN if m.group(2) == "in" else Operator.NOT_IN
            requirements.append(Requirement(m.group(1), op, values))
        elif m := _EQ.match(part):
            op = Operator.NOT_EQUALS if m.group(2) == "!=" else Operator.EQUALS
            requirements.append(Requirement(m.group(1), op, (m.group(3),)))
        elif m := _EXISTS.match(part):
            op = Operator.DOES_NOT_EXIST if m.group(1) else Operator.EXISTS
            requirements.append(Requirement(m.group(2), op))
        else:
            raise BadRequest(f"labelSelector: cannot parse requirement {part!r}")
    return requirements


def matches(requirements: Sequence[Requirement], labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy every requirement."""
    return all(r.matches(labels) for r in requirements)
