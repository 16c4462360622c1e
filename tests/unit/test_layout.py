"""The import rules of the layout, read from the code (every import statement, including those
inside functions):

- `hubspoke/` (what both sides share) imports neither `hub` nor `spoke`;
- `hub/` never imports `spoke`;
- every package is a directory with an `__init__.py` (no namespace packages by accident);
- no module under tests/, bench/ or scripts/ imports a test module (`test_*`) or a conftest;
  what tests, bench and demo share lives in `tests/lab` (the simulator is its own package,
  `tests/sim`), so under tests/ everything else is a test module, a conftest or an `__init__`;
- bench/ and scripts/ import from tests only `tests.lab`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"hubspoke": ("hub", "spoke"), "hub": ("spoke",)}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) for every import in `path` (a file of the tree at `root`); relative
    imports resolved to absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
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


def violations(top: str, root: Path = ROOT) -> list[str]:
    banned = FORBIDDEN[top]
    found = []
    for path in sorted((root / top).rglob("*.py")):
        for line, module in imported_modules(path, root):
            if module.split(".")[0] in banned:
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("top", sorted(FORBIDDEN))
def test_import_rules(top: str) -> None:
    assert violations(top) == []


def test_the_rules_see_an_import_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "hubspoke").mkdir()
    (tmp_path / "hubspoke" / "probe.py").write_text(
        "def f() -> None:\n    from spoke import main\n"
    )
    assert violations("hubspoke", tmp_path) == [
        "hubspoke/probe.py:2 imports spoke",
        "hubspoke/probe.py:2 imports spoke.main",
    ]


@pytest.mark.parametrize("top", ["hubspoke", "hub", "spoke", "tests", "bench", "scripts"])
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


# -- tests, bench and demo ------------------------------------------------------------------------

TEST_TOPS = ("tests", "bench", "scripts")
HELPER_PACKAGES = ("tests/lab", "tests/sim")


def python_files(*tops: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for top in tops for p in (root / top).rglob("*.py"))


def imports_of_test_modules(root: Path = ROOT) -> list[str]:
    """Every import, under tests/, bench/ and scripts/, of a test module or a conftest."""
    return [
        f"{path.relative_to(root)}:{line} imports {module}"
        for path in python_files(*TEST_TOPS, root=root)
        for line, module in imported_modules(path, root)
        if module.split(".")[0] in TEST_TOPS
        and (module.split(".")[-1].startswith("test_") or module.split(".")[-1] == "conftest")
    ]


def test_no_module_imports_a_test_module() -> None:
    assert imports_of_test_modules() == []


def test_the_rule_sees_a_test_module_imported(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "probe.py").write_text(
        "def f() -> None:\n    from tests.system import test_cluster\nfrom . import conftest\n"
    )
    assert sorted(imports_of_test_modules(tmp_path)) == [
        "bench/probe.py:2 imports tests.system.test_cluster",
        "bench/probe.py:3 imports bench.conftest",
    ]


def test_helpers_live_in_the_lab() -> None:
    """Under tests/, outside tests/lab and tests/sim: test modules, conftests, `__init__`s."""
    strays = [
        str(path.relative_to(ROOT))
        for path in python_files("tests")
        if not any(path.is_relative_to(ROOT / h) for h in HELPER_PACKAGES)
        and not path.name.startswith("test_")
        and path.name not in ("conftest.py", "__init__.py")
    ]
    assert strays == []


def test_bench_and_scripts_import_only_the_lab_from_tests() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in python_files("bench", "scripts")
        for line, module in imported_modules(path)
        if module.split(".")[0] == "tests"
        and module.split(".")[:2] != ["tests", "lab"]
        and module != "tests"
    ]
    assert found == []
