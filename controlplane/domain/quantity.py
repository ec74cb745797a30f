"""Kubernetes resource quantities (`500m`, `2`, `256Mi`, `1G`), parsed to integers.

Follows the Kubernetes quantity grammar (k8s.io/apimachinery/pkg/api/resource) for the
forms Agent OS accepts: decimal numbers with an optional binary (Ki..Ei) or decimal (k..E)
suffix, and the milli suffix `m` for CPU.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$"
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def cpu_millis(quantity: str) -> int:
    """CPU quantity → millicores: `500m` → 500, `2` → 2000, `0.25` → 250.

    Raises ValueError if `quantity` is not a CPU quantity.
    """
    if not re.fullmatch(CPU_PATTERN, quantity):
        raise ValueError(f"{quantity!r} is not a CPU quantity (e.g. 500m, 1, 0.5)")
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return int(Decimal(quantity) * 1000)


def memory_bytes(quantity: str) -> int:
    """Memory quantity → bytes: `256Mi` → 268435456, `1G` → 10**9, `1024` → 1024.

    Raises ValueError if `quantity` is not a memory quantity.
    """
    match = re.fullmatch(MEMORY_PATTERN, quantity)
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity (e.g. 256Mi, 1Gi, 500M)")
    suffix = match.group(2) or ""
    number = quantity[: len(quantity) - len(suffix)]
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the pattern excludes it
        raise ValueError(f"{quantity!r} is not a number") from exc
    factor = _BINARY.get(suffix) or _DECIMAL.get(suffix) or 1
    return int(value * factor)


_ANY_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")


def parse_quantity(quantity: str) -> Decimal:
    """Any Kubernetes quantity as the apiserver writes it (`1k`, `3800m`, `16264020Ki`,
    `1e3`) → its value as a Decimal (`3800m` → 3.8). For what nodes report, whose forms are
    wider than what an Agent may request.

    Raises ValueError if `quantity` is not a quantity.
    """
    match = _ANY_QUANTITY.fullmatch(quantity.strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(f"{quantity!r} is not a number") from exc
    if suffix == "m":
        return value / 1000
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return value * Decimal(10) ** int(suffix[1:])
    return value * (_BINARY.get(suffix) or _DECIMAL.get(suffix) or 1)
