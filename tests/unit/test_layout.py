"""The three import rules of the layout, read from the code (every import statement, including
those inside functions):

- `hubspoke/` (what both sides share) imports neither `hub` nor `spoke`;
- `hub/` never imports `spoke`;
- every package is a directory with an `__init__.py` (no namespace packages by accident).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"hubspoke": ("hub", "spoke"), "hub": ("spoke",)}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in `path`; relative imports resolved to absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.append((node.lineno, base))
            # `from hub import x` imports hub.x
            out.extend((node.lineno, f"{base}.{a.name}") for a in node.names)
    return out


def violations(top: str) -> list[str]:
    banned = FORBIDDEN[top]
    found = []
    for path in sorted((ROOT / top).rglob("*.py")):
        for line, module in imported_modules(path):
            root = module.split(".")[0]
            if root in banned:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("top", sorted(FORBIDDEN))
def test_import_rules(top: str) -> None:
    assert violations(top) == []


def test_the_rules_see_an_import_inside_a_function(tmp_path: Path) -> None:
    path = ROOT / "hubspoke" / "_layout_probe_test_only.py"
    path.write_text("def f() -> None:\n    from spoke.main import main\n")
    try:
        assert any("_layout_probe_test_only" in v for v in violations("hubspoke"))
    finally:
        path.unlink()


@pytest.mark.parametrize("top", ["hubspoke", "hub", "spoke"])
def test_every_package_directory_has_an_init(top: str) -> None:
    missing = [
        str(d.relative_to(ROOT))
        for d in [ROOT / top, *(ROOT / top).rglob("*")]
        if d.is_dir()
        and d.name != "__pycache__"
        and any(d.glob("*.py"))
        and not (d / "__init__.py").exists()
    ]
    assert missing == []
