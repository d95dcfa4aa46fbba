"""The suite's layout holds: tests share helpers through `tests.support`, never each other.

A test module that imports another drags the other's fixtures and collection
along, breaks when the other is renamed, and hides where a helper lives. The
benchmarks import the same support as the tests, as a package run with
`python -m bench.NAME` from the repository root, never by editing `sys.path`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BENCH = ROOT / "bench"
TEST_MODULES = {path.stem for path in TESTS.glob("test_*.py")} | {"conftest"}
BENCHMARKS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for each import in `path`, with `from . import x` as `.x`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


def imports_a_test_module(module: str) -> bool:
    parts = module.lstrip(".").split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return bool(parts) and parts[0] in TEST_MODULES


def python_files(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*.py"))


def test_no_test_module_or_helper_imports_a_test_module() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in python_files(TESTS, BENCH)
        for line, module in imported_modules(path)
        if imports_a_test_module(module)
    ]
    assert not found, "import shared helpers from tests.support instead:\n" + "\n".join(found)


def test_nothing_in_tests_or_bench_touches_sys_path() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in python_files(TESTS, BENCH)
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]
    assert not found, "sys.path is used at:\n" + "\n".join(found)


def test_a_helper_module_is_not_collected_as_tests() -> None:
    stray = [p.name for p in TESTS.glob("*.py") if p.stem not in TEST_MODULES | {"__init__"}]
    assert not stray, f"helpers belong in tests/support/: {stray}"


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_starts_as_a_module_from_the_repository_root(name: str) -> None:
    """`python -m bench.NAME --help` imports all of the benchmark (chatui, tests.support)."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ") and "--json" in done.stdout
