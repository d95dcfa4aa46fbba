"""The built-in tools, and the registry the config asks for.

`current_datetime` and `calculate` are pure; `read_file` and
`list_directory` are confined to the workspace root (`tools.workspace`);
`shell` runs a command there and always asks first. Which are offered, and
which ask before each call, comes from the `[tools]` config table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from chatui.config import TOOL_NAMES, ToolsConfig
from chatui.tools import calculator, files
from chatui.tools.registry import Tool, ToolFailed, ToolRegistry
from chatui.tools.shell import run_shell

ALWAYS_ASK = frozenset({"shell"})
BUILTIN_NAMES = TOOL_NAMES


def current_datetime(timezone: str = "") -> str:
    """The current date, time and weekday.

    Args:
        timezone: An IANA time zone such as "Europe/Paris"; empty for the computer's own.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # 2 ms to import: not at startup.

    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolFailed(
            f"Unknown time zone {timezone!r}; use an IANA name like 'Asia/Tokyo'."
        ) from None
    now = datetime.now(zone).astimezone(zone)
    return now.strftime("%A %Y-%m-%d %H:%M:%S %Z (UTC%z)")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly as a calculator would.

    Args:
        expression: Numbers, + - * / // % ** (or ^), parentheses, pi, e, and sqrt, exp, log,
            log10, log2, sin, cos, tan, asin, acos, atan, abs, round, floor, ceil, min, max.
    """
    try:
        value = calculator.calculate(expression)
    except calculator.CalculationError as error:
        raise ToolFailed(f"Cannot calculate: {error}.") from None
    return repr(value)


def build_registry(config: ToolsConfig, *, workspace: Path | None = None) -> ToolRegistry:
    """The tools `config` enables, with approval as it asks (the shell always asks).

    `workspace` overrides `config.workspace` ("" there: the current directory).
    """
    root = files.Workspace(workspace or config.workspace or Path.cwd())

    def read_file(path: str) -> str:
        """Read a text file inside the workspace.

        Args:
            path: The file's path, relative to the workspace root.
        """
        return files.read_text_file(root, path, config.output_limit)

    def list_directory(path: str = ".") -> str:
        """List a directory inside the workspace: names, sizes, "/" after directories.

        Args:
            path: The directory's path, relative to the workspace root ("." for the root).
        """
        return files.list_directory(root, path)

    async def shell(command: str) -> str:
        """Run a shell command (/bin/sh) in the workspace; the user approves each one.

        Args:
            command: The command line. It has no input; its output and errors are returned.
        """
        result = await run_shell(
            command, cwd=root.root, timeout=config.shell_timeout, limit=config.output_limit
        )
        if result.timed_out:
            status = f"[timed out after {config.shell_timeout:g} s and was killed]"
        elif result.exit_code is None:
            status = "[exit code unknown]"
        else:
            status = f"[exit code {result.exit_code}]"
        if result.note:  # What it left running outside its process group.
            status = f"{status}\n{result.note}"
        output = result.output if result.output.endswith("\n") else f"{result.output}\n"
        return f"{output}{status}" if result.output else status

    functions: dict[str, Callable[..., Any]] = {
        "current_datetime": current_datetime,
        "calculate": calculate,
        "read_file": read_file,
        "list_directory": list_directory,
        "shell": shell,
    }
    registry = ToolRegistry()
    for name in config.enabled:
        ask = name in ALWAYS_ASK or name in config.ask
        # The shell's own timeout kills its group first; this one is the backstop.
        timeout = config.shell_timeout + 5 if name == "shell" else config.timeout
        registry.add(Tool(functions[name], needs_approval=ask, timeout=timeout))
    return registry
