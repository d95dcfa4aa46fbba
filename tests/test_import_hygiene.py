"""The core (turns, history, store, config, session, providers) loads no UI library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = ROOT / "chatui" / "providers"
TOOLS = ROOT / "chatui" / "tools"
CORE = [
    "chatui.cancel",
    "chatui.config",
    "chatui.history",
    "chatui.messages",
    "chatui.session",
    "chatui.store",
    "chatui.turn",
    "chatui.tools",
]
# Every provider module and package, so that a new provider is checked as it comes.
PROVIDER_MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PROVIDERS.rglob("*.py")
)
UI = ("textual", "rich")

CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
wanted = sys.argv[2:]
inside = tuple(w + "." for w in wanted)
print(*sorted(n for n in sys.modules if n in wanted or n.startswith(inside)))
"""


def loaded(module: str, *packages: str) -> list[str]:
    """The modules of `packages` that importing `module` loads, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK, module, *packages],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_provider_modules_are_found() -> None:
    assert {"chatui.providers", "chatui.providers.base", "chatui.providers.local"} <= set(
        PROVIDER_MODULES
    )
    assert "chatui.providers.local.provider" in PROVIDER_MODULES


@pytest.mark.parametrize("module", CORE + PROVIDER_MODULES)
def test_importing_loads_neither_textual_nor_rich(module: str) -> None:
    assert loaded(module, *UI) == []


def test_the_screens_do_not_import_the_app() -> None:
    assert loaded("chatui.screens.chat", "chatui.app") == []


def test_the_tools_do_not_import_the_turn() -> None:
    """The tools speak to a turn through `chatui.tools.protocol`: no import of `chatui.turn`.

    Not at load time, nor anywhere in their source (a lazy import, a type-checking one).
    """
    assert loaded("chatui.tools", "chatui.turn") == []
    found = []
    for path in sorted(TOOLS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            else:
                continue
            if any(name == "chatui.turn" or name.startswith("chatui.turn.") for name in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == [], "the tools import chatui.turn at:\n" + "\n".join(found)
