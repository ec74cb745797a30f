"""The data layer and observability keep to their side of the layers:
`controlplane.data` is SQL only and imports no entry point, controller or broker code (so
`controlplane.messaging` may import it without a cycle); `controlplane.observability` imports
only the domain; the records the data layer hands out are pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Each module of `package` (dotted) → the absolute module names it imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {name}"
        for module, names in imported_modules(package).items()
        for name in sorted(names)
        if name.startswith(forbidden)
    ]


@pytest.mark.parametrize(
    "upper",
    ["controlplane.messaging", "controlplane.api", "controlplane.controllers", "controlplane.cli"],
)
def test_the_data_layer_imports_no_upper_layer(upper: str) -> None:
    assert offending("controlplane.data", (upper,)) == []


def test_observability_imports_only_the_domain_of_the_control_plane() -> None:
    allowed = ("controlplane.domain", "controlplane.observability")
    imports = imported_modules("controlplane.observability")
    assert [
        f"{module} imports {name}"
        for module, names in imports.items()
        for name in sorted(names)
        if name.startswith("controlplane") and not name.startswith(allowed)
    ] == []
    assert offending("controlplane.observability", ("sqlalchemy",)) == []


def test_the_records_the_data_layer_hands_out_are_pure() -> None:
    imports = imported_modules("controlplane.domain")["controlplane/domain/records.py"]
    assert not [n for n in imports if n.startswith(("sqlalchemy", "fastapi", "nats"))]
