"""chatui from the shell: one prompt answered on stdout, stored as the app stores it.

`chatui -p PROMPT`, `chatui -p -` and a prompt piped in (`echo hi | chatui`)
come here, with no screen and no Textual. The turn is the app's own: the
same `Session`, `Turn`, history, tool loop and store, the local model
prepared first, the configured MCP servers started (and waited for, so that
the first request offers their tools). The reply streams to stdout as plain
text, its control characters made visible (`chatui.sanitize`: model output
never drives the terminal), or, with `--json`, as one JSON object per event.
Errors and notices go to stderr, as sentences.

Nobody can approve a tool call here: a tool that asks first is denied, with
a result that tells the model (and the user) how to allow it, unless
`--allow-tool NAME` names it.

The stop: SIGINT (Ctrl+C) or SIGTERM stops the run the way Esc stops a
reply (`Turn.cancel()`: the stream is closed, the partial reply is stored
as interrupted), and so does a reader that closes stdout (`chatui -p … |
head -1`). A second signal ends the process at once. The exit codes are the
`EXIT_*` constants below.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import json
import os
import signal
import socket
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar

from chatui.config import Config
from chatui.messages import (
    Conversation,
    ModelResponse,
    ResponseState,
    ToolCallPart,
    ToolResult,
    Usage,
)
from chatui.providers.base import (
    Provider,
    ProviderError,
    TextDelta,
    ThinkingDelta,
    ToolCallEnd,
    ToolCallStart,
)
from chatui.providers.registry import create_provider
from chatui.sanitize import one_line, visible
from chatui.session import OPEN_ELSEWHERE, NoProvider, Session, SessionError
from chatui.store import Store
from chatui.threads import DaemonThreadExecutor, ExitDeadline
from chatui.tools.builtin import build_registry
from chatui.tools.protocol import Approval, Approver, ToolReport, ToolRunner
from chatui.tools.registry import ToolRegistry
from chatui.turn import ResponseStarted, ToolResultAdded, Turn, TurnEvent, TurnOutcome

if TYPE_CHECKING:
    from chatui.mcp.manager import McpManager  # The `mcp` SDK: imported only when configured.
    from chatui.providers.base import ToolSpec

EXIT_COMPLETE = 0  # The reply is complete (and written out).
EXIT_FAILED = 1  # The reply failed, or no provider could answer (the reason is on stderr).
EXIT_USAGE = 2  # Nothing was sent: a bad flag or config, an empty prompt, an unknown --resume.
EXIT_CLOSED = 128 + signal.SIGPIPE  # 141: stdout was closed before the reply was written out.
EXIT_SIGINT = 128 + signal.SIGINT  # 130: stopped by Ctrl+C; the partial reply is stored.
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143: stopped by SIGTERM; the partial reply is stored.

STOP_GRACE = 5.0  # Seconds a stop gets to store the partial reply and close; then it exits.
CLOSE_GRACE = 5.0  # Seconds closing the provider (saving the local model's cache) may take.
MCP_CLOSE_GRACE = 2.0  # Seconds the MCP servers get to close; then they are killed.
EXIT_GRACE = 2.0  # Seconds the interpreter may take to exit once the run is over.
MCP_START_SLACK = 5.0  # Seconds past a server's own start_timeout that its start is waited for.
PREFIX_LENGTH = 4  # Characters of an id that `--resume` accepts as a prefix, at least.

T = TypeVar("T")


class UsageError(Exception):
    """Nothing can be sent as asked; the message says why, for the user (exit 2)."""


def denied_text(name: str) -> str:
    """The result a tool call gets when it needs approval and nobody can give it."""
    return (
        f"Denied: {name} needs the user's approval and this run cannot ask for it. "
        f"Run chatui with --allow-tool {name} to allow it."
    )


# Which conversation, and the prompt


def find_conversation(store: Store, *, resume: str | None, last: bool) -> str | None:
    """The id of the conversation `--resume ID` (or a unique prefix of it) or `--continue` names.

    None if neither was given (a new conversation). Raises UsageError.
    """
    if last:
        found = store.latest_conversation_id()
        if found is None:
            raise UsageError("There is no conversation to continue yet: leave out --continue.")
        return found
    if resume is None:
        return None
    wanted = resume.strip().lower()
    if wanted and store.exists(wanted):
        return wanted
    shown = one_line(resume, 40)
    if len(wanted) < PREFIX_LENGTH:
        raise UsageError(
            f"--resume needs a conversation's id, or its first {PREFIX_LENGTH} characters "
            f"at least{f' ({shown} is too short)' if wanted else ''}. A run with --json names "
            "its conversation's id, and --continue goes on with the last conversation."
        )
    matches = [cid for cid, _title in store.conversations_starting_with(wanted)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(
            f"{len(matches)} conversations have an id starting with {shown}: give more of it."
        )
    raise UsageError(
        f"No conversation has the id {shown}. A run with --json names its conversation's "
        "id, and --continue goes on with the last conversation."
    )


def read_prompt(prompt: str | None) -> str:
    """The prompt: `-p PROMPT`'s, or stdin's (for `-p -` and a prompt piped in).

    Raises UsageError for an empty one.
    """
    if prompt is None or prompt == "-":
        stdin = sys.stdin
        if stdin is None:
            raise UsageError("There is no prompt: stdin is closed. Give one with -p PROMPT.")
        if stdin.isatty():  # Else it looks stuck: nothing says it waits for a prompt.
            say("Type the prompt, then press Ctrl+D at the start of a line to send it.")
        data = stdin.buffer.read()
        prompt = data.decode("utf-8", errors="replace").rstrip("\r\n")
    if not prompt.strip():
        raise UsageError("The prompt is empty: give one with -p PROMPT, or pipe it in.")
    return prompt


# The run


def run_headless(
    config: Config,
    store: Store,
    *,
    prompt: str,
    conversation_id: str | None = None,
    json_events: bool = False,
    allowed_tools: Sequence[str] = (),
    model_named: bool = False,
) -> int:
    """Answer `prompt` in a new conversation, or in `conversation_id`; the exit code.

    `model_named`: `--provider` or `--model` was given, so the conversation's
    own model (if any) gives way to it. Closes `store`. SIGINT and SIGTERM
    are this run's while it lasts.
    """
    stopper = Stopper()
    stopper.install()
    run = HeadlessRun(
        config,
        store,
        prompt=prompt,
        conversation_id=conversation_id,
        json_events=json_events,
        allowed_tools=allowed_tools,
        model_named=model_named,
        stopper=stopper,
    )
    code = EXIT_FAILED
    try:
        code = asyncio.run(run.main())
    finally:
        store.close()
        # A thread that never returns (a stuck tool) must not hold up the exit.
        ExitDeadline(kill_mcp_servers, code=code).set(EXIT_GRACE)
    return code


class Stopper:
    """SIGINT and SIGTERM stop the run as Esc stops a reply; a second one ends it at once.

    The handlers are plain ones, not the loop's: they run between two
    bytecodes of the main thread, wherever it is, and only hand the stop to
    the loop (or, the second time, end the process, even if the loop is stuck).
    """

    def __init__(self) -> None:
        self.code: int | None = None  # The exit code of the first stop, once there was one.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_stop: Callable[[], None] = lambda: None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None

    def install(self) -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._on_signal)

    def bind(self, loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None]) -> None:
        """Stops go to `on_stop` on `loop` from now on (at once, for one that came before).

        A signal the kernel hands another thread (llama.cpp's, say) only flags
        the main thread, which may sleep in the loop's `select`: the wakeup fd,
        read by the loop, wakes it so that the handler runs. Call `unbind` on
        the loop before it closes.
        """
        self._loop, self._on_stop = loop, on_stop
        self._wakeup = socket.socketpair()
        for end in self._wakeup:
            end.setblocking(False)
        signal.set_wakeup_fd(self._wakeup[1].fileno(), warn_on_full_buffer=False)
        loop.add_reader(self._wakeup[0].fileno(), self._drain)
        if self.code is not None:
            loop.call_soon(self._stop_on_the_loop)

    def unbind(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            signal.set_wakeup_fd(-1)
            self._loop.remove_reader(self._wakeup[0].fileno())
            for end in self._wakeup:
                end.close()
            self._wakeup = None

    def _drain(self) -> None:
        """Empty the wakeup fd: what matters is that the loop woke, and the handler ran."""
        with contextlib.suppress(OSError):
            assert self._wakeup is not None
            while self._wakeup[0].recv(4096):
                pass

    def stop(self, code: int) -> None:
        """Stop the run (on the loop's thread); the first stop's code is the exit code."""
        if self.code is None:
            self.code = code
            self._stop_on_the_loop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        code = 128 + signum
        if self.code is not None:
            kill_mcp_servers()  # At once: nothing else is waited for.
            os._exit(code)
        self.code = code
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # The loop is closed: the run is over.
                loop.call_soon_threadsafe(self._stop_on_the_loop)

    def _stop_on_the_loop(self) -> None:
        # However long the stop takes (a provider slow to close), the process ends.
        ExitDeadline(kill_mcp_servers, code=self.code or EXIT_FAILED).set(STOP_GRACE + EXIT_GRACE)
        self._on_stop()


def kill_mcp_servers() -> None:
    """SIGKILL every MCP server's process group, if any was started; imports nothing."""
    stdio = sys.modules.get("chatui.mcp.stdio")
    if stdio is not None:
        stdio.kill_now()


class Output:
    """stdout, written as events arrive; closed for good once its reader has left.

    Writes go straight to the file descriptor (nothing waits in a buffer).
    When the reader has gone (EPIPE), stdout becomes /dev/null, as Python's
    documentation advises, so that nothing fails at exit, and `on_closed`
    is called once.
    """

    def __init__(self, on_closed: Callable[[], None], on_failed: Callable[[OSError], None]) -> None:
        stream = sys.stdout
        self._fd = stream.fileno() if stream is not None else -1
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._on_closed, self._on_failed = on_closed, on_failed
        self.closed = self._fd < 0
        self.written = ""  # The last character written, if any.

    def write(self, text: str) -> None:
        if self.closed or not text:
            return
        data = text.encode(self._encoding, errors="replace")
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as error:
            self.closed = True
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._fd)
                os.close(devnull)
            if error.errno == errno.EPIPE:
                self._on_closed()
            else:
                self._on_failed(error)
            return
        self.written = text[-1]


def say(text: str) -> None:
    """A sentence for the user, on stderr (an unwritable stderr is no reason to fail).

    With stderr closed (`2>&-`), nowhere: `print` would write it to stdout, into the reply.
    """
    if sys.stderr is None:
        return
    with contextlib.suppress(OSError, ValueError):
        print(f"chatui: {text}", file=sys.stderr, flush=True)


class HeadlessTools:
    """The session's tools, where a call that needs approval is denied unless allowed.

    The approval itself is the observer's (`HeadlessRun.approve`); this only
    makes a denial's result say how to allow the tool.
    """

    def __init__(self, tools: ToolRunner) -> None:
        self.tools = tools

    def specs(self) -> list[ToolSpec]:
        return self.tools.specs()

    async def run(self, call: ToolCallPart, approve: Approver, report: ToolReport) -> ToolResult:
        result = await self.tools.run(call, approve, report)
        if result.state == "denied":
            result.content = denied_text(call.name)
        return result


class HeadlessRun:
    """One headless run: the session, the turn, stdout and stderr (see the module docstring).

    It is also the turn's observer: it prints the events, and answers
    approvals from `--allow-tool`.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        prompt: str,
        conversation_id: str | None,
        json_events: bool,
        allowed_tools: Sequence[str],
        model_named: bool,
        stopper: Stopper,
    ) -> None:
        self.config = config
        self.store = store
        self.prompt = prompt
        self.conversation_id = conversation_id
        self.json_events = json_events
        self.allowed = frozenset(allowed_tools)
        self.model_named = model_named
        self.stopper = stopper
        self.turn: Turn | None = None
        self.conversation: Conversation | None = None
        self.output = Output(on_closed=self._stdout_closed, on_failed=self._stdout_failed)
        self.registry: ToolRegistry | None = None
        self.mcp: McpManager | None = None
        self._stopped = asyncio.Event()
        self._current: ModelResponse | None = None  # The response streaming now.
        self._calls: dict[int, ToolCallPart] = {}  # Its calls, by the provider's index.
        self._responses = 0
        self._write_error: OSError | None = None
        self._first_item = 0  # Where this turn's items begin in the conversation.
        self._reported: set[str] = set()  # The ids of the tool results told of.

    # The stop

    def _stop(self) -> None:
        self._stopped.set()
        if self.turn is not None:
            self.turn.cancel()

    def _stdout_closed(self) -> None:
        self.stopper.stop(EXIT_CLOSED)

    def _stdout_failed(self, error: OSError) -> None:
        self._write_error = error
        self.stopper.stop(EXIT_FAILED)

    async def _unless_stopped(self, work: Awaitable[T]) -> T | None:
        """`work`'s result, or None as soon as the run is stopped (the work is then cancelled)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            return task.result()
        task.cancel()
        return None

    # The run

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        # Whatever is left blocked in `asyncio.to_thread` is never waited for on exit.
        loop.set_default_executor(DaemonThreadExecutor())
        self.stopper.bind(loop, self._stop)
        try:
            session = await self._session()
            if session is None:  # Stopped before there was a provider.
                return self.stopper.code or EXIT_FAILED
            try:
                return await self._answer(session)
            finally:
                await self._close(session)
        finally:
            self.stopper.unbind()

    async def _session(self) -> Session | None:
        """The session on the configured provider (made while MCP loads); None if stopped first."""
        mcp = self._load_mcp() if self._mcp_configured() else None
        made = await self._unless_stopped(asyncio.to_thread(_make_provider, self.config))
        provider, problem = made if made is not None else (None, None)
        tools = build_registry(self.config.tools)
        self.registry = tools
        session = Session(
            self.config,
            self.store,
            provider,
            provider_error=problem,
            tools=HeadlessTools(tools),
            on_notice=lambda text: say(one_line(text, 500)),
        )
        if self._stopped.is_set() and session.provider is None:
            say("Stopped before anything was sent.")
            return None
        if mcp is not None:
            await self._start_mcp(mcp)
        return session

    def _mcp_configured(self) -> bool:
        return any(server.enabled for server in self.config.mcp.servers.values())

    def _load_mcp(self) -> asyncio.Future[Any]:
        return asyncio.ensure_future(
            asyncio.to_thread(importlib.import_module, "chatui.mcp.manager")
        )

    async def _start_mcp(self, loading: asyncio.Future[Any]) -> None:
        """Start the MCP servers, and wait until each has listed its tools or failed.

        So the first request offers their tools. A server that fails is told
        on stderr; the run goes on without it.
        """
        try:
            manager = await self._unless_stopped(loading)
        except Exception as error:
            say(
                f"The MCP servers could not be started: chatui could not load the MCP library "
                f"({type(error).__name__}). Reinstall chatui to get it."
            )
            return
        if manager is None or self.registry is None:
            return
        config = self.config
        self.mcp = mcp = manager.McpManager(
            config.mcp,
            self.registry,
            secrets=config.secrets(),
            output_limit=config.tools.output_limit,
        )
        enabled = {name for name, server in config.mcp.servers.items() if server.enabled}
        settled = asyncio.Event()

        def check(_event: object = None) -> None:
            states = {s.name: s.state for s in mcp.statuses() if s.name in enabled}
            if all(state in ("ready", "failed") for state in states.values()):
                settled.set()

        unsubscribe = mcp.subscribe(check)
        try:
            mcp.start()
            check()
            bound = max(config.mcp.servers[name].start_timeout for name in enabled)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(bound + MCP_START_SLACK):
                    await self._unless_stopped(settled.wait())
        finally:
            unsubscribe()
        for status in mcp.statuses():
            if status.name in enabled and status.state != "ready" and status.reason:
                say(f"The MCP server {status.name} is not available: {status.reason}")

    async def _answer(self, session: Session) -> int:
        try:
            conversation = self.conversation = self._conversation()
        except UsageError as error:
            self._fail(str(error))
            return EXIT_USAGE
        except (sqlite3.Error, KeyError) as error:
            self._fail(f"The conversation could not be opened: {error}")
            return EXIT_FAILED
        # Its own model answers it, unless --provider or --model named one (then kept as its own).
        session.adopt_conversation_settings(conversation, model_named=self.model_named)
        if session.provider is None:
            if not self._stopped.is_set():
                self._fail(session.provider_problem())
            return self.stopper.code or EXIT_FAILED
        try:
            await self._unless_stopped(session.prepare())
        except ProviderError as error:
            self._fail(session.redact(str(error)))
            return EXIT_FAILED
        self._warn_of_unknown_tools()
        self._first_item = len(conversation.items)
        try:
            turn = self.turn = session.new_turn(conversation, self.prompt, observer=self)
        except NoProvider as problem:
            self._fail(str(problem))
            return EXIT_FAILED
        if self._stopped.is_set():
            turn.cancel()  # Stopped before it began: the prompt is stored, nothing is sent.
        provider = session.provider
        assert provider is not None  # Checked above: new_turn raises without one.
        self._emit({"type": "start", "conversation": conversation.id, **_who(provider)})
        outcome = await turn.run()
        self._report_unreported_results(conversation)
        self._finish_text()
        try:
            session.turn_finished(turn, outcome)
        except SessionError as error:
            say(str(error))
        return self._report(conversation, outcome)

    def _conversation(self) -> Conversation:
        """The conversation to answer in: the one asked for (claimed), or a new one."""
        store = self.store
        if self.conversation_id is None:
            return store.create_conversation()
        if not store.claim_conversation(self.conversation_id):
            raise UsageError(OPEN_ELSEWHERE)
        return store.load_conversation(self.conversation_id)

    def _warn_of_unknown_tools(self) -> None:
        known = set(self.registry.names) if self.registry is not None else set()
        for name in sorted(self.allowed - known):
            say(
                f"--allow-tool {one_line(name, 80)} names no tool; the tools are: "
                f"{', '.join(sorted(known)) or 'none'}."
            )

    def _report(self, conversation: Conversation, outcome: TurnOutcome) -> int:
        """Say how the turn ended (the end event, stderr); the exit code."""
        responses = outcome.responses
        last = responses[-1] if responses else None
        self._emit(
            {
                "type": "end",
                "state": outcome.state.value,
                "finish_reason": last.finish_reason if last is not None else None,
                "error": outcome.error,
                "usage": _usage(responses),
                "conversation": conversation.id,
            }
        )
        stopped = self.stopper.code
        if self._write_error is not None:
            say(f"The reply could not be written to stdout: {self._write_error.strerror}.")
        if outcome.state is ResponseState.COMPLETE:
            return EXIT_CLOSED if self.output.closed and stopped == EXIT_CLOSED else EXIT_COMPLETE
        if outcome.state is ResponseState.INTERRUPTED:
            if stopped in (EXIT_SIGINT, EXIT_SIGTERM):
                say(
                    "Stopped. What arrived is stored, marked interrupted."
                    if outcome.responses
                    else "Stopped before the request was sent; the prompt is stored."
                )
            return stopped if stopped is not None else EXIT_FAILED
        self._fail(outcome.error or "The reply failed.", emit=False)
        return EXIT_FAILED

    def _fail(self, text: str, *, emit: bool = True) -> None:
        """Say why the run failed: on stderr, and (--json) as the end event when there is none."""
        say(text)
        if emit:
            self._emit(
                {
                    "type": "end",
                    "state": "failed",
                    "finish_reason": None,
                    "error": text,
                    "usage": _usage([]),
                    "conversation": self.conversation_id,
                }
            )

    async def _close(self, session: Session) -> None:
        """Close the provider (the local model saves its cache) and the MCP servers, bounded."""
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                await asyncio.gather(session.close(), self._close_mcp())
        kill_mcp_servers()
        self._forget_if_empty()

    async def _close_mcp(self) -> None:
        if self.mcp is not None:
            await self.mcp.close(MCP_CLOSE_GRACE)

    def _forget_if_empty(self) -> None:
        """A new conversation left empty (its prompt refused, say) is not kept."""
        conversation = self.conversation
        if conversation is None or self.conversation_id is not None or conversation.items:
            return
        with contextlib.suppress(Exception):
            self.store.delete_conversation(conversation.id)

    # Output

    def _emit(self, event: dict[str, Any]) -> None:
        """One JSON line (--json only). ASCII only: whatever it holds, it is inert on a terminal."""
        if self.json_events:
            self.output.write(json.dumps(event, ensure_ascii=True) + "\n")

    def _text(self, text: str) -> None:
        self.output.write(visible(text))

    def _finish_text(self) -> None:
        """End the reply's last line, as a shell prompt expects."""
        if not self.json_events and self.output.written not in ("", "\n"):
            self.output.write("\n")

    # The turn's observer

    async def on_event(self, event: TurnEvent) -> None:
        payload = event.payload
        if isinstance(payload, TextDelta):
            if self.json_events:
                self._emit({"type": "text", "text": payload.text})
            else:
                self._text(payload.text)
        elif isinstance(payload, ThinkingDelta):
            self._emit({"type": "thinking", "text": payload.text})
        elif isinstance(payload, ResponseStarted):
            self._response_started(payload.response)
        elif isinstance(payload, ToolCallStart):
            self._call_started(payload.index)
        elif isinstance(payload, ToolCallEnd):
            call = self._calls.get(payload.index)
            if call is not None:
                self._emit(
                    {
                        "type": "tool_call",
                        "id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                    }
                )
        elif isinstance(payload, ToolResultAdded):
            self._tool_result(payload.result)

    def _response_started(self, response: ModelResponse) -> None:
        self._responses += 1
        self._current = response
        self._calls = {}
        if self._responses > 1 and not self.json_events and self.output.written:
            # A new paragraph for the next reply of the tool loop.
            self.output.write("\n\n" if self.output.written != "\n" else "\n")
            self.output.written = "\n"

    def _call_started(self, index: int) -> None:
        # The turn stores the call as the response's last part before it tells of it.
        calls = self._current.tool_calls if self._current is not None else []
        if calls:
            self._calls[index] = calls[-1]

    def _report_unreported_results(self, conversation: Conversation) -> None:
        """The results the turn stored without telling (the "cancelled" of calls a stop ended)."""
        for item in conversation.items[self._first_item :]:
            if isinstance(item, ToolResult) and item.id not in self._reported:
                self._tool_result(item)

    def _tool_result(self, result: ToolResult) -> None:
        self._reported.add(result.id)
        self._emit(
            {
                "type": "tool_result",
                "id": result.call_id,
                "name": result.name,
                "state": result.state,
                "content": result.content,
            }
        )
        if result.state == "denied":
            name = one_line(result.name, 80)
            say(f"{name} was denied: run with --allow-tool {name} to allow it.")

    async def approve(self, call: ToolCallPart) -> Approval:
        return Approval.ONCE if call.name in self.allowed else Approval.DENY

    async def stop_shown(self) -> None:
        return None


def _make_provider(config: Config) -> tuple[Provider | None, str | None]:
    """The configured provider, or the reason there is none (its SDK is imported here)."""
    try:
        return create_provider(config), None
    except ProviderError as error:
        return None, str(error)


def _who(provider: Provider) -> dict[str, str]:
    return {"provider": provider.name, "model": provider.model}


def _usage(responses: Sequence[ModelResponse]) -> dict[str, Any]:
    """The turn's usage: every request's tokens added up; estimated if any count was."""
    usages = [response.usage for response in responses] or [Usage()]
    return {
        "input_tokens": sum(u.input_tokens for u in usages),
        "output_tokens": sum(u.output_tokens for u in usages),
        "estimated": any(u.estimated for u in usages),
    }
