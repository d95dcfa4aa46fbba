"""The tools the model can call: the registry (`registry`), and the built-in ones (`builtin`)."""

from chatui.tools.builtin import BUILTIN_NAMES, build_registry
from chatui.tools.registry import Tool, ToolFailed, ToolRegistry

__all__ = ["BUILTIN_NAMES", "Tool", "ToolFailed", "ToolRegistry", "build_registry"]
