"""One MCP server: its session held open by one long-lived task, and its calls, stopped for real.

The SDK's session (and the transports under it) open anyio task groups and
cancel scopes, which must be left by the task that entered them. So each
start of a server runs in an owner task of its own: it opens the transport
(chatui's `StdioTransport`, or the SDK's Streamable HTTP client), makes the
handshake and lists the tools, all within `start_timeout`, then serves:
relists the tools when the server says they changed, notices when the
server goes away, and leaves (closing the session and the transport) when
asked to. Calls are made from other tasks, which the session allows.

The session is `mcp.Client(..., mode="auto")`: it probes `server/discover`
and speaks the 2026-07-28 protocol to a server that does, else falls back to
the `initialize` handshake. The stop is the same to the caller either way,
but goes out differently: over stdio, both eras send
`notifications/cancelled` with the call's request id; over Streamable HTTP,
a 2026 server sees the call's POST aborted, and a 2025 one gets the
notification POSTed. On 2026 connections the tool list's changes come
through a `subscriptions/listen` stream, which the owner task holds open.

A call (`McpServer.call`) runs its request in a child task and awaits it
shielded. When the caller is cancelled (Esc, a timeout, a quit), it cancels
the child, which makes the SDK send the cancellation, and re-raises at once:
the caller never waits for that write (the SDK may take up to 5 s for it on
a blocked pipe). When the child has finished, listeners hear `CancelSent`.
Whatever comes from the call after the stop (a late answer, progress) is
dropped. A server that dies fails its running calls with a sentence
(`McpCallError`) and is FAILED; its next use starts it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import copy_context
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp.client import Client
from mcp.client.session import IncomingMessage, MessageHandlerFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import Subscription
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from chatui import __version__
from chatui.cancel import current_token
from chatui.config import McpServerConfig
from chatui.mcp.events import CancelSent, McpEvent, StatusChanged
from chatui.mcp.logs import ServerLog, current_log
from chatui.mcp.status import ServerState, ServerStatus
from chatui.mcp.stdio import StartError, StdioTransport
from chatui.sanitize import one_line
from chatui.tools.protocol import ToolProgress

CLIENT_INFO = mcp_types.Implementation(name="chatui", version=__version__)
MAX_PAGES = 100  # Pages of tools/list read at most: a server that never stops paging is cut.
CALLS_GRACE = 0.5  # Seconds `close()` gives stopped calls to send their cancellation.
CLOSE_WAIT = 3.0  # Seconds `close()` waits for the session's end before it cuts it short.
RELIST_INTERVAL = 1.0  # Seconds at least between two listings of a server's tools.
LOST_WAIT = 3.0  # Seconds a call that lost its server waits to learn how the server ended.
HTTP_TIMEOUT = 30.0  # Seconds for an HTTP request to connect, send, or answer...
HTTP_READ_TIMEOUT = 300.0  # ...and between two events of a stream (a long call's).
MAX_ERROR = 500  # Characters of a server's error message kept in a sentence.
_AUTH_REFUSED = ("HTTP 401", "HTTP 403")  # Statuses that say the token or key is wrong.

logger = logging.getLogger("chatui.mcp")


class McpCallError(Exception):
    """A call that could not be made or did not finish; str() is a sentence for model and user."""


def _ignore_event(event: McpEvent) -> None:
    pass


def _ignore_listing(server: McpServer) -> None:
    pass


class McpServer:
    """One configured server: started in the background, restarted on use after a failure."""

    def __init__(
        self,
        config: McpServerConfig,
        log: ServerLog,
        *,
        environ: Mapping[str, str] | None = None,
        notify: Callable[[McpEvent], None] = _ignore_event,
        on_listing: Callable[[McpServer], None] = _ignore_listing,
    ) -> None:
        """`notify` hears its events; `on_listing` runs each time it has listed its tools."""
        self.name = config.name
        self.config = config
        self.log = log
        self._environ = environ
        self._notify = notify
        self._on_listing = on_listing
        self._state = ServerState.STOPPED
        self._reason = "" if config.enabled else "It is disabled in the config."
        self._listing: list[mcp_types.Tool] = []
        self._client: Client | None = None
        self._stdio: StdioTransport | None = None
        self._owner: asyncio.Task[None] | None = None
        self._attempt = asyncio.Event()  # Set once the current start ends, ready or not.
        self._ended = asyncio.Event()  # Set once the current owner task has ended.
        self._wake = asyncio.Event()  # The owner task has something to do.
        self._stopping = False
        self._retired = False  # Closed for good (chatui quits): nothing starts it again.
        self._relist = False  # It said its tools changed: list them again.
        self._relisting = False
        self._lost: str | None = None  # Why the connection ended, once it has.
        self._calls: set[asyncio.Task[mcp_types.CallToolResult]] = set()
        self._restarting: asyncio.Event | None = None  # Set once the restart under way is done.
        self._listed_at = -math.inf  # When its tools were last listed (the loop's clock).
        self._refused = ""  # HTTP: the last error status it answered ("HTTP 401 Unauthorized").

    @property
    def status(self) -> ServerStatus:
        return ServerStatus(
            self.name,
            self.config.transport,
            self._state,
            len(self._listing),
            self._reason,
            str(self.log.path),
        )

    @property
    def listing(self) -> list[mcp_types.Tool]:
        """Its tools as last listed (kept while it is failed or restarting)."""
        return self._listing

    @property
    def pid(self) -> int | None:
        """The process of a stdio server's current run (its process group's id), if any."""
        return self._stdio.pid if self._stdio is not None else None

    # Lifecycle

    def start(self) -> None:
        """Begin starting it in the background, unless it is starting or ready (or disabled)."""
        if self._retired or not self.config.enabled:
            return
        if self._owner is not None and not self._owner.done():
            return
        self._stopping, self._relist, self._relisting, self._lost = False, False, False, None
        self._refused = ""
        self._attempt, self._ended, self._wake = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._set(ServerState.STARTING, "")
        context = copy_context()
        context.run(current_log.set, self.log)  # The SDK's records in its tasks go to its log.
        self._owner = asyncio.create_task(
            self._own(self._attempt, self._ended, self._wake),
            name=f"mcp server {self.name}",
            context=context,
        )

    async def ready(self) -> None:
        """Start it if need be and wait until it is READY; McpCallError if it cannot start.

        A restart while it waits (the user's, from the list) is waited for:
        the new run is the one to use. Cancelling this wait (a stop) leaves
        the server starting.
        """
        if not self.config.enabled:
            raise McpCallError(f"The MCP server {self.name} is disabled in the config.")
        first = True
        while not self._usable:
            if self._restarting is not None:
                await self._restarting.wait()
            elif first or self._state is ServerState.STARTING:
                if self._state is not ServerState.STARTING:
                    self.start()
                await self._attempt.wait()
                if self._state is ServerState.FAILED:
                    raise McpCallError(
                        f"The MCP server {self.name} could not start. {self._reason}"
                    )
            else:
                raise McpCallError(f"The MCP server {self.name} was stopped.")
            first = False

    @property
    def _usable(self) -> bool:
        """READY, and not being closed: a call made now goes to this run."""
        ready = self._state is ServerState.READY and self._client is not None
        return ready and not self._stopping and self._restarting is None

    async def restart(self) -> None:
        """Close it (bounded), then start it again in the background."""
        restarting = self._restarting = asyncio.Event()
        try:
            await self.close()
            self.start()
        finally:
            restarting.set()
            if self._restarting is restarting:
                self._restarting = None

    async def close(self) -> None:
        """Stop its calls (each sends its cancellation), close the session, end the process.

        Bounded: a session that has not ended within `CLOSE_WAIT` s (an HTTP
        server that never answers the request ending it, say) is cut short.
        """
        owner = self._owner
        if owner is None or owner.done():
            if self._state is not ServerState.STOPPED and self.config.enabled:
                self._set(ServerState.STOPPED, "")
            return
        self._stopping = True
        calls = [call for call in self._calls if not call.done()]
        for call in calls:
            call.cancel()
        if calls:
            await asyncio.wait(calls, timeout=CALLS_GRACE)
        if self._state is ServerState.STARTING:
            owner.cancel()  # It is in the handshake, which no event interrupts.
        self._wake.set()
        if not (await asyncio.wait([owner], timeout=CLOSE_WAIT))[0]:
            owner.cancel()  # The process (if any) is still killed: that close is shielded.
            await asyncio.wait([owner], timeout=CLOSE_WAIT)

    def retire(self) -> None:
        """From now on nothing starts it again (chatui quits); `close()` it too."""
        self._retired = True

    def abandon(self) -> None:
        """Cancel its owner task without waiting (a quit past its grace; kill_now() follows)."""
        self._stopping = True
        if self._owner is not None:
            self._owner.cancel()

    # Calls

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        call_id: str,
        on_progress: Callable[[ToolProgress], None],
    ) -> mcp_types.CallToolResult:
        """Call `tool` (the server's own name) and return its result (see the module docstring).

        McpCallError for a call that could not be made or finish: the server
        would not start, died, refused the call, or sent something malformed.
        `on_progress` runs on the loop, outside the caller's task, and never
        after this returns or raises.
        """
        await self.ready()
        client = self._client
        if client is None:
            raise McpCallError(f"The MCP server {self.name} stopped before the call.")
        live = [True]

        async def report(progress: float, total: float | None, message: str | None) -> None:
            if live[0]:
                on_progress(ToolProgress(progress, total, message))

        context = copy_context()
        context.run(current_log.set, self.log)
        child = asyncio.create_task(self._request(client, tool, arguments, report), context=context)
        self._calls.add(child)
        child.add_done_callback(self._calls.discard)
        stopped = False

        def stop() -> None:
            """Cancel the request: the SDK sends the cancellation (or aborts the POST)."""
            nonlocal stopped
            if stopped or child.done():
                return
            stopped, live[0] = True, False
            child.cancel()
            child.add_done_callback(lambda done: self._cancel_sent(call_id, done))

        # The turn's stop cancels the request in the Esc's own handler, as the shell
        # tool kills its group there: a cancellation that went the tasks' way (the
        # turn's, the call's, the tool's, this one's) waited behind the stop's drawing
        # at each step, 25-40 ms in all (bench/mcp_cancel.py).
        token = current_token.get()
        forget = token.on_cancel(stop) if token is not None else None
        try:
            return await asyncio.shield(child)
        except asyncio.CancelledError:
            live[0] = False
            this = asyncio.current_task()
            if stopped:
                raise  # The turn's stop.
            if child.cancelled() and this is not None and not this.cancelling():
                # Not our caller's stop: `close()` stopped the call.
                raise McpCallError(
                    f"The MCP server {self.name} was stopped during the call."
                ) from None
            if child.done():
                raise  # It had finished: its answer is dropped; there is nothing to cancel.
            stop()  # The caller was cancelled another way (a timeout, the app quitting).
            raise
        finally:
            live[0] = False
            if forget is not None:
                forget()

    def _cancel_sent(self, call_id: str, child: asyncio.Task[mcp_types.CallToolResult]) -> None:
        if not child.cancelled():
            child.exception()  # Retrieved: an error after the stop is nobody's.
            return
        self._notify(CancelSent(call_id, self.name))

    async def _request(
        self,
        client: Client,
        tool: str,
        arguments: dict[str, Any],
        progress: ProgressFnT,
    ) -> mcp_types.CallToolResult:
        """The call itself, its failures made sentences."""
        try:
            return await client.call_tool(tool, arguments, progress_callback=progress)
        except MCPError as error:
            if error.code == mcp_types.CONNECTION_CLOSED:
                raise McpCallError(await self._stopped_during_call()) from None
            raise McpCallError(
                _sentence(
                    f"The MCP server {self.name} answered the call with an error: "
                    f"{self._safe(error.message)}"
                )
            ) from None
        except ValidationError:
            raise McpCallError(
                f"The MCP server {self.name} sent a malformed result for {self._safe(tool)}."
            ) from None
        except RuntimeError as error:  # The SDK's check of the result against outputSchema.
            raise McpCallError(
                _sentence(
                    f"The MCP server {self.name} sent a result that breaks {self._safe(tool)}'s "
                    f"output schema: {self._safe(str(error))}"
                )
            ) from None
        except _CONNECTION_ERRORS:
            self._connection_lost("chatui lost its connection to it.")
            raise McpCallError(await self._stopped_during_call()) from None

    async def _stopped_during_call(self) -> str:
        """The sentence for a call whose server went away: how it ended, once known."""
        if self.config.transport == "http":
            self._connection_lost("It closed the connection.")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOST_WAIT):
                await asyncio.shield(self._ended.wait())
        reason = self._reason if self._state is ServerState.FAILED else "It closed the connection."
        return (
            f"The MCP server {self.name} stopped during the call. {reason} "
            "It will be started again on its next use."
        )

    def _connection_lost(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._wake.set()

    # The owner task

    async def _own(self, attempt: asyncio.Event, ended: asyncio.Event, wake: asyncio.Event) -> None:
        self.log.begin(f"starting {self.name}")
        reason = ""
        try:
            transport = self._transport()
            client = Client(
                transport,
                mode="auto",
                message_handler=self._message_handler(wake),
                client_info=CLIENT_INFO,
                cache=None,
            )
            with anyio.move_on_after(self.config.start_timeout) as starting:
                async with client, contextlib.AsyncExitStack() as stack:
                    self._connected(client)
                    # Subscribed before the listing, so that no change falls between the two.
                    subscription = await self._subscribe(client, stack)
                    listing = await self._list_tools(client)
                    starting.deadline = math.inf
                    self._client = client
                    self._publish(listing)
                    attempt.set()
                    reason = await self._serve(wake, subscription)
            if starting.cancelled_caught:
                reason = (
                    f"It did not finish starting within {self.config.start_timeout:g} s "
                    "(the handshake or the tools' list)."
                )
        except Exception as error:
            reason = reason or self._failure(error, started=attempt.is_set())
            self.log.line(f"ended: {reason}")
        finally:
            self._client = None
            if self._stopping:
                self._set(ServerState.STOPPED, "")
            else:
                self._set(ServerState.FAILED, reason or "It stopped.")
            attempt.set()
            ended.set()

    def _transport(self) -> Any:
        if self.config.transport == "http":
            self._stdio = None
            return _http_transport(self.config, self._answered)
        self._stdio = StdioTransport(self.config, self.log, self._environ)
        return self._stdio

    async def _answered(self, response: httpx2.Response) -> None:
        """Each HTTP response: the error status of a message's POST is kept and logged.

        The SDK's error says only that there was one. A GET or a DELETE that
        a server does not offer (405) is no news.
        """
        if response.status_code >= 400 and response.request.method == "POST":
            self._refused = f"HTTP {response.status_code} {response.reason_phrase}".strip()
            self.log.line(f"{response.request.method} answered {self._refused}")

    def _message_handler(self, wake: asyncio.Event) -> MessageHandlerFnT:
        async def handle(message: IncomingMessage) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                self._relist = True
                wake.set()
            elif isinstance(message, Exception):
                self.log.line(f"from the connection: {type(message).__name__}: {message}")

        return handle

    async def _serve(self, wake: asyncio.Event, subscription: Subscription | None) -> str:
        """Until asked to stop (returns "") or the server goes away (returns why)."""
        async with anyio.create_task_group() as group:
            if subscription is not None:
                group.start_soon(self._follow, subscription, wake)
            if self._stdio is not None:
                group.start_soon(self._watch_process, self._stdio)
            try:
                while True:
                    await wake.wait()
                    wake.clear()
                    if self._stopping:
                        return ""
                    if self._lost is not None:
                        return self._lost
                    if self._relist and not self._relisting and self._client is not None:
                        self._relisting = True  # In a task: a stop never waits for it.
                        group.start_soon(self._relist_tools, self._client)
            finally:
                group.cancel_scope.cancel()
        return ""  # Not reached: the loop returns.

    async def _watch_process(self, stdio: StdioTransport) -> None:
        await stdio.lost.wait()
        self._connection_lost(await stdio.ending())

    async def _subscribe(
        self, client: Client, stack: contextlib.AsyncExitStack
    ) -> Subscription | None:
        """A 2026 server tells its tool list's changes to a `subscriptions/listen` stream."""
        if not _listens(client):
            return None
        try:
            return await stack.enter_async_context(client.listen(tools_list_changed=True))
        except Exception as error:
            self.log.line(f"no news of its tool list: {type(error).__name__}: {error}")
            return None

    async def _follow(self, subscription: Subscription, wake: asyncio.Event) -> None:
        try:
            async for _event in subscription:
                self._relist = True
                wake.set()
        except Exception as error:
            self.log.line(f"no more news of its tool list: {type(error).__name__}: {error}")

    async def _list_tools(self, client: Client) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _page in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def _relist_tools(self, client: Client) -> None:
        """List its tools again, as long as it says they changed (within `start_timeout` each).

        At most once each `RELIST_INTERVAL`: a server that says so without
        end (after each listing, say) costs a listing a second, not the loop.
        """
        try:
            while self._relist:
                loop = asyncio.get_running_loop()
                await asyncio.sleep(self._listed_at + RELIST_INTERVAL - loop.time())
                self._relist = False
                try:
                    with anyio.fail_after(self.config.start_timeout):
                        listing = await self._list_tools(client)
                except Exception as error:  # Its tools stay as they were.
                    self.log.line(
                        f"could not list its tools again: {type(error).__name__}: {error}"
                    )
                    return
                self._publish(listing)
        finally:
            self._relisting = False

    def _connected(self, client: Client) -> None:
        info = client.server_info
        who = " ".join(filter(None, (info.name, info.version))) if info is not None else ""
        self.log.line(
            f"connected to {who or 'a server with no name'}, protocol {client.protocol_version}"
        )

    def _publish(self, listing: list[mcp_types.Tool]) -> None:
        self._listed_at = asyncio.get_running_loop().time()
        self._listing = listing
        self._on_listing(self)
        self.log.line(f"listed {len(listing)} tools")
        self._set(ServerState.READY, "", always=True)

    def _set(self, state: ServerState, reason: str, *, always: bool = False) -> None:
        changed = (state, reason) != (self._state, self._reason)
        self._state, self._reason = state, reason
        if changed or always:
            self._notify(StatusChanged(self.status))

    def _failure(self, error: BaseException, *, started: bool) -> str:
        """Why a start (or a run, once `started`) failed, as a sentence.

        A server's refusal is said before its exit code: a server that
        refused the handshake has exited by now too, at chatui's close.
        A connection lost after the start reads the same whichever task
        learnt of it first: the call's or the SDK's transport.
        """
        leaf = _leaf(error)
        stdio = self._stdio
        if started and stdio is None and isinstance(leaf, _CONNECTION_ERRORS):
            return "It closed the connection."
        if isinstance(leaf, StartError):
            return str(leaf)
        if isinstance(leaf, MCPError) and leaf.code != mcp_types.CONNECTION_CLOSED:
            said = self._safe(leaf.message)
            if not self._refused:
                return _sentence(f"It refused the handshake: {said}")
            refused = self._safe(self._refused)
            if refused.startswith(_AUTH_REFUSED):
                refused += " (check the token or key in its headers)"
            return _sentence(f"It refused the handshake with {refused}: {said}")
        if stdio is not None and stdio.returncode is not None:
            return stdio.ended_saying
        if isinstance(leaf, MCPError):
            return "It closed the connection while starting."
        if isinstance(leaf, httpx2.HTTPError | OSError):
            where = self._safe(_address(self.config.url))
            return _sentence(f"chatui could not reach it at {where}: {self._safe(str(leaf))}")
        return _sentence(f"It could not be started: {type(leaf).__name__}: {self._safe(str(leaf))}")

    def _safe(self, text: str) -> str:
        """Untrusted text for a sentence: keys masked, one line, control characters visible, cut."""
        return one_line(self.log.redact(text), MAX_ERROR)


_CONNECTION_ERRORS = (
    httpx2.HTTPError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
)


def _address(url: str) -> str:
    """`url` without its user, password and query, where keys are put.

    A key in its path is masked by the log's redactor, which knows the
    path's random-looking segments.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # An IPv6 address.
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _sentence(text: str) -> str:
    """`text` ending as a sentence does."""
    return text if text.endswith((".", "!", "?", "…")) else text + "."


def _listens(client: Client) -> bool:
    tools = client.server_capabilities.tools
    return (
        client.protocol_version in MODERN_PROTOCOL_VERSIONS
        and tools is not None
        and bool(tools.list_changed)
    )


def _leaf(error: BaseException) -> BaseException:
    """The first exception in `error` that is not a group (the SDK's task groups nest them)."""
    while isinstance(error, BaseExceptionGroup):
        error = next(
            (e for e in error.exceptions if not isinstance(e, asyncio.CancelledError)),
            error.exceptions[0],
        )
    return error


@asynccontextmanager
async def _http_transport(
    config: McpServerConfig, answered: Callable[[httpx2.Response], Awaitable[None]]
) -> AsyncIterator[Any]:
    """The SDK's Streamable HTTP transport, with the config's headers on every request.

    `answered` hears each response (its status; its body is not read).
    """
    timeout = httpx2.Timeout(HTTP_TIMEOUT, read=HTTP_READ_TIMEOUT)
    hooks = {"response": [answered]}
    async with (
        httpx2.AsyncClient(headers=config.headers, timeout=timeout, event_hooks=hooks) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams
