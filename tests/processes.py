"""Find the processes a test started, from /proc, by a marker in their command line.

A shell tool's test runs `sleep <marker>`, where the marker is a duration of
about 30 s that no other process uses; `living(marker)` lists those still
alive (a zombie is dead: it only waits for its parent to read its status).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    pgid: int
    state: str
    cmdline: bytes

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


def marker() -> str:
    """A `sleep` duration of about 30 s that no other process here uses, e.g. "30.48213"."""
    return f"30.{random.randint(10000, 99999)}"


def processes() -> Iterator[Process]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # It ended meanwhile.
        fields = stat[stat.rindex(")") + 2 :].split()
        yield Process(int(entry.name), int(fields[2]), fields[0], cmdline)


def alive(pid: int) -> bool:
    """Whether process `pid` lives (not gone, not a zombie): one /proc read, cheap to poll."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def living(marker: str) -> list[Process]:
    """The living processes whose command line is `sleep <marker>`."""
    wanted = f"sleep\0{marker}\0".encode()
    return [p for p in processes() if p.cmdline == wanted and p.alive]


def group_alive(pgid: int) -> bool:
    """Whether any living process is in the group `pgid`."""
    return any(p.pgid == pgid and p.alive for p in processes())


async def until_running(marker: str, count: int, timeout: float = 10.0) -> list[Process]:
    """Wait until `count` sleepers with `marker` are alive; returns them."""
    async with asyncio.timeout(timeout):
        while len(found := living(marker)) < count:
            await asyncio.sleep(0.005)
    return found


def one_command_schema(command: str) -> dict:
    """A shell tool's schema that allows `command` alone (a grammar then writes it)."""
    return {
        "type": "object",
        "properties": {"command": {"enum": [command]}},
        "required": ["command"],
        "additionalProperties": False,
    }


def nested_sleepers(marker: str) -> str:
    """A command with a child and a grandchild, both `sleep <marker>` (30 s or more)."""
    return f"sh -c 'sleep {marker} & wait' & sleep {marker}; wait"
