"""The house rules of adr/0012-layout.md that a linter does not check: small modules and
small functions in controlplane/ and operators/ (generated stubs excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
GENERATED = ("controlplane/runtimes/containerd/api/", "controlplane/api/grpc/gen/")
# Migrations are history: a revision, once released, is never edited (Alembic's rule).
MIGRATIONS = "controlplane/data/migrations/versions/"


def sources() -> list[Path]:
    files = [*ROOT.glob("controlplane/**/*.py"), *ROOT.glob("operators/**/*.py")]
    return sorted(p for p in files if not str(p.relative_to(ROOT)).startswith(GENERATED))


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_80_lines() -> None:
    long: dict[str, int] = {}
    for path in sources():
        if str(path.relative_to(ROOT)).startswith(MIGRATIONS):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = node.end_lineno - first + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = n
    assert long == {}
