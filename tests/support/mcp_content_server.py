"""An MCP server (the SDK's `MCPServer`, over stdio) whose tools return every kind of content.

    python -m tests.support.mcp_content_server

Run it from the repository root (a stdio server's `cwd`). `content_config`
is its `[mcp.servers.NAME]` config. Its tools:

- `hostile()`: `HOSTILE`, text full of terminal control sequences and markup;
- `huge(size)`: `size` characters of "x" (text only);
- `huge_structured(size)`: the same, as MCPServer sends a `-> str` tool's
  answer: as text, and again as `{"result": ...}` structured content;
- `chart()`: `PNG`, a real PNG image, with a line of text before it;
- `table()`: a dict, which MCPServer sends as structured content and JSON text;
- `mixed()`: text, an image, a resource link and an embedded text resource;
- `fails()`: raises, which MCPServer sends as a result with `isError` ("Error executing
  tool fails");
- `steps(count, ack)`: reports progress 1..`count` ("step N" of `count`),
  and after each waits until the file `ack` holds N lines (the test writes
  one as each report reaches it), so no report can overtake the test; then
  answers "stepped";
- `say.it()`: answers "said with a dot"; `grow()` adds the tool `say_it`
  (answering "said with an underscore"), whose name reads the same once
  made safe for the APIs, and says that the tool list changed.
"""

import base64
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from chatui.config import McpServerConfig

ROOT = Path(__file__).resolve().parent.parent.parent
HOSTILE = (
    "\x1b[2J\x1b[H\x1b]52;c;ZXZpbA==\x07\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\"
    " [bold red]markup[/] **md** \x9b31m\u202eright-to-left"
)
ACK_DEADLINE = 20.0  # Seconds `steps` waits for the test's acknowledgement of a report.


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG image of `width` by `height` black pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + b"\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = png()


def content_config(name: str = "content", **fields: Any) -> McpServerConfig:
    """This server's config, run with chatui's Python from the repository root."""
    return McpServerConfig(
        name=name,
        command=sys.executable,
        args=["-m", "tests.support.mcp_content_server"],
        cwd=str(ROOT),
        **fields,
    )


def main() -> None:
    import anyio
    import mcp_types as mt
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.utilities.types import Image

    server = MCPServer("chatui-content")

    @server.tool(structured_output=False)
    def hostile() -> str:
        """Text full of terminal control sequences and markup."""
        return HOSTILE

    @server.tool(structured_output=False)
    def huge(size: int) -> str:
        """`size` characters of text."""
        return "x" * size

    @server.tool()
    def huge_structured(size: int) -> str:
        """`size` characters, as text and as structured content."""
        return "x" * size

    @server.tool(structured_output=False)
    def chart() -> list[Any]:
        """A chart, as a PNG image."""
        return ["The chart:", Image(data=PNG, format="png")]

    @server.tool()
    def table() -> dict[str, Any]:
        """A table, as structured content."""
        return {"rows": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}], "total": 2}

    @server.tool(structured_output=False)
    def mixed() -> mt.CallToolResult:
        """Every kind of content but audio."""
        return mt.CallToolResult(
            content=[
                mt.TextContent(text="Here:"),
                mt.ImageContent(data=base64.b64encode(PNG).decode(), mime_type="image/png"),
                mt.ResourceLink(
                    name="report", uri="file:///r.pdf", mime_type="application/pdf", size=2048
                ),
                mt.EmbeddedResource(
                    resource=mt.TextResourceContents(
                        uri="memo://1", mime_type="text/plain", text="memo text"
                    )
                ),
            ]
        )

    @server.tool()
    def fails() -> str:
        """Always fails."""
        raise ValueError("the disk is full")

    @server.tool()
    async def steps(count: int, ack: str, ctx: Context) -> str:
        """Report progress `count` times, each once the test has acknowledged the one before."""
        for step in range(1, count + 1):
            await ctx.report_progress(step, count, f"step {step}")
            deadline = time.monotonic() + ACK_DEADLINE
            while len(Path(ack).read_text().splitlines()) < step:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"report {step} was not acknowledged")
                await anyio.sleep(0.005)
        return "stepped"

    @server.tool(name="say.it")
    def say_with_a_dot() -> str:
        """Say it."""
        return "said with a dot"

    def say_with_an_underscore() -> str:
        """Say it otherwise."""
        return "said with an underscore"

    @server.tool()
    async def grow(ctx: Context) -> str:
        """Add the tool `say_it`, and say that the tool list changed."""
        server.add_tool(say_with_an_underscore, name="say_it")
        await ctx.session.send_tool_list_changed()
        await ctx.notify_tools_changed()
        return "grown"

    server.run()


if __name__ == "__main__":
    main()
