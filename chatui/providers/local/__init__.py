"""The local provider: a GGUF model run in-process by llama.cpp.

`provider` (the `LocalProvider`), `llama_engine` (the model's own thread),
`llama_runtime` (process-wide llama.cpp plumbing), `kv_cache` (the KV-cache
transaction), `chat_format` (history to prompt text) and `tool_markup`
(tool calls written as text). Nothing is imported here, so that the light
modules load without llama.cpp.
"""
