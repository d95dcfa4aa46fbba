"""Lint, format and type checks, run with the suite so that one command checks everything.

Each runs the venv's own tool (`python -m ...`) from the repository root, where it
reads its configuration from pyproject.toml; a failure shows the tool's output.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` in the repository root; skip if the tool is missing."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (it comes with the `test` extra)")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    command = " ".join(result.args[2:])  # After `python -m`.
    assert result.returncode == 0, (
        f"`{command}` exited with {result.returncode}:\n{result.stdout}{result.stderr}"
    )


def test_ruff_finds_no_lint_errors() -> None:
    assert_clean(run_tool("ruff", "check", "."))


def test_ruff_format_leaves_every_file_unchanged() -> None:
    assert_clean(run_tool("ruff", "format", "--check", "."))


def test_mypy_strict_finds_no_type_errors() -> None:
    assert_clean(run_tool("mypy"))
