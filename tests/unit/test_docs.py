"""architecture/ and adr/ stay true to the tree where that is cheap to check: links and paths
exist, cited tests exist, the lifecycle diagram is the transition table, the error table is
the catalogue, named metrics and alerts exist, every ADR and every page is indexed.

What the pages *say* is not checked here; what they *point at* is.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.promql_names import RULES_DIR, exported_series

ROOT = Path(__file__).resolve().parents[2]
ARCH = ROOT / "architecture"
ADR = ROOT / "adr"
PAGES = sorted(ARCH.glob("*.md"))
ADRS = sorted(ADR.glob("[0-9][0-9][0-9][0-9]-*.md"))

# Top-level folders of the repository whose paths the pages name in `code`.
REPO_ROOTS = (
    "controlplane",
    "operators",
    "deploy",
    "bench",
    "hack",
    "tests",
    "proto",
    "examples",
    "adr",
    "architecture",
)
_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_SUBPACKAGES = tuple(
    p.name for p in (ROOT / "controlplane").iterdir() if (p / "__init__.py").exists()
)
_DOTTED = re.compile(
    rf"^(?:controlplane\.)?(?:{'|'.join(_SUBPACKAGES)})\.[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*$"
)
_CLASS_ATTR = re.compile(r"^([A-Z][A-Za-z0-9]+)\.([A-Za-z_]\w*)$")


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """`text` without its fenced blocks (code spans in prose are what names paths)."""
    return _FENCE.sub("", text)


def mermaid_blocks(text: str) -> list[str]:
    return [body for lang, body in _FENCE.findall(text) if lang == "mermaid"]


def page_ids() -> list[str]:
    return [p.name for p in PAGES]


def defines(source: str, name: str) -> bool:
    """Whether a Python source defines `name` (function, class, assignment or annotation)."""
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*[:=]"
    return re.search(pattern, source, re.M) is not None


def module_file(dotted: list[str]) -> tuple[Path, list[str]] | None:
    """The longest prefix of `dotted` that is a module of the tree, and the rest."""
    for cut in range(len(dotted), 0, -1):
        base = ROOT.joinpath(*dotted[:cut])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, dotted[cut:]
    return None


def class_index() -> dict[str, list[Path]]:
    """Every class defined under controlplane/ and operators/, by name."""
    index: dict[str, list[Path]] = {}
    for folder in ("controlplane", "operators"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in re.findall(r"^class (\w+)", text_of(path), re.M):
                index.setdefault(name, []).append(path)
    return index


def test_there_are_architecture_pages_and_adrs() -> None:
    assert {p.name for p in PAGES} >= {
        "README.md",
        "overview.md",
        "state-machines.md",
        "data-layer.md",
        "api-compatibility.md",
        "failure-modes.md",
        "scaling.md",
        "slos.md",
    }
    assert ADRS, "adr/ holds records"


@pytest.mark.parametrize("page", [*PAGES, ADR / "README.md"], ids=[*page_ids(), "adr/README.md"])
def test_every_relative_link_leads_to_a_file_of_the_repository(page: Path) -> None:
    missing = []
    for target in _LINK.findall(prose(text_of(page))):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or ROOT not in path.parents:
            missing.append(target)
    assert missing == [], f"{page.name}: broken links"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_repository_path_named_exists(page: Path) -> None:
    missing = []
    for span in _CODE.findall(prose(text_of(page))):
        if not span.startswith(tuple(f"{r}/" for r in REPO_ROOTS)):
            continue
        path, _, test = span.partition("::")
        if "*" in path:
            if not list(ROOT.glob(path)):
                missing.append(span)
            continue
        exists = (ROOT / path).exists()
        if not exists or (test and not defines(text_of(ROOT / path), test)):
            missing.append(span)
    assert missing == [], f"{page.name}: paths or tests that do not exist"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_module_and_function_named_exists(page: Path) -> None:
    classes = class_index()
    missing = []
    for span in _CODE.findall(prose(text_of(page))):
        if _DOTTED.match(span):
            parts = span.split(".")
            if parts[0] != "controlplane":
                parts = ["controlplane", *parts]
            found = module_file(parts)
            if found is None:
                missing.append(span)
                continue
            path, rest = found
            if rest and not all(defines(text_of(path), name) for name in rest[:2]):
                missing.append(span)
        elif m := _CLASS_ATTR.match(span):
            owner, attr = m.groups()
            if owner in classes and not any(defines(text_of(p), attr) for p in classes[owner]):
                missing.append(span)
    assert missing == [], f"{page.name}: modules, functions or attributes that do not exist"


@pytest.mark.parametrize("page", PAGES, ids=page_ids())
def test_every_mermaid_block_is_a_diagram_with_content(page: Path) -> None:
    kinds = ("flowchart", "graph", "stateDiagram-v2", "sequenceDiagram")
    for body in mermaid_blocks(text_of(page)):
        lines = [
            line.strip()
            for line in body.splitlines()
            if line.strip() and not line.strip().startswith("%%")
        ]
        assert lines, f"{page.name}: an empty Mermaid block"
        assert lines[0].startswith(kinds), f"{page.name}: unknown diagram {lines[0]!r}"
        assert len(lines) > 1, f"{page.name}: a Mermaid diagram with nothing in it"


def test_the_lifecycle_diagram_has_exactly_the_transitions_of_the_table() -> None:
    from controlplane.domain.agents.lifecycle import TRANSITIONS, Phase

    [diagram] = [
        b for b in mermaid_blocks(text_of(ARCH / "state-machines.md")) if "%% lifecycle" in b
    ]
    edges = set()
    for line in diagram.splitlines():
        m = re.match(r"^\s*(\w+)\s*-->\s*(\w+)\s*(?::.*)?$", line)
        if m:
            edges.add((Phase(m.group(1)), Phase(m.group(2))))
    table = {(src, dst) for src, targets in TRANSITIONS.items() for dst in targets}
    assert edges == table


def diagram_edges(marker: str) -> set[tuple[str, str]]:
    """The `A --> B` edges between states (not `[*]`) of the one Mermaid block marked `marker`."""
    [diagram] = [b for b in mermaid_blocks(text_of(ARCH / "state-machines.md")) if marker in b]
    edges = set()
    for line in diagram.splitlines():
        m = re.match(r"^\s*(\w+)\s*-->\s*(\w+)\s*(?::.*)?$", line)
        if m:
            edges.add((m.group(1), m.group(2)))
    return edges


def test_the_run_diagram_has_exactly_the_transitions_of_the_table() -> None:
    from controlplane.domain.runs.lifecycle import TRANSITIONS

    table = {(str(src), str(dst)) for src, targets in TRANSITIONS.items() for dst in targets}
    assert diagram_edges("%% runs") == table


def test_the_approval_diagram_has_exactly_the_transitions_of_the_table() -> None:
    from controlplane.domain.runs.approvals import TRANSITIONS

    table = {(str(src), str(dst)) for src, targets in TRANSITIONS.items() for dst in targets}
    assert diagram_edges("%% approvals") == table


def test_the_outbox_diagram_names_every_outbox_state_and_no_other() -> None:
    from controlplane.domain.events.envelope import OutboxState

    [diagram] = [b for b in mermaid_blocks(text_of(ARCH / "state-machines.md")) if "%% outbox" in b]
    names = set()
    for line in diagram.splitlines():
        m = re.match(r"^\s*(\[\*\]|\w+)\s*-->\s*(\w+)", line)
        if m:
            names |= {m.group(1), m.group(2)} - {"[*]"}
    assert names == {"Persisted", *OutboxState.ALL}


def test_the_error_table_is_the_catalogue() -> None:
    from controlplane.api.errors import CATALOGUE

    rows = re.findall(
        r"^\| `([A-Z_]+)` \| (\d{3}) \| `([A-Z_]+)` \|",
        text_of(ARCH / "api-compatibility.md"),
        re.M,
    )
    table = {code: (int(status), grpc) for code, status, grpc in rows}
    assert len(table) == len(rows), "a code is listed twice"
    assert table == {code: (s.http_status, s.grpc_code) for code, s in CATALOGUE.items()}


def test_the_crd_column_describes_what_is_built() -> None:
    text = text_of(ARCH / "api-compatibility.md")
    headers = [line for line in text.splitlines() if line.startswith("| ") and "CRD" in line]
    assert headers, "the matrix has a CRD column"
    # The operator is built (issue 6): no header may mark the column as pending any more.
    assert not [h for h in headers if "issue 6" in h]


def test_every_metric_named_is_exported() -> None:
    from prometheus_client import REGISTRY

    from controlplane.data.outbox.writer import OUTBOX_CHANNEL

    known = exported_series() | {family.name for family in REGISTRY.collect()}
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"\bagentos_[a-z0-9_]+\b", text_of(page)))
    assert named - {OUTBOX_CHANNEL} <= known


def test_every_alert_named_is_defined_and_every_alert_is_in_the_slo_page() -> None:
    defined = {
        rule["alert"]
        for path in RULES_DIR.glob("*.rules.yml")
        for group in yaml.safe_load(text_of(path))["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"\bAgentOS[A-Z]\w+\b", text_of(page)))
    assert named <= defined
    assert defined <= set(re.findall(r"\bAgentOS[A-Z]\w+\b", text_of(ARCH / "slos.md")))


def test_every_adr_is_listed_in_the_adr_index() -> None:
    index = text_of(ADR / "README.md")
    linked = set(re.findall(r"\]\(([0-9]{4}-[^)#]+\.md)\)", index))
    assert {p.name for p in ADRS} <= linked


def test_adrs_are_numbered_from_one_without_gaps_and_titled_with_their_number() -> None:
    numbers = [int(p.name[:4]) for p in ADRS]
    assert numbers == list(range(1, len(ADRS) + 1))
    for path in ADRS:
        first = text_of(path).splitlines()[0]
        assert first.startswith(f"# {int(path.name[:4])}. "), path.name


def test_every_architecture_page_is_listed_in_its_index() -> None:
    index = text_of(ARCH / "README.md")
    linked = set(_LINK.findall(index))
    assert {p.name for p in PAGES if p.name != "README.md"} <= linked


BRIEF_CITATION = "DESIGN" + " §"  # spelled apart, so this file does not cite it


def test_nothing_cites_the_design_brief_by_section() -> None:
    """The project's own pages hold the rules (adr/0012-layout.md): code and docs cite
    architecture/ and adr/, never the brief's sections."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    citing = [
        name
        for name in tracked
        if (ROOT / name).is_file()
        and name.endswith((".py", ".md", ".yml", ".yaml", ".json", ".proto", ".sh", ".toml"))
        and BRIEF_CITATION in (ROOT / name).read_text(errors="replace")
    ]
    assert citing == []
