"""What the tests (and bench/) share; a test module imports from here, never from another.

- `app`: drive `ChatApp` with Pilot (`make_app`, `send`, `wait_until`, `press_and_settle`,
  `stop_midway`, `screen_text`), read what it stored (`conversation_rows`), date the
  stored conversations for a snapshot (`date_conversations`).
- `turns`: run a `Turn` with no app (`make_turn`, `run_turn`, `Sink`: the observer that records).
- `scripted`: `ScriptedProvider`, a provider that plays a script of stream events.
- `wire`, `openai_wire`, `anthropic_wire`: a real HTTP server on 127.0.0.1 that
  plays each API's stream to the real SDKs and records what they sent.
- `remote`: the remote providers on a wire server, the test key, waits and checks;
  `Wire` (`WIRES`): each API's framing, for a test written once for both.
- `local`: the local provider's config, a look into its KV cache, holds on llama.cpp.
- `tiny_gguf`: writes a tiny random-weight GGUF model for real llama.cpp.
- `clocks`: `LoopClock` (moves the event loop's time on) and `FakeClock`.
- `processes`: find, wait for and check processes a test started; a pty runner.
- `stops`: Esc at each stop point of a tool call with each provider (`Rig`:
  the three providers, scripted or the tiny GGUF) and the checks after it
  (`next_turn_is_accepted`).
- `mcp_servers`: MCP servers the tests run (the SDK's, over stdio or HTTP, and
  raw JSON-RPC ones that misbehave), recording what they saw; `mcp`: their
  configs, an HTTP server process, their records, `McpRig` (a manager alone).
- `headless`: the `chatui` command run headless as a subprocess (`Headless`:
  its output as it comes, signals, a reader that leaves, its exit code), its
  config and environment, and what it stored.
- `quit_target`, `crash_target`, `mcp_quit_target`, `headless_target`,
  `first_frame_target`: programs
  the tests run as subprocesses (`python -m tests.support.NAME`).

Fixtures shared by many modules (`store`, `config`, `tiny_model`,
`default_model_cache`, `fake_clock`, `utc`, `wire`, `server`, and `openai`,
`openai_server` and `openai_env` for what does not depend on the API) are in
`tests/conftest.py`.
"""
