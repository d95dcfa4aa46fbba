"""Configuration: TOML file, environment, command-line flags.

Precedence: flags > environment variables > config file > defaults. Every key
is declared once, in the dataclasses below, with its type; an unknown key or
a value of the wrong type is a `ConfigError` naming the file, the key and the
problem. `config.example.toml` at the top of the repository documents them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import platformdirs

PROVIDERS = ("local", "openai", "anthropic")
# What the model reads in place of a reply the user stopped (`interrupted_note`).
DEFAULT_INTERRUPTED_NOTE = "[The user interrupted your previous reply; it is not shown.]"
KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}  # Section: variable.
SECRET_ENV = tuple(KEY_ENV.values())  # Never passed on to a tool's process.
TOOL_CHOICES = ("auto", "required", "none")
INTERRUPTED_REPLIES = ("drop", "keep")  # What the model is sent of a reply the user stopped.
CONTINUE_WAYS = ("auto", "prefill", "instruction")  # How a remote model continues a reply.
DEFAULT_ESCAPE_DELAY_MS = 10  # How long a lone ESC byte waits for the rest of a sequence.
CONFIG_ENV = "CHATUI_CONFIG"


class ConfigError(Exception):
    """A problem with the configuration, phrased for the user."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {problem}" if key else f"{where}{problem}")


@dataclass
class LocalConfig:
    """The in-process llama.cpp model."""

    model_path: str = ""  # Empty: the bundled default model.
    n_ctx: int = 4096
    n_threads: int = 0  # Generation threads; 0: every core but one (left to the UI).
    n_batch: int = 128
    n_ubatch: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    max_tokens: int = 1024
    seed: int = -1
    chat_template: str = ""  # Empty: the GGUF's own template, else the Gemma format.
    tool_choice: str = "auto"  # "auto", "required" (the first reply of a turn) or "none".


@dataclass
class OpenAIConfig:
    api_key: str = ""
    base_url: str = ""
    model: str = "gpt-4o-mini"
    max_tokens: int = 2048
    context_window: int = 0  # Tokens; 0: as the server reports it, or as its errors tell.
    temperature: float = 0.7
    continue_with: str = "auto"  # How "Continue" goes on: CONTINUE_WAYS; auto: per server.


@dataclass
class AnthropicConfig:
    api_key: str = ""
    base_url: str = ""
    model: str = "claude-sonnet-4-5"
    max_tokens: int = 2048  # The Messages API requires it. (anthropic 2.x takes no temperature.)
    context_window: int = 0  # Tokens; 0: learned from the API's "prompt is too long" errors.
    thinking_budget: int = 0  # Extended thinking's budget: 0 off, else 1024 to max_tokens - 1.
    continue_with: str = "auto"  # CONTINUE_WAYS; auto: prefill, or instruction while thinking.


TOOL_NAMES = ("current_datetime", "calculate", "read_file", "list_directory", "shell")


@dataclass
class ToolsConfig:
    """The tools the model may call, and which ask the user first."""

    enabled: list[str] = field(default_factory=lambda: list(TOOL_NAMES))
    ask: list[str] = field(default_factory=lambda: ["read_file", "list_directory"])
    workspace: str = ""  # The file and shell tools' root; "": the directory chatui starts in.
    max_steps: int = 10  # Model requests in one turn.
    timeout: float = 30.0  # Seconds a tool may run (not the shell: shell_timeout).
    shell_timeout: float = 120.0
    output_limit: int = 20_000  # Characters of a file or of a command's output.


MCP_SERVER_NAME = r"[A-Za-z0-9_-]{1,24}"  # It is part of each of its tools' names (64 at most).


@dataclass
class McpServerConfig:
    """One MCP server from `[mcp.servers.NAME]`: a command run over stdio, or a URL.

    Only the user's config file names servers, never the directory chatui
    runs in. A stdio server's environment is a few harmless variables (HOME,
    PATH, ...), then `env_inherit`'s names taken from chatui's own
    environment, then `env`: an API key reaches a server only if named here.
    """

    name: str = ""  # The table's NAME; set when the config is read.
    command: str = ""  # stdio: the program, found on PATH, or a path (`~`: the home).
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_inherit: list[str] = field(default_factory=list)  # Variables passed on from chatui's.
    cwd: str = ""  # stdio: where it runs (`~`: the home); "": the directory chatui starts in.
    url: str = ""  # Streamable HTTP: the endpoint, http:// or https://.
    headers: dict[str, str] = field(default_factory=dict)  # HTTP: sent with every request.
    enabled: bool = True
    ask: bool = True  # Its tools ask the user before each call...
    ask_tools: dict[str, bool] = field(default_factory=dict)  # ...unless named here (tool: ask).
    timeout: float = 60.0  # Seconds a call may run.
    start_timeout: float = 30.0  # Seconds to start and list its tools.

    @property
    def transport(self) -> str:
        return "http" if self.url else "stdio"

    def asks(self, tool: str) -> bool:
        """Whether a call of `tool` (the server's own name for it) needs the user's approval."""
        return self.ask_tools.get(tool, self.ask)


@dataclass
class McpConfig:
    """The user's MCP servers, by name."""

    servers: dict[str, McpServerConfig] = field(default_factory=dict)


@dataclass
class Config:
    provider: str = "local"
    model: str = ""  # Overrides the provider section's model when set.
    system_prompt: str = "You are a helpful assistant."
    theme: str = "textual-dark"
    interrupted_note: str = DEFAULT_INTERRUPTED_NOTE
    interrupted_reply: str = "drop"  # INTERRUPTED_REPLIES: a stopped reply dropped, or sent.
    idle_timeout: float = 60.0
    escape_delay_ms: int = DEFAULT_ESCAPE_DELAY_MS  # Env ESCDELAY (ncurses' name) overrides.
    db_path: str = ""  # Empty: the platform's user data dir.
    local: LocalConfig = field(default_factory=LocalConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    anthropic: AnthropicConfig = field(default_factory=AnthropicConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    mcp: McpConfig = field(default_factory=McpConfig)

    def secrets(self) -> list[str]:
        """Values that must never be shown, logged or stored."""
        return [s for s in (self.openai.api_key, self.anthropic.api_key) if s]


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("chatui", appauthor=False)) / "config.toml"


def load_config(
    path: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Load the config file (if any), then apply environment variables and flags.

    `path` None means `$CHATUI_CONFIG` or the default location, where a missing
    file is fine; an explicitly given file must exist.
    """
    env = dict(os.environ) if env is None else env
    explicit = path is not None or bool(env.get(CONFIG_ENV))
    path = path or Path(env.get(CONFIG_ENV) or default_config_path())
    config = Config()
    source = str(path)
    if path.exists() or explicit:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, "", "no such file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(source, "", f"cannot read it ({error})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(source, "", f"not valid TOML: {error}") from None
        _apply(config, data, source, "")
    _apply_env(config, env)
    if overrides:
        _apply(config, {k: v for k, v in overrides.items() if v is not None}, "command line", "")
    _validate(config, source)
    return config


def _apply(target: Any, data: dict[str, Any], source: str, prefix: str) -> None:
    hints = get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    if isinstance(target, McpServerConfig):
        names.discard("name")  # The table's NAME, never a key inside it.
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(source, dotted, f"unknown key (known: {', '.join(sorted(names))})")
        expected = hints[key]
        current = getattr(target, key)
        if expected == dict[str, McpServerConfig]:
            setattr(target, key, _servers(value, source, dotted))
            continue
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(source, dotted, "expected a table, like [" + dotted + "]")
            _apply(current, value, source, dotted + ".")
            continue
        setattr(target, key, _coerce(value, expected, source, dotted))


def _servers(data: Any, source: str, key: str) -> dict[str, McpServerConfig]:
    """`[mcp.servers.NAME]` tables, each an `McpServerConfig` named NAME."""
    if not isinstance(data, dict):
        raise ConfigError(source, key, "expected tables, like [" + key + ".NAME]")
    servers: dict[str, McpServerConfig] = {}
    for name, table in data.items():
        if not re.fullmatch(MCP_SERVER_NAME, name):
            raise ConfigError(
                source,
                f"{key}.{name}",
                "a server's name is 1 to 24 letters, digits, '_' or '-' (it is part of "
                "its tools' names)",
            )
        if not isinstance(table, dict):
            raise ConfigError(source, f"{key}.{name}", f"expected a table, like [{key}.{name}]")
        if "name" in table:
            raise ConfigError(source, f"{key}.{name}.name", "unknown key (the table names it)")
        server = McpServerConfig()
        _apply(server, table, source, f"{key}.{name}.")
        server.name = name
        # `~` is the user's home, as in the other paths of the config (a shell would say so).
        server.command = os.path.expanduser(server.command)
        server.cwd = os.path.expanduser(server.cwd)
        servers[name] = server
    return servers


def _coerce(value: Any, expected: Any, source: str, key: str) -> Any:
    try:
        return _coerced(value, expected, source, key)
    except ConfigError as error:
        # A key in the wrong shape is still a key: never shown. A server's args, env and
        # headers may hold one too.
        if key.endswith("api_key") or key.startswith("mcp."):
            problem = error.problem.partition(", got ")[0]
            raise ConfigError(source, key, f"{problem}, got a {type(value).__name__}") from None
        raise


def _coerced(value: Any, expected: Any, source: str, key: str) -> Any:
    if expected in (dict[str, str], dict[str, bool]):
        each: type = str if expected == dict[str, str] else bool
        if not isinstance(value, dict) or not all(isinstance(v, each) for v in value.values()):
            what = "strings" if each is str else "true or false"
            raise ConfigError(source, key, f"expected a table of {what}")
        return dict(value)
    if expected == list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(source, key, f"expected a list of strings, got {value!r}")
        return list(value)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(source, key, f"expected a finite number, got {value!r}")
    if expected is int and isinstance(value, bool):
        raise ConfigError(source, key, f"expected an integer, got {value!r}")
    if not isinstance(value, expected):
        kind = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
        raise ConfigError(source, key, f"expected {kind.get(expected, expected)}, got {value!r}")
    return value


def _apply_env(config: Config, env: dict[str, str]) -> None:
    for section, variable in KEY_ENV.items():
        if key := env.get(variable):
            _check_key(key, "environment", variable)
            getattr(config, section).api_key = key
    if url := env.get("OPENAI_BASE_URL"):
        config.openai.base_url = url
    if url := env.get("ANTHROPIC_BASE_URL"):
        config.anthropic.base_url = url
    if delay := env.get("ESCDELAY", "").strip():
        try:
            config.escape_delay_ms = int(delay)
        except ValueError:
            raise ConfigError(
                "environment", "ESCDELAY", f"expected milliseconds, got {delay!r}"
            ) from None


def _validate(config: Config, source: str) -> None:
    if config.provider not in PROVIDERS:
        raise ConfigError(source, "provider", f"must be one of {', '.join(PROVIDERS)}")
    if config.interrupted_reply not in INTERRUPTED_REPLIES:
        raise ConfigError(
            source, "interrupted_reply", f"must be one of {', '.join(INTERRUPTED_REPLIES)}"
        )
    if config.idle_timeout <= 0:
        raise ConfigError(source, "idle_timeout", "must be more than 0 seconds")
    if not 1 <= config.escape_delay_ms <= 2000:
        raise ConfigError(source, "escape_delay_ms", "must be from 1 to 2000 milliseconds")
    local = config.local
    for key in ("n_ctx", "n_batch", "n_ubatch", "max_tokens"):
        if getattr(local, key) <= 0:
            raise ConfigError(source, f"local.{key}", "must be more than 0")
    if local.n_threads < 0:
        raise ConfigError(source, "local.n_threads", "must be 0 (automatic) or more")
    if local.tool_choice not in TOOL_CHOICES:
        raise ConfigError(source, "local.tool_choice", f"must be one of {', '.join(TOOL_CHOICES)}")
    if local.n_ubatch > local.n_batch:
        raise ConfigError(source, "local.n_ubatch", "must not be larger than local.n_batch")
    if local.max_tokens > local.n_ctx * 3 // 4:
        raise ConfigError(
            source,
            "local.max_tokens",
            "must be at most three quarters of local.n_ctx (the conversation needs the rest)",
        )
    for section in ("openai", "anthropic"):
        remote = getattr(config, section)
        if remote.max_tokens <= 0:
            raise ConfigError(source, f"{section}.max_tokens", "must be more than 0")
        if remote.continue_with not in CONTINUE_WAYS:
            raise ConfigError(
                source, f"{section}.continue_with", f"must be one of {', '.join(CONTINUE_WAYS)}"
            )
        if remote.context_window and remote.context_window <= remote.max_tokens:
            raise ConfigError(
                source,
                f"{section}.context_window",
                f"must be 0 (unknown) or more than {section}.max_tokens",
            )
    _validate_tools(config.tools, source)
    for server in config.mcp.servers.values():
        _validate_mcp_server(server, source)
    for section in KEY_ENV:  # A key from the environment was checked as it was read.
        _check_key(getattr(config, section).api_key, source, f"{section}.api_key")
    anthropic = config.anthropic
    if anthropic.thinking_budget and not 1024 <= anthropic.thinking_budget < anthropic.max_tokens:
        raise ConfigError(
            source,
            "anthropic.thinking_budget",
            "must be 0 (off), or at least 1024 and less than anthropic.max_tokens",
        )
    if anthropic.thinking_budget and anthropic.continue_with == "prefill":
        raise ConfigError(
            source,
            "anthropic.continue_with",
            'cannot be "prefill" while anthropic.thinking_budget is on: the API refuses a '
            'prefilled reply with extended thinking; use "auto" or "instruction"',
        )


def _validate_mcp_server(server: McpServerConfig, source: str) -> None:
    key = f"mcp.servers.{server.name}"
    if server.command.strip() and server.url:
        raise ConfigError(source, key, "give either command (stdio) or url (HTTP), not both")
    if not server.command.strip() and not server.url:
        raise ConfigError(
            source, key, "give command (a program run over stdio) or url (a Streamable HTTP server)"
        )
    if server.url and (problem := _url_problem(server.url)):
        raise ConfigError(source, f"{key}.url", problem)
    for name, value in server.headers.items():  # Never quoted: a header may hold a token.
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ConfigError(source, f"{key}.headers", "a header's name is letters, digits, '-'")
        if any(unicodedata.category(char) == "Cc" and char != "\t" for char in value):
            raise ConfigError(
                source, f"{key}.headers.{name}", "contains a control character (a line break?)"
            )
    for field_name, names in (("env", list(server.env)), ("env_inherit", server.env_inherit)):
        if any(not name or "=" in name or "\0" in name for name in names):
            raise ConfigError(
                source, f"{key}.{field_name}", "each variable's name must be non-empty, without '='"
            )
    if server.url and (server.args or server.env or server.env_inherit or server.cwd):
        raise ConfigError(source, key, "args, env, env_inherit and cwd are for a command")
    if server.command.strip() and server.headers:
        raise ConfigError(source, f"{key}.headers", "headers are for a url")
    for name in ("timeout", "start_timeout"):
        if getattr(server, name) <= 0:
            raise ConfigError(source, f"{key}.{name}", "must be more than 0 seconds")


def _url_problem(url: str) -> str:
    """What keeps `url` from being an http(s) URL with a host that a request line can carry."""
    general = "must be an http:// or https:// URL with a host, without spaces or control characters"
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in url):
        return general
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return general
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return general
    try:
        port = parts.port  # One that is not a number (or out of range) raises ValueError.
    except ValueError:
        port = 0
    if port == 0:
        return "must be an http:// or https:// URL whose port is a number from 1 to 65535"
    return ""


def _check_key(key: str, source: str, name: str) -> None:
    """Refuse a key that cannot go in an HTTP header, naming where it is and never quoting it.

    Such a key fails every request, in a way the SDKs report as a
    connection or encoding failure that blames the server; said here, it
    points at the key. A control character is usually a pasted line break,
    a non-ASCII one a typographic quote.
    """
    for position, char in enumerate(key, 1):
        if unicodedata.category(char) == "Cc":
            what = CONTROL_NAMES.get(char, f"a control character (U+{ord(char):04X})")
        elif not char.isascii():
            named = f" {unicodedata.name(char)}" if unicodedata.name(char, "") else ""
            what = f"a character that is not ASCII (U+{ord(char):04X}{named})"
        else:
            continue
        raise ConfigError(
            source,
            name,
            f"contains {what} at character {position}: an API key is one line of "
            "plain ASCII; copy it again",
        )


CONTROL_NAMES = {
    "\n": "a line break",
    "\r": "a line break (carriage return)",
    "\t": "a tab",
    "\0": "a NUL character",
}


def _validate_tools(tools: ToolsConfig, source: str) -> None:
    for key in ("enabled", "ask"):
        for name in getattr(tools, key):
            if name not in TOOL_NAMES:
                known = ", ".join(TOOL_NAMES)
                raise ConfigError(source, f"tools.{key}", f"unknown tool {name!r} (known: {known})")
    if tools.max_steps < 1:
        raise ConfigError(source, "tools.max_steps", "must be 1 or more")
    for key in ("timeout", "shell_timeout"):
        if getattr(tools, key) <= 0:
            raise ConfigError(source, f"tools.{key}", "must be more than 0 seconds")
    if tools.output_limit < 100:
        raise ConfigError(source, "tools.output_limit", "must be at least 100 characters")
