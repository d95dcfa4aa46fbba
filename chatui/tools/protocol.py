"""What a turn and its tools say to each other: the runner, the approval, the reports.

The turn (`chatui.turn`) runs the model's tool calls through a `ToolRunner`
(`chatui.tools.ToolRegistry`); the runner asks the user through an
`Approver` and tells the turn what a call is doing through a `ToolReport`.
It lives here, with the tools, so that they need nothing of the turn.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal, Protocol

from chatui.messages import ToolCallPart, ToolResult

if TYPE_CHECKING:
    from chatui.providers.base import ToolSpec


class Approval(Enum):
    """The user's answer to a tool call that needs approval."""

    ONCE = "once"  # Run this call.
    CONVERSATION = "conversation"  # Run it; the approver asks no more about this tool here.
    DENY = "deny"  # Do not run it.


Approver = Callable[[ToolCallPart], Awaitable[Approval]]
"""Asks the user whether a tool call may run (the chat screen's dialog, say).

It is awaited in the turn's own task, so a stop (`Turn.cancel()`, Esc)
cancels the wait like any other step of the turn: the call does not run and
gets a "cancelled by the user" result. An approver answering CONVERSATION
remembers it for that conversation and answers at once for that tool later.
"""


async def deny_all(call: ToolCallPart) -> Approval:
    """The approver where nobody can be asked: nothing that needs approval runs."""
    return Approval.DENY


ToolStatus = Literal["approval", "running"]
"""What a complete call is doing: waiting for the user's approval, or running."""


@dataclass(frozen=True)
class ToolProgress:
    """How far a running call is, as its tool says (an MCP server's `notifications/progress`).

    `total` None: unknown (only `done` grows). `message` is the tool's own
    text: untrusted, shown literally.
    """

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        """`done / total` within 0..1, or None if there is no meaningful total.

        A server's numbers may be infinite (JSON's 1e400) or NaN: no fraction then.
        """
        if self.total is None or not 0 < self.total < math.inf:
            return None
        fraction = self.done / self.total
        return min(max(fraction, 0.0), 1.0) if not math.isnan(fraction) else None


class ToolReport(Protocol):
    """Tells the turn (and so the UI) that a call waits for approval, runs, or has progressed.

    Awaited in the turn's own task, where the call runs: once the turn is
    stopped, nothing more is reported.
    """

    async def __call__(self, status: ToolStatus, progress: ToolProgress | None = None) -> None: ...


class ToolRunner(Protocol):
    """Runs the model's tool calls (`chatui.tools.ToolRegistry`)."""

    def specs(self) -> list[ToolSpec]: ...

    async def run(self, call: ToolCallPart, approve: Approver, report: ToolReport) -> ToolResult:
        """Run `call` and return its result; only a stop (cancellation) raises.

        A call that needs the user's approval reports "approval" and awaits
        `approve(call)` first; on DENY it does not run, and its result says so.
        It reports "running" as it starts.
        """
        ...
