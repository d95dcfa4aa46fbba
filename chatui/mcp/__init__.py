"""The user's MCP servers: their tools beside the built-ins, stopped for real by Esc.

Imported lazily (the `mcp` SDK takes about a second to import), off the
event loop, after the first frame; nothing in the core imports it.

- `status`: what the rest of chatui sees of a server (state, tools, reason).
- `events`: what the manager tells its listeners (`StatusChanged`,
  `CancelSent`); like `status`, free of the SDK.
- `stdio`: chatui's own stdio transport: the server in a process group of
  its own, a minimal environment, stderr to a log file, the group killed on
  close.
- `server`: `McpServer`, one server's session, owned by one long-lived task;
  calls, their cancellation on the server, restarts.
- `manager`: `McpManager`, every configured server: started in the
  background, listed, restarted, closed on quit.
- `tools`: `McpTool`, a server's tool in the `ToolRegistry`.
- `results`: a `CallToolResult` as chatui's `ToolOutput`.
- `schema`: arguments validated against a tool's JSON Schema.
- `logs`: where servers' stderr and the SDK's own log go.
"""
